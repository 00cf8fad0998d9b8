"""The VGG16 cut chosen for the shear (scripts/vgg16_threshold_scan.py) on hand-made sums."""

from __future__ import annotations

import numpy as np
import pytest

from blendflag.shear.paired import UnitSums
from blendflag.shear.results import (
    METACAL_VERSIONS,
    SHAPE_COLUMNS,
    VERSION_SHEARS,
    empty_result_table,
    selection_unit_sums,
)
from tests.conftest import script_module

STEP, G = 0.01, 0.02


@pytest.fixture(scope="module")
def scan():
    return script_module("vgg16_threshold_scan")


def _sums(rng, keep_by_name: dict) -> dict:
    """One seed's per-unit sums: 300 objects in 30 units, +g and -g, a few biased objects.

    One object in ten is a "blend" (one in every unit, so that the bootstrap
    does not change their share): its response is 0.6 instead of 0.8 and its
    shape does not follow the shear, so leaving the blends out moves m.
    """
    n = 300
    e_int = rng.normal(0.0, 0.25, size=(n, 2))
    blend = np.arange(n) % 10 == 0
    response = np.where(blend, 0.6, 0.8)
    keys = np.arange(n) // 10
    out = {name: [] for name in keep_by_name}
    for sign in (1, -1):
        table = empty_result_table(n)
        noise = rng.normal(0.0, 0.005, size=(n, 2))  # pixel noise, not shared by +g and -g
        for v in METACAL_VERSIONS:
            d1, d2 = VERSION_SHEARS[v]
            g1 = np.where(blend, 0.0, sign * G)
            table[SHAPE_COLUMNS[v][0]] = e_int[:, 0] + response * (g1 + d1 * STEP) + noise[:, 0]
            table[SHAPE_COLUMNS[v][1]] = e_int[:, 1] + response * d2 * STEP + noise[:, 1]
        for name, keep in keep_by_name.items():
            sums, n_good = selection_unit_sums(table, keep, keys)
            out[name].append(UnitSums(np.unique(keys), sums, n_good, sign, "stamps"))
    return out


def _runs(scan, n_seeds=2):
    rng = np.random.default_rng(5)
    isolated = np.arange(300) % 10 != 0
    keep = {
        "all": None,
        "no_true_blends": isolated,
        scan.threshold_name(0.3): None,  # keeps everything: all's m
        scan.threshold_name(0.5): isolated,  # finds every blend: the truth's m
        scan.threshold_name(0.9): np.arange(300) % 20 != 0,  # half of them
    }
    return [
        {"sums": _sums(rng, keep), "step": STEP, "true_shear": (G, 0.0), "threshold": 0.3}
        for _ in range(n_seeds)
    ]


def test_scan_reads_its_thresholds_and_compares_each_to_the_weights_own(scan):
    runs = _runs(scan)
    thresholds = scan.scanned_thresholds(runs)
    assert thresholds == [0.3, 0.5, 0.9]
    entries = {e["name"]: e for e in scan.curve(runs, thresholds, 200, 1)}
    assert entries["t0.500"]["dm_vs_truth"] == pytest.approx(0.0, abs=1e-12)
    assert entries["t0.300"]["dm_vs_all"] == pytest.approx(0.0, abs=1e-12)
    bias = entries["all"]["dm_vs_truth"]
    assert bias < -0.05  # the blends pull m down
    versus = scan.against_weights_threshold(runs, thresholds, 200, 1)
    assert versus["t0.300"]["dm"] == pytest.approx(0.0, abs=1e-12)
    assert versus["t0.500"]["dm"] == pytest.approx(-bias, rel=1e-9)
    assert 0 < versus["t0.500"]["dm_err"] < abs(bias) / 3  # paired: smaller than the shift
    choice = scan.choose(list(entries.values()), thresholds, 0.85, versus)
    assert choice["chosen"]["threshold"] == 0.5
    assert scan.significance(choice["chosen"]) > 3
    # a floor on the objects kept rules out the cut that finds every blend
    strict = scan.choose(list(entries.values()), thresholds, 0.92, versus)["chosen"]
    assert strict["threshold"] == 0.9 and strict["kept"] >= 0.92


def test_a_seed_survives_its_file(scan, tmp_path):
    (run,) = _runs(scan, 1)
    path = tmp_path / "seed.npz"
    scan.save_seed(path, run)
    back = scan.load_seed(path, 7 << 40)
    assert back["threshold"] == 0.3 and back["true_shear"] == (G, 0.0)
    for name, parts in run["sums"].items():
        for a, b in zip(parts, back["sums"][name], strict=True):
            np.testing.assert_array_equal(b.keys, a.keys + (7 << 40))
            np.testing.assert_array_equal(b.sums, a.sums)
            assert (b.n_good, b.sign, b.layout) == (a.n_good, a.sign, a.layout)
