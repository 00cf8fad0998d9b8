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

BUILTINS = {
    "sep_detect",
    "sextractor",
    "sextractor_binary",
    "flag_stage",
    "vgg16",
    "oneclass",
    "siamese",
    "metacal_galsim",
    "ngmix_engine",
}


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
    assert "sextractor" not in get_flaggers(pm) and "vgg16" not in get_flaggers(pm)


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
    assert set(info.hooks) == {
        "blendflag_pipeline_stages",
        "blendflag_annotate_catalogue",
        "blendflag_register_commands",
    }


def test_hookspecs_module_holds_only_markers_and_specs():
    public = {n for n in dir(hookspecs) if not n.startswith("_")}
    specs = {n for n in public if n.startswith("blendflag_")}
    assert public - specs == {"hookspec", "hookimpl", "pluggy"}
    assert len(specs) == 6
    assert "blendflag_detect" in sys.modules["blendflag.hookspecs"].__dict__


def test_blendflag_detect_first_result_wins(small_field):
    """A third-party detector answering for its own backend wins; others fall back to sep."""
    import numpy as np
    from astropy.table import Table

    from blendflag.config import DetectConfig
    from blendflag.images import read_image

    plugin = types.ModuleType("fake_detector")
    calls = []

    @hookimpl
    def blendflag_detect(image, weight, config):
        calls.append(config.backend)
        if config.backend != "fake":
            return None
        return Table({"NUMBER": [1], "X_IMAGE": [1.0], "Y_IMAGE": [1.0], "FLAGS": [0]})

    plugin.blendflag_detect = blendflag_detect
    pm = get_plugin_manager(extra_plugins=[("fake", plugin)])
    image, _ = read_image(small_field["image"])
    fake = pm.hook.blendflag_detect(image=image, weight=None, config=DetectConfig(backend="fake"))
    assert len(fake) == 1
    real = pm.hook.blendflag_detect(image=image, weight=None, config=DetectConfig())
    assert len(real) > 10 and np.all(real["X_IMAGE"] >= 1)
    assert calls == ["fake", "sep"]


def test_register_flaggers_hook_adds_a_flagger(detected, capsys):
    """A flagger registered by a plugin runs in `flag` like a built-in one."""
    import numpy as np

    from blendflag.cli import build_parser
    from blendflag.flaggers import Flagger, FlagResult

    class Brightest(Flagger):
        name = "brightest"

        def flag_stamps(self, stamps):
            peak = stamps.reshape(len(stamps), -1).max(axis=1)
            return FlagResult(flag=peak > np.median(peak), probability=peak / peak.max())

    plugin = types.ModuleType("brightest")

    @hookimpl
    def blendflag_register_flaggers():
        return [Brightest]

    plugin.blendflag_register_flaggers = blendflag_register_flaggers
    pm = get_plugin_manager(extra_plugins=[("brightest", plugin)])
    assert "brightest" in get_flaggers(pm)
    out = detected["tmp"] / "b.fits"
    args = build_parser(pm).parse_args(
        [
            "flag",
            str(detected["catalogue"]),
            "--image",
            str(detected["image"]),
            "--flaggers",
            "brightest",
            "--out",
            str(out),
        ]
    )
    assert args.func(args, pm) == 0
    from blendflag.catalog import read_catalogue

    cat = read_catalogue(out)
    assert cat.column("BLEND_BRIGHTEST").sum() == len(cat) // 2
    assert cat.column("P_BLEND_BRIGHTEST").max() == 1.0


@pytest.mark.parametrize("reference", [None, 14.0])
def test_every_flaggers_header_cards_fit_a_fits_card(reference):
    """Provenance cards are written into catalogue headers: each must fit in 80
    characters without astropy truncating its comment (a warning the CLI turns
    into an error), whatever the flagger's options."""
    import warnings

    from astropy.io import fits

    from blendflag.config import load_pipeline_config
    from blendflag.flaggers import make_flaggers

    pm = get_plugin_manager()
    names = sorted(get_flaggers(pm))
    options = {n: {"reference_noise": reference} for n in names} if reference else None
    for flagger in make_flaggers(pm, names, load_pipeline_config(None), options):
        header = fits.Header()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for key, value, comment in flagger.provenance():
                header[key] = (value, comment)
            header.tostring()
        assert all(len(card.image) == 80 for card in header.cards)
