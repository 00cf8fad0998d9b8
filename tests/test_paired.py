"""±g pairs, paired differences and the truth reference (blendflag.shear.paired)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from astropy.table import Table

from blendflag.config import PipelineConfig, ShearConfig
from blendflag.shear.paired import UnitSums, compare_statistics
from blendflag.shear.results import (
    METACAL_VERSIONS,
    SHAPE_COLUMNS,
    VERSION_SHEARS,
    empty_result_table,
    selection_unit_sums,
)
from blendflag.shear.selections import true_isolation, version_true_isolation

STEP = 0.01
G = 0.02


def _table(e_int, sign, response=0.8, noise=None):
    """A metacal table: intrinsic shape + response x (sign g + version shear) (+ noise)."""
    n = len(e_int)
    table = empty_result_table(n)
    for v in METACAL_VERSIONS:
        d1, d2 = VERSION_SHEARS[v]
        table[SHAPE_COLUMNS[v][0]] = e_int[:, 0] + response * (sign * G + d1 * STEP)
        table[SHAPE_COLUMNS[v][1]] = e_int[:, 1] + response * d2 * STEP
        if noise is not None:
            table[SHAPE_COLUMNS[v][0]] += noise[:, 0]
            table[SHAPE_COLUMNS[v][1]] += noise[:, 1]
    return table


def _unit_sums(table, sign):
    keys = np.arange(len(table))
    sums, n_good = selection_unit_sums(table, None, keys)
    return UnitSums(keys, sums, n_good, sign)


def test_plus_and_minus_g_cancel_what_they_share():
    """Shape and pixel noise common to +g and -g cancel; one sign keeps them."""
    rng = np.random.default_rng(1)
    e_int = rng.normal(0.0, 0.25, size=(400, 2))
    noise = rng.normal(0.0, 0.05, size=(400, 2))  # the same pixels under +g and -g
    plus = _unit_sums(_table(e_int, +1, noise=noise), +1)
    minus = _unit_sums(_table(e_int, -1, noise=noise), -1)
    single = compare_statistics({"all": [plus]}, STEP, (G, 0.0), np.random.default_rng(2))[0]
    paired = compare_statistics({"all": [plus, minus]}, STEP, (G, 0.0), np.random.default_rng(2))[0]
    # one sign: m carries the shape noise, of the size its error says
    assert single["m_err"] > 0.3
    assert single["c1"] is None and single["c2"] == pytest.approx(single["g2"])
    # the pair: m exact up to rounding, and c1 = the common part of g1
    assert abs(paired["m"]) < 1e-9 and paired["m_err"] < 1e-9
    assert paired["c1"] == pytest.approx(np.mean(e_int[:, 0] + noise[:, 0]) / 0.8, abs=1e-9)
    assert paired["R11"] == pytest.approx(0.8)


def test_differences_use_the_same_bootstrap_draws():
    """A selection that differs from `all` by a few objects has a small paired error."""
    rng = np.random.default_rng(3)
    e_int = rng.normal(0.0, 0.25, size=(600, 2))
    noise = rng.normal(0.0, 0.1, size=(600, 2))
    minus_noise = rng.normal(0.0, 0.1, size=(600, 2))  # unmatched noise: m stays noisy
    tables = {+1: _table(e_int, +1, noise=noise), -1: _table(e_int, -1, noise=minus_noise)}
    keep = np.ones(600, bool)
    keep[:12] = False
    selections = {"all": [], "cut": [], "no_true_blends": []}
    for sign, table in tables.items():
        keys = np.arange(600)
        for name, mask in (("all", None), ("cut", keep), ("no_true_blends", keep)):
            sums, n_good = selection_unit_sums(table, mask, keys)
            selections[name].append(UnitSums(keys, sums, n_good, sign))
    entries = {e["name"]: e for e in compare_statistics(selections, STEP, (G, 0.0))}
    cut = entries["cut"]
    assert cut["m_err"] > 0.01
    assert cut["dm_vs_all_err"] < cut["m_err"] / 4  # paired, not added in quadrature
    assert cut["dm_vs_all"] == pytest.approx(cut["m"] - entries["all"]["m"])
    assert cut["dm_vs_truth"] == pytest.approx(0.0, abs=1e-12)
    assert entries["all"]["dm_vs_all"] == 0.0


def test_units_are_matched_by_key_across_signs():
    """The -g image's units pair with the +g image's by key, whatever their order."""
    rng = np.random.default_rng(4)
    e_int = rng.normal(0.0, 0.25, size=(50, 2))
    plus = _unit_sums(_table(e_int, +1), +1)
    order = rng.permutation(50)
    table = _table(e_int[order], -1)
    sums, n_good = selection_unit_sums(table, None, order)  # keys: the truth identity
    minus = UnitSums(np.sort(order), sums, n_good, -1)
    paired = compare_statistics({"all": [plus, minus]}, STEP, (G, 0.0))[0]
    assert abs(paired["m"]) < 1e-9 and paired["m_err"] < 1e-9


def test_no_true_blends_keeps_exactly_the_truth_isolated_matches():
    truth = Table(
        {
            "X": [10.0, 50.0, 90.0, 130.0],
            "OVERLAPS": [-1, 2, 1, -1],
            "OVERLAPS_FIELD": [-1, 2, 1, 0],
        }
    )
    match = np.array([0, 1, 2, 3, -1, 0])  # detection 4 matches nothing
    for depth, expected in (
        ("reference", [True, False, False, True, False, True]),
        ("field", [True, False, False, False, False, True]),
    ):
        context = SimpleNamespace(
            truth=truth,
            results={"truth_match": match},
            config=PipelineConfig(shear=ShearConfig(truth_depth=depth)),
        )
        np.testing.assert_array_equal(true_isolation(context), expected)
    no_truth = SimpleNamespace(truth=None, results={}, config=PipelineConfig())
    assert true_isolation(no_truth) is None


def test_separately_detected_catalogues_keep_a_lonely_galaxy_only_with_its_lonely_partner():
    """Metadetection has no detection-level pairs: the truth's rotated pairs are completed."""
    truth = Table(
        {
            "X": [10.0, 50.0, 90.0, 130.0, 170.0, 210.0],
            "Y": [10.0] * 6,
            "PAIR_ID": [0, 0, 1, 1, 2, -1],  # pair 2 lost a member; the last row is a star
            "OVERLAPS_FIELD": [-1, -1, -1, 4, -1, -1],
        }
    )
    # each version detects a different subset, shifted by less than the match radius
    rows = {v: [0, 1, 2, 3, 4, 5] for v in METACAL_VERSIONS}
    rows["1p"] = [0, 2, 5]
    tables = {
        v: Table({"X_IMAGE": truth["X"][r] + 0.5, "Y_IMAGE": truth["Y"][r] - 0.5})
        for v, r in rows.items()
    }
    context = SimpleNamespace(
        truth=truth,
        results={},
        config=PipelineConfig(shear=ShearConfig(truth_depth="field")),
    )
    result = SimpleNamespace(sum_layout="versions", tables=tables)
    keep = version_true_isolation(context, result)
    # galaxy 2 is lonely but its partner 3 is not; 4's partner is missing; the star stays
    np.testing.assert_array_equal(keep["noshear"], [True, True, False, False, False, True])
    np.testing.assert_array_equal(keep["1p"], [True, False, True])
    np.testing.assert_array_equal(context.results["version_truth_match"]["1p"], [0, 2, 5])
    stamps = SimpleNamespace(sum_layout="stamps", tables=tables)
    assert version_true_isolation(context, stamps) is None


