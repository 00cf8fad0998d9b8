"""Two measurements of the same fields, paired (scripts/fields_paired_difference.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blendflag.shear.paired import SumsFile, UnitSums
from tests.conftest import script_module

SHEAR, STEP = 0.02, 0.01


@pytest.fixture(scope="module")
def script():
    return script_module("fields_paired_difference")


def _stamp_sums(e1: float, r11: float = 1.0) -> np.ndarray:
    """One unit of the ``stamps`` layout: one object, R11 = ``r11``, R22 = 1, no R_S."""
    sums = np.zeros((1, 15))
    sums[0, [0, 7, 9, 11, 13]] = 1.0
    sums[0, 1] = e1
    sums[0, 3], sums[0, 4] = r11 * STEP, -r11 * STEP
    sums[0, 5], sums[0, 6] = STEP, -STEP
    return sums


def _write_tiles(directory, m: float, spread, seeds=range(100, 112), response=None):
    """A tiles directory: per field a +g and a -g file whose m is ``m + spread[field]``.

    ``response`` (per field; default 1) scales R11 and leaves the shapes as they are.
    """
    directory.mkdir()
    response = np.ones(len(seeds)) if response is None else response
    for i, seed in enumerate(seeds):
        for sign, suffix in ((1, "plus"), (-1, "minus")):
            e1 = sign * SHEAR * (1 + m + spread[i])
            unit = UnitSums(np.array([0]), _stamp_sums(e1, response[i]), 1, sign)
            stored = SumsFile(
                {"all": unit}, {}, "h", sign, f"lsst_y10:{seed}:900", (sign * SHEAR, 0.0), STEP,
                "metacal", "stamps",
            )  # fmt: skip
            stored.save(directory / f"{2 * i:05d}_{suffix}.sums.npz")


@pytest.fixture
def work(tmp_path):
    """Two measurements of 12 fields: m = -0.01 and +0.03, the same field-to-field scatter."""
    spread = np.random.default_rng(5).normal(0.0, 0.05, 12)
    _write_tiles(tmp_path / "tiles_metacal", -0.01, spread)
    _write_tiles(tmp_path / "tiles_metadetect", 0.03, spread)
    return tmp_path


def test_the_difference_cancels_what_both_share(script, work, capsys):
    out = work / "d.json"
    assert script.main([str(work), "--seed", "100", "--fields", "12", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    spread = np.random.default_rng(5).normal(0.0, 0.05, 12)
    assert doc["base"]["m"] == pytest.approx(-0.01 + spread.mean(), abs=1e-12)
    assert doc["other"]["m"] == pytest.approx(0.03 + spread.mean(), abs=1e-12)
    diff = doc["other_minus_base"]
    assert diff["dm"] == pytest.approx(0.04, abs=1e-12)
    assert diff["dm_err"] < 1e-9  # the fields' scatter is common to both: paired away
    assert diff["unpaired_err"] == pytest.approx(
        np.hypot(doc["base"]["m_err"], doc["other"]["m_err"])
    )
    assert diff["unpaired_err"] > 0.01  # each alone carries the scatter (0.05 / sqrt 12)
    assert doc["unit"].startswith("one ±g field") and doc["draws"] == 500
    assert doc["seeds"] == [100, 111] and doc["true_shear"] == SHEAR
    assert "provenance" in doc
    assert "+0.0400" in capsys.readouterr().out
    for label in ("base", "other"):  # every field's scatter is in its shapes, none in R
        spread_doc = doc[label]["per_field"]
        assert spread_doc["m_sd"] == pytest.approx(np.std(spread, ddof=1))
        assert spread_doc["m_sd_shape"] == pytest.approx(np.std(spread, ddof=1))
        assert spread_doc["m_sd_response"] == pytest.approx(0.0, abs=1e-12)
        assert spread_doc["R11_mean"] == pytest.approx(1.0) and spread_doc["R11_sd"] < 1e-12


def test_a_scatter_of_the_response_is_told_apart_from_one_of_the_shapes(script, tmp_path):
    response = np.random.default_rng(6).uniform(0.8, 1.2, 12)
    _write_tiles(tmp_path / "tiles_metacal", 0.0, np.zeros(12))
    _write_tiles(tmp_path / "tiles_metadetect", 0.0, np.zeros(12), response=response)
    out = tmp_path / "d.json"
    assert script.main([str(tmp_path), "--fields", "12", "--json", str(out)]) == 0
    spread = json.loads(out.read_text())["other"]["per_field"]
    assert spread["m_sd_shape"] == pytest.approx(0.0, abs=1e-12)
    assert spread["m_sd_response"] == pytest.approx(np.std(response, ddof=1) / response.mean() ** 2)
    assert spread["m_sd"] == pytest.approx(spread["m_sd_response"])
    assert spread["R11_sd"] == pytest.approx(np.std(response, ddof=1))


def test_only_the_named_seeds_are_read(script, work):
    """The other set's fields 112 and 113 are left out, not an error."""
    out = work / "d.json"
    _write_tiles(work / "tiles_other", 0.5, np.zeros(14), seeds=range(100, 114))
    argv = [str(work), "--seed", "100", "--fields", "12", "--other", "tiles_other", "--json"]
    assert script.main([*argv, str(out)]) == 0
    assert json.loads(out.read_text())["other"]["m"] == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--other", "tiles_none:all"], "no such tiles directory"),
        (["--other", "tiles_metadetect:no_true_blends"], "no selection"),
        (["--other", "a/b"], "tiles directory name"),
        (["--fields", "13"], "seeds [112]"),
        (["--fields", "9"], "at least 10"),
    ],
)
def test_bad_input_is_one_error_line_exit_two_and_no_file(script, work, capsys, extra, message):
    out = work / "d.json"
    argv = [str(work), "--seed", "100", "--fields", "12", *extra, "--json", str(out)]
    assert script.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_a_json_in_a_missing_directory_is_refused_before_reading(script, work, capsys):
    out = work / "missing" / "d.json"
    assert script.main([str(work), "--fields", "12", "--json", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_corrupt_sums_file_is_one_error_line(script, work, capsys):
    (work / "tiles_metadetect" / "00000_minus.sums.npz").write_text("not a sums file")
    out = work / "d.json"
    assert script.main([str(work), "--fields", "12", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "not a readable sums file" in err
    assert not out.exists()
