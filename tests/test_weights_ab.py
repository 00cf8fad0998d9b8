"""scripts/weights_ab.py's flagger options (the A/B of one file under two settings)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from blendflag.errors import BlendflagError

SCRIPT = Path(__file__).parents[1] / "scripts" / "weights_ab.py"


@pytest.fixture(scope="module")
def ab():
    spec = importlib.util.spec_from_file_location("weights_ab", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_options_parse_to_yaml_values(ab):
    assert ab.parse_options("count_rule=argmax, views=2") == {"count_rule": "argmax", "views": 2}
    assert ab.parse_options(None) == {} == ab.parse_options("")
    for bad in ("count_rule", "=2"):
        with pytest.raises(BlendflagError, match="is not KEY=VALUE"):
            ab.parse_options(bad)
