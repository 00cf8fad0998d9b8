"""Every hook is specified with a numpydoc docstring, documented in the README,
and called by the code path that must call it (datasette's test_plugins /
test_docs pattern, made to fail when a call is removed).

A recording plugin, installed through a real ``blendflag`` entry point like any
third-party plugin, implements every hook and notes each call; one test per
hook runs the command that must call that hook and checks the note.
"""

from __future__ import annotations

import inspect
import sys
import types
from pathlib import Path

import pytest

from blendflag import hookimpl, hookspecs
from blendflag.errors import PluginError
from blendflag.plugins import get_plugin_manager
from tests.conftest import install_entry_point_plugin, run_cli

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("blendflag_"))

RECORDER = "blendflag_recorder"


def recorder_source(hooks):
    """Source of a plugin implementing ``hooks``: each call is noted in ``CALLS``.

    Every implementation runs first (``tryfirst``) and changes nothing: it returns
    an empty list from a ``register`` hook and None otherwise, so for
    ``blendflag_detect`` (first non-None result wins) the detectors still answer.
    """
    lines = ["from blendflag import hookimpl", "", "CALLS = []", ""]
    for hook in hooks:
        params = list(inspect.signature(getattr(hookspecs, hook)).parameters)
        empty = "[]" if hook.startswith("blendflag_register_") else "None"
        kwargs = ", ".join(f"{p!r}: {p}" for p in params)
        lines += [
            "",
            "@hookimpl(tryfirst=True)",
            f"def {hook}({', '.join(params)}):",
            f"    CALLS.append(({hook!r}, {{{kwargs}}}))",
            f"    return {empty}",
            "",
        ]
    return "\n".join(lines)


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    """The recording plugin, found by every plugin manager built during the test."""
    site = tmp_path / "recorder_site"
    site.mkdir()
    install_entry_point_plugin(site, RECORDER, recorder_source(HOOKS), "recorder")
    monkeypatch.syspath_prepend(str(site))
    import importlib

    module = importlib.import_module(RECORDER)
    assert "recorder" in dict(get_plugin_manager().list_name_plugin())
    module.CALLS.clear()
    yield module.CALLS
    sys.modules.pop(RECORDER, None)


def _called(calls, hook):
    """The keyword arguments of every call of ``hook`` noted by the recorder."""
    return [kwargs for name, kwargs in calls if name == hook]


# --- one code path per hook: the command that must call it ---------------------------
# Each check clears the notes, runs one command in-process and asserts the hook was
# called with what that command holds; removing the call makes the check fail.


def _run_flag(detected, capsys):
    out = detected["tmp"] / "flagged.fits"
    args = ["flag", detected["catalogue"], "--image", detected["image"]]
    code, _, err = run_cli([*args, "--flaggers", "sextractor", "--out", out], capsys)
    assert code == 0, err


def check_pipeline_stages(calls, detected, tmp_path, capsys):
    _run_flag(detected, capsys)
    seen = _called(calls, "blendflag_pipeline_stages")
    assert seen and "cutout" in seen[0]["stages"].names()


def check_detect(calls, detected, tmp_path, capsys):
    out = tmp_path / "again.fits"
    code, _, err = run_cli(["detect", detected["image"], "--out", out], capsys)
    assert code == 0, err
    seen = _called(calls, "blendflag_detect")
    assert len(seen) == 1 and seen[0]["image"].shape == (256, 256)


def check_register_flaggers(calls, detected, tmp_path, capsys):
    _run_flag(detected, capsys)
    assert _called(calls, "blendflag_register_flaggers")


def check_register_shear_engines(calls, detected, tmp_path, capsys):
    out = tmp_path / "x.json"
    args = ["compare", "--engine", "no-such-engine", "--n-galaxies", "40", "--json", out]
    code, _, err = run_cli([*args, "--quiet"], capsys)
    assert code == 2 and "no-such-engine" in err  # the registry was asked, and said no
    assert _called(calls, "blendflag_register_shear_engines")


def check_annotate_catalogue(calls, detected, tmp_path, capsys):
    _run_flag(detected, capsys)
    seen = _called(calls, "blendflag_annotate_catalogue")
    assert seen and len(seen[0]["table"]) >= 14  # the whole objects table


def check_register_commands(calls, detected, tmp_path, capsys):
    code, out, _ = run_cli([], capsys)  # no command: builds the parser, prints its help
    assert code == 0 and "usage: blendflag-shear" in out
    assert _called(calls, "blendflag_register_commands")


def check_register_detectors(calls, detected, tmp_path, capsys):
    # --backend's choices are the registered detectors: argparse refuses the rest
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["detect", detected["image"], "--backend", "no-such-detector"], capsys)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no-such-detector" in err
    assert _called(calls, "blendflag_register_detectors")


HOOK_CHECKS = {
    "blendflag_pipeline_stages": check_pipeline_stages,
    "blendflag_detect": check_detect,
    "blendflag_register_flaggers": check_register_flaggers,
    "blendflag_register_shear_engines": check_register_shear_engines,
    "blendflag_annotate_catalogue": check_annotate_catalogue,
    "blendflag_register_commands": check_register_commands,
    "blendflag_register_detectors": check_register_detectors,
}

MANAGER_HOOKS = sorted(h for h in dir(get_plugin_manager().hook) if h.startswith("blendflag_"))


@pytest.mark.parametrize("hook", MANAGER_HOOKS)
def test_hook_is_called_where_it_must_be(hook, recorder, detected, tmp_path, capsys):
    assert hook in HOOK_CHECKS, f"no test runs the code path that must call {hook}"
    recorder.clear()
    HOOK_CHECKS[hook](recorder, detected, tmp_path, capsys)


def test_every_spec_reaches_the_manager():
    assert MANAGER_HOOKS == HOOKS


# --- the plugin manager rejects hooks that do not exist ------------------------------


def _module(hook_name, decorated):
    module = types.ModuleType("blendflag_misspelt")

    def impl():
        return []

    impl.__name__ = hook_name
    setattr(module, hook_name, hookimpl(impl) if decorated else impl)
    return module


@pytest.mark.parametrize("decorated", [True, False])
def test_misspelt_hook_is_rejected(decorated):
    bad = _module("blendflag_register_flagers", decorated)  # one "g" short
    with pytest.raises(PluginError, match="blendflag_register_flagers"):
        get_plugin_manager(extra_plugins=[("misspelt", bad)], load_entry_points=False)


@pytest.mark.parametrize("decorated", [True, False])
def test_correctly_spelt_hook_is_accepted(decorated):
    good = _module("blendflag_register_flaggers", decorated)
    pm = get_plugin_manager(extra_plugins=[("spelt", good)], load_entry_points=False)
    assert pm.get_plugin("spelt") is good


# --- documentation --------------------------------------------------------------------


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_numpydoc(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and "Returns" in doc
    params = inspect.signature(getattr(hookspecs, hook)).parameters
    if params:
        assert "Parameters" in doc
        for name in params:
            assert name in doc


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_documented_in_readme(hook):
    assert f"`{hook}" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_implemented_by_a_builtin_or_example(hook):
    pm = get_plugin_manager()
    example = (ROOT / "tests" / "example_plugin" / "blendflag_neighbours.py").read_text()
    assert getattr(pm.hook, hook).get_hookimpls() or hook in example