@pytest.mark.slow
def test_matched_noise_pairs_measure_isolated_galaxies_far_better_than_one_sign():
    """GalSim metacal on the same galaxies and noise at +g and -g: the pair cancels the noise."""
    from blendflag.shear.inputs import paired_noise_fields
    from blendflag.shear.testdata import isolated_galaxy_pairs
    from blendflag_plugins.metacal_galsim import GalSimMetacal

    engine = GalSimMetacal(ShearConfig())
    parts = []
    for sign in (1, -1):
        data = isolated_galaxy_pairs(
            40, np.random.default_rng(7), true_shear=(sign * G, 0.0), noise_sigma=10.0
        )
        keys = data.pair_id
        rotated = np.tile([False, True], len(keys) // 2)
        fields = paired_noise_fields(keys, rotated, data.noise_sigma, data.stamps.shape[-1], 3)
        result = engine.measure(
            data.stamps,
            data.psf,
            data.pixel_scale,
            data.noise_sigma,
            np.random.default_rng(0),
            noise_fields=fields,
        )
        sums, n_good = result.unit_sums(None, keys)
        parts.append(UnitSums(np.unique(keys), sums, n_good, sign))
    single = compare_statistics({"all": parts[:1]}, STEP, (G, 0.0))[0]
    paired = compare_statistics({"all": parts}, STEP, (G, 0.0))[0]
    assert paired["m_err"] < single["m_err"] / 3
    assert abs(paired["m"]) < 4 * paired["m_err"] + 2e-3  # metacal's own bias is < 1e-3


def test_shape_and_response_of_both_layouts():
    """<e1> and R from sums: stamps (R11 + R11_S) and versions (separate catalogues)."""
    from blendflag.shear.statistics import shape_and_response

    stamps = np.zeros(15)
    stamps[[0, 7, 9, 11, 13]] = 4.0  # four objects, all kept in every selection
    stamps[1] = 0.08  # sum e1: <e1> = 0.02
    stamps[3], stamps[4] = 0.036, -0.036  # R11 = 0.072 / 4 / 0.02 = 0.9
    stamps[8], stamps[10] = 0.002, -0.002  # R11_S = (0.0005 + 0.0005) / 0.02 = 0.05
    e1, response = shape_and_response(stamps, 0.01, "stamps")
    assert e1 == pytest.approx(0.02) and response == pytest.approx(0.95)
    versions = np.zeros(15)  # noshear, 1p, 1m, 2p, 2m: count, sum e1, sum e2 each
    versions[0:3] = (10, 0.3, 0.0)
    versions[3:6] = (11, 0.33 + 11 * 0.004, 0.0)  # <e1> 0.034
    versions[6:9] = (9, 0.27 - 9 * 0.004, 0.0)  # <e1> 0.026
    e1, response = shape_and_response(versions, 0.01, "versions")
    assert e1 == pytest.approx(0.03) and response == pytest.approx(0.4)
