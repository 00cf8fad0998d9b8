"""The plugin manager: entry points, blocking, misspelt hooks, origins."""

from __future__ import annotations

import json
import sys
import types

import pytest

from blendflag import hookimpl, hookspecs
from blendflag.errors import PluginError
from blendflag.plugins import (
    describe_plugins,
    get_flaggers,
    get_plugin_manager,
    registered_classes,
    resolve_names,
)
from tests.conftest import run_cli

BUILTINS = {"sep_detect", "sextractor", "flag_stage", "vgg16"}


def test_builtins_come_from_entry_points():
    pm = get_plugin_manager()
    infos = {i.name: i for i in describe_plugins(pm)}
    assert BUILTINS <= set(infos)
    for name in BUILTINS:
        assert infos[name].origin == "built-in"
        assert infos[name].distribution == "blendflag"
    assert "blendflag_detect" in infos["sep_detect"].hooks
    assert "blendflag_register_flaggers" in infos["sextractor"].hooks


def test_fresh_manager_each_call():
    pm1, pm2 = get_plugin_manager(), get_plugin_manager()
    assert pm1 is not pm2
    pm1.unregister(name="sextractor")
    assert "sextractor" in get_flaggers(pm2)
    assert "sextractor" not in get_flaggers(pm1)


def test_disable_env_blocks_named_plugins(monkeypatch):
    monkeypatch.setenv("BLENDFLAG_DISABLE_PLUGINS", "sextractor, vgg16")
    pm = get_plugin_manager()
    names = {i.name for i in describe_plugins(pm)}
    assert "sextractor" not in names and "vgg16" not in names
    assert "sep_detect" in names
    assert get_flaggers(pm) == {}


def test_misspelt_hook_fails_loudly():
    plugin = types.ModuleType("typo_plugin")

    @hookimpl
    def blendflag_detekt(image, weight, config):  # misspelt on purpose
        return None

    plugin.blendflag_detekt = blendflag_detekt
    with pytest.raises(PluginError, match="blendflag_detekt"):
        get_plugin_manager(extra_plugins=[("typo", plugin)], load_entry_points=False)


def test_misspelt_undecorated_hook_also_fails():
    plugin = types.ModuleType("typo_plugin2")

    def blendflag_register_flagers():  # undecorated and misspelt
        return []

    plugin.blendflag_register_flagers = blendflag_register_flagers
    with pytest.raises(PluginError, match="blendflag_register_flagers"):
        get_plugin_manager(extra_plugins=[("typo2", plugin)], load_entry_points=False)


def test_duplicate_flagger_names_rejected():
    a = type("A", (), {"name": "x"})
    b = type("B", (), {"name": "x"})
    with pytest.raises(PluginError, match="two plugins"):
        registered_classes([[a], [b]], "flagger")


def test_unknown_name_lists_registered():
    with pytest.raises(PluginError, match=r"unknown flagger 'nope' \(registered: a, b\)"):
        resolve_names("a,nope", {"a": object, "b": object}, "flagger")


def test_plugins_command_json(capsys):
    code, out, err = run_cli(["plugins", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert BUILTINS <= set(by_name)
    assert by_name["sep_detect"]["origin"] == "built-in"
    assert by_name["sep_detect"]["hooks"] == ["blendflag_detect"]
    assert "sextractor" in data["flaggers"] and "vgg16" in data["flaggers"]


def test_plugins_command_table(capsys):
    code, out, _ = run_cli(["plugins"], capsys)
    assert code == 0
    assert "sep_detect" in out and "built-in" in out and "flaggers:" in out


def test_third_party_origin_is_entry_point(third_party_plugin):
    pm = get_plugin_manager()
    info = {i.name: i for i in describe_plugins(pm)}["neighbours"]
    assert info.origin == "entry point"
    assert info.distribution == "blendflag-neighbours"
    assert set(info.hooks) == {"blendflag_pipeline_stages", "blendflag_annotate_catalogue",
                               "blendflag_register_commands"}


def test_hookspecs_module_holds_only_markers_and_specs():
    public = {n for n in dir(hookspecs) if not n.startswith("_")}
    specs = {n for n in public if n.startswith("blendflag_")}
    assert public - specs == {"hookspec", "hookimpl", "pluggy"}
    assert len(specs) == 6
    assert "blendflag_detect" in sys.modules["blendflag.hookspecs"].__dict__
