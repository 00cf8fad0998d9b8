"""Every hook is specified with a numpydoc docstring, documented in the README,
and exercised by a test (datasette's test_plugins / test_docs pattern)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from blendflag import hookspecs
from blendflag.plugins import get_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("blendflag_"))


def test_every_spec_is_registered():
    pm = get_plugin_manager()
    assert sorted(n for n in dir(pm.hook) if n.startswith("blendflag_")) == HOOKS


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
def test_hook_exercised_by_a_test(hook):
    here = Path(__file__).name
    sources = [p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.name != here]
    assert any(hook in s for s in sources), f"no test uses {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_implemented_by_a_builtin_or_example(hook):
    pm = get_plugin_manager()
    example = (ROOT / "tests" / "example_plugin" / "blendflag_neighbours.py").read_text()
    assert getattr(pm.hook, hook).get_hookimpls() or hook in example
