"""Where metadetection's response gets its noise (scripts/metadetect_response_noise.py)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from tests.conftest import script_module

STEP = 0.01


@pytest.fixture(scope="module")
def script():
    return script_module("metadetect_response_noise")


def _tables():
    """1p and 1m catalogues: three objects in both, one cut in 1m, one detected in 1p only."""
    common = {"X_UNSHEARED": [10.0, 50.0, 90.0], "Y_UNSHEARED": [10.0, 50.0, 90.0]}
    plus = Table(
        {"X_UNSHEARED": [*common["X_UNSHEARED"], 120.0, 150.0],
         "Y_UNSHEARED": [*common["Y_UNSHEARED"], 120.0, 150.0],
         "G1": [0.012, 0.022, -0.008, 0.3, -0.2], "MCAL_FLAGS": [0, 0, 0, 0, 0],
         "S2N": [30.0, 15.0, 60.0, 12.0, 11.0]}
    )  # fmt: skip
    minus = Table(
        {"X_UNSHEARED": [90.5, 10.2, 50.0, 120.3], "Y_UNSHEARED": [90.0, 10.0, 49.6, 120.0],
         "G1": [-0.012, 0.008, 0.018, 0.25], "MCAL_FLAGS": [0, 0, 0, 512],
         "S2N": [59.0, 29.0, 14.0, 9.0]}
    )  # fmt: skip
    return {"1p": plus, "1m": minus}


def test_the_response_splits_into_its_parts(script):
    tables = _tables()
    matched = script.match_versions(tables, 1.0)
    assert matched["1p"]["both"].tolist() == [True, True, True, False, False]
    assert matched["1p"]["cut"].tolist() == [False, False, False, True, False]
    assert matched["1p"]["detection"].tolist() == [False, False, False, False, True]
    assert matched["1m"]["both"].tolist() == [True, True, True, False]  # the cut row is not kept
    parts = script.response_parts(tables, matched, STEP)
    n_mean = 0.5 * (5 + 3)
    assert parts["R11_both"] == pytest.approx((0.026 - 0.014) / n_mean / (2 * STEP))
    assert parts["R11_cut"] == pytest.approx(0.3 / n_mean / (2 * STEP))
    assert parts["R11_detection"] == pytest.approx(-0.2 / n_mean / (2 * STEP))
    plus_mean, minus_mean = (
        np.mean([0.012, 0.022, -0.008, 0.3, -0.2]),
        np.mean([-0.012, 0.008, 0.018]),
    )
    assert parts["R11"] == pytest.approx((plus_mean - minus_mean) / (2 * STEP))
    assert parts["n_detection"] == [1, 0] and parts["n_cut"] == [1, 0]


def test_each_matched_objects_response_and_its_distance_from_the_core_centre(script):
    tables = _tables()
    matched = script.match_versions(tables, 1.0)
    objects = script.object_responses(tables, matched, STEP, (200, 200), 100)
    assert objects["n"] == 3
    r_i = np.array([0.012 - 0.008, 0.022 - 0.018, -0.008 + 0.012]) / (2 * STEP)
    assert objects["mean"] == pytest.approx(r_i.mean())
    assert objects["scatter"] is None  # fewer than MIN_BIN objects
    distance = script.core_distance(np.array([49.5, 0.0, 150.0]), np.array([49.5, 0.0, 49.5]),
                                    (200, 200), 100)  # fmt: skip
    assert distance == pytest.approx([0.0, np.hypot(49.5, 49.5), 0.5])


def test_robust_scatter_is_a_gaussians_sigma(script):
    values = np.random.default_rng(2).normal(0.0, 3.0, 20000)
    assert script.robust_scatter(values) == pytest.approx(3.0, rel=0.03)
    assert script.robust_scatter(values[:4]) is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--cell-sizes", "10"], "at least 20"), (["--cell-sizes", "a"], "comma-separated")],
)
def test_bad_input_is_one_error_line_and_exit_two(script, tmp_path, capsys, extra, message):
    out = tmp_path / "r.json"
    assert script.main([str(tmp_path), *extra, "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_a_directory_without_the_field_files_is_refused(script, tmp_path, capsys):
    assert script.main([str(tmp_path), "--json", str(tmp_path / "r.json")]) == 2
    assert "no image.fits, weight.fits, psf.fits" in capsys.readouterr().err


def test_corrupt_field_files_are_one_error_line(script, tmp_path, capsys):
    for name in ("image", "weight", "psf"):
        (tmp_path / f"{name}.fits").write_text("not FITS")
    out = tmp_path / "r.json"
    assert script.main([str(tmp_path), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "not a readable FITS" in err
    assert not out.exists()
