"""scripts/weights_ab.py's flagger options (the A/B of one file under two settings)."""

from __future__ import annotations

import pytest

from blendflag.errors import BlendflagError
from tests.conftest import script_module


@pytest.fixture(scope="module")
def ab():
    return script_module("weights_ab")


def test_options_parse_to_yaml_values(ab):
    assert ab.parse_options("count_rule=argmax, views=2") == {"count_rule": "argmax", "views": 2}
    assert ab.parse_options(None) == {} == ab.parse_options("")
    for bad in ("count_rule", "=2"):
        with pytest.raises(BlendflagError, match="is not KEY=VALUE"):
            ab.parse_options(bad)
