"""`blendflag-shear bench` runs and reports positive rates (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_bench_quick(tmp_path, capsys):
    out = tmp_path / "b.json"
    code, stdout, err = run_cli(
        ["bench", "--quick", "--only", "simulation,detection,shear", "--json", out], capsys
    )
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["cores"] >= 1
    stages = {row["stage"]: row for row in data["rows"]}
    assert any(s.startswith("simulate") for s in stages)
    assert any(s.startswith("detect (sep)") for s in stages)
    assert any("metacal" in s for s in stages)
    for row in data["rows"]:
        rate = row.get("objects_per_s") or row.get("stamps_per_s")
        assert rate is not None and rate > 0, row
    assert "objects/s" in stdout


def test_bench_unknown_part(capsys):
    code, _, err = run_cli(["bench", "--only", "warp"], capsys)
    assert code == 2 and "unknown bench part 'warp'" in err
