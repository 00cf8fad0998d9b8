"""Shear statistics (blendflag.shear) on synthetic metacal tables: no GalSim needed."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits

from blendflag.config import ShearConfig
from blendflag.errors import BlendflagError, PluginError
from blendflag.io.images import pixel_scale_from_header
from blendflag.io.stamps import stamp_noise_sigma
from blendflag.plugins import select_engine
from blendflag.shear.engine import StampShearEngine
from blendflag.shear.inputs import crop_stamps, noise_from_weight
from blendflag.shear.results import (
    MCAL_EMPTY_STAMP,
    MCAL_FLAG_NAMES,
    MCAL_MOMENTS_FAILED,
    MCAL_NONFINITE_STAMP,
    MCAL_STAMP_FLAGGED,
    MCAL_UNSTABLE,
    METACAL_VERSIONS,
    SHAPE_COLUMNS,
    VERSION_SHEARS,
    MetacalResult,
    empty_result_table,
    flag_names,
    flag_unstable,
)
from blendflag.shear.statistics import selection_statistics, shear_response

STEP = 0.01
REQUIRED_KEYS = {
    "name",
    "n",
    "R11",
    "R22",
    "g1",
    "g1_err",
    "g2",
    "g2_err",
    "m",
    "m_err",
    "c",
    "c_err",
}
EXTRA_KEYS = {"R11_S", "R22_S", "g1_noRS", "m_noRS", "m_noRS_err", "fraction_kept"}


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def synthetic_table(n_pairs, rng, g=(0.02, 0.0), sigma_e=0.2, response=(0.7, 0.9), pairs=True):
    """A metacal table from a linear model: e_version = e_int + R (g + shear_version).

    With ``pairs`` the intrinsic shapes come in rotated pairs (e, -e); each
    object has its own response R drawn uniformly in ``response``.
    """
    n = 2 * n_pairs
    if pairs:
        half = rng.normal(0.0, sigma_e, size=(n_pairs, 2))
        e_int = np.empty((n, 2))
        e_int[0::2] = half
        e_int[1::2] = -half
        R = np.repeat(rng.uniform(*response, size=n_pairs), 2)
    else:
        e_int = rng.normal(0.0, sigma_e, size=(n, 2))
        R = rng.uniform(*response, size=n)
    table = empty_result_table(n)
    for version, (s1, s2) in VERSION_SHEARS.items():
        s1, s2 = s1 * STEP, s2 * STEP
        c1, c2 = SHAPE_COLUMNS[version]
        table[c1] = e_int[:, 0] + R * (g[0] + s1)
        table[c2] = e_int[:, 1] + R * (g[1] + s2)
    table["T_NOSHEAR"] = 0.5
    table["S2N_NOSHEAR"] = 100.0
    return table, np.repeat(np.arange(n_pairs), 2), R


def cut_masks(table, threshold=0.3):
    """The cut |e1| < threshold applied to each version's own e1.

    It depends on shape, so the sheared versions keep different objects; it
    is symmetric under e1 -> -e1, so without shear it keeps <e1> = 0 (a
    one-sided cut would add an additive bias that no response corrects).
    """
    return {v: np.abs(np.asarray(table[SHAPE_COLUMNS[v][0]])) < threshold for v in METACAL_VERSIONS}


# ---------------------------------------------------------------------------
# selection_statistics
# ---------------------------------------------------------------------------


def test_entry_has_the_contract_keys_and_is_json(rng):
    table, pair_id, _ = synthetic_table(200, rng)
    entry = selection_statistics(
        table, "all", step=STEP, true_shear=(0.02, 0.0), rng=rng, n_bootstrap=50, pair_id=pair_id
    )
    assert set(entry) == REQUIRED_KEYS | EXTRA_KEYS
    assert entry["name"] == "all"
    assert entry["n"] == len(table)
    assert entry["fraction_kept"] == 1.0
    json.dumps(entry, allow_nan=False)


def test_recovers_the_shear_and_the_mean_response(rng):
    table, pair_id, R = synthetic_table(500, rng)
    entry = selection_statistics(
        table, "all", step=STEP, true_shear=(0.02, 0.0), rng=rng, n_bootstrap=100, pair_id=pair_id
    )
    assert entry["R11"] == pytest.approx(R.mean(), rel=1e-12)
    assert entry["R22"] == pytest.approx(R.mean(), rel=1e-12)
    # linear model + exact rotated pairs: <e> = <R> g exactly
    assert entry["m"] == pytest.approx(0.0, abs=1e-12)
    assert entry["c"] == pytest.approx(0.0, abs=1e-12)
    assert entry["R11_S"] == 0.0 and entry["R22_S"] == 0.0
    assert entry["m_noRS"] == pytest.approx(entry["m"], abs=1e-12)


def test_without_true_shear_m_and_c_are_null(rng):
    table, _, _ = synthetic_table(50, rng)
    entry = selection_statistics(table, "all", step=STEP, rng=rng, n_bootstrap=20)
    for key in ("m", "m_err", "c", "c_err", "m_noRS", "m_noRS_err"):
        assert entry[key] is None
    assert entry["g1"] is not None and entry["g1_err"] > 0


def test_selection_masks_are_honoured(rng):
    table, _, _ = synthetic_table(300, rng)
    keep = rng.random(len(table)) < 0.6
    entry = selection_statistics(
        table,
        "random",
        {v: keep for v in METACAL_VERSIONS},
        step=STEP,
        true_shear=(0.02, 0.0),
        rng=rng,
        n_bootstrap=20,
    )
    assert entry["n"] == int(keep.sum())
    assert entry["fraction_kept"] == pytest.approx(keep.mean())
    # the same numbers as measuring on the kept objects only
    sub = selection_statistics(
        table[keep], "sub", step=STEP, true_shear=(0.02, 0.0), rng=rng, n_bootstrap=20
    )
    for key in ("R11", "R22", "g1", "g2", "m", "c"):
        assert entry[key] == pytest.approx(sub[key], rel=1e-10, abs=1e-14)


def test_selection_response_zero_for_shape_blind_cut(rng):
    # a cut that does not look at shapes keeps the same objects on every version
    table, _, _ = synthetic_table(300, rng)
    keep = rng.random(len(table)) < 0.5
    entry = selection_statistics(
        table, "random", {v: keep for v in METACAL_VERSIONS}, step=STEP, rng=rng, n_bootstrap=20
    )
    assert entry["R11_S"] == 0.0 and entry["R22_S"] == 0.0
    # a single mask is the same thing
    single = selection_statistics(table, "random", keep, step=STEP, rng=rng, n_bootstrap=20)
    assert single["R11_S"] == 0.0 and single["g1"] == entry["g1"]


def test_selection_response_corrects_a_cut_on_e1(rng):
    table, pair_id, _ = synthetic_table(4000, rng, response=(0.8, 0.8))
    masks = cut_masks(table)
    entry = selection_statistics(
        table,
        "e1 cut",
        masks,
        step=STEP,
        true_shear=(0.02, 0.0),
        rng=rng,
        n_bootstrap=100,
        pair_id=pair_id,
    )
    assert entry["n"] == int(masks["noshear"].sum())
    # shearing by +step moves objects out at e1 = +0.3 and in at -0.3: R_S < 0
    assert entry["R11_S"] < -0.05
    # the cut on e1 does not select on e2
    assert abs(entry["R22_S"]) < 0.2 * abs(entry["R11_S"])
    # ignoring R_S leaves a large bias; correcting by it removes it
    assert abs(entry["m_noRS"]) > 10 * entry["m_noRS_err"]
    assert abs(entry["m"]) < 4 * entry["m_err"]


def test_missing_version_mask_is_an_error(rng):
    table, _, _ = synthetic_table(10, rng)
    with pytest.raises(BlendflagError, match="missing version"):
        selection_statistics(table, "x", {"noshear": np.ones(len(table), bool)}, step=STEP)
    with pytest.raises(BlendflagError, match="shape"):
        selection_statistics(table, "x", np.ones(3, bool), step=STEP)


def test_flagged_objects_are_excluded(rng):
    table, _, _ = synthetic_table(200, rng, pairs=False)
    clean = selection_statistics(table, "all", step=STEP, true_shear=(0.02, 0.0), n_bootstrap=10)
    bad = table.copy()
    extra = empty_result_table(5)
    for col in bad.colnames:
        if col != "MCAL_FLAGS":
            extra[col] = 5.0  # wild values that would ruin the mean
    extra["MCAL_FLAGS"] = MCAL_MOMENTS_FAILED
    from astropy.table import vstack

    bad = vstack([bad, extra])
    bad["G1_1P"][-1] = np.nan
    flagged = selection_statistics(bad, "all", step=STEP, true_shear=(0.02, 0.0), n_bootstrap=10)
    assert flagged["n"] == clean["n"] == 400
    assert flagged["g1"] == pytest.approx(clean["g1"], rel=1e-12)


def test_empty_selection_gives_nulls(rng):
    table, _, _ = synthetic_table(10, rng)
    entry = selection_statistics(
        table, "none", np.zeros(len(table), bool), step=STEP, true_shear=(0.02, 0.0), n_bootstrap=10
    )
    assert entry["n"] == 0
    assert entry["g1"] is None and entry["m"] is None and entry["R11"] is None
    json.dumps(entry, allow_nan=False)


def test_bootstrap_errors_shrink_with_n():
    errs = []
    for n_pairs in (200, 3200):
        rng = np.random.default_rng(7)
        table, _, _ = synthetic_table(n_pairs, rng, pairs=False)
        entry = selection_statistics(
            table, "all", step=STEP, true_shear=(0.02, 0.0), rng=rng, n_bootstrap=200
        )
        errs.append(entry["g1_err"])
    # 16x the objects: errors 4x smaller (bootstrap noise ~ 1/sqrt(2 * 200) = 5%)
    assert 3.2 < errs[0] / errs[1] < 5.0
    # and the error is the one of a mean: sigma_e / (R sqrt(n))
    expected = 0.2 / (0.8 * np.sqrt(2 * 3200))
    assert errs[1] == pytest.approx(expected, rel=0.2)


def test_pair_bootstrap_keeps_pairs_together(rng):
    table, pair_id, _ = synthetic_table(400, rng, response=(0.8, 0.8))
    by_pair = selection_statistics(
        table, "all", step=STEP, true_shear=(0.02, 0.0), rng=rng, n_bootstrap=100, pair_id=pair_id
    )
    by_object = selection_statistics(
        table, "all", step=STEP, true_shear=(0.02, 0.0), rng=rng, n_bootstrap=100
    )
    # shape noise cancels within a pair: resampling whole pairs leaves no scatter,
    # resampling objects breaks the pairs and brings the shape noise back
    assert by_pair["g1_err"] < 1e-10
    assert by_object["g1_err"] > 1e-3
    # pair ids may be any labels, in any order
    shuffled = rng.permutation(len(table))
    labels = (pair_id * 7 + 3)[shuffled]
    again = selection_statistics(
        table[shuffled],
        "all",
        step=STEP,
        true_shear=(0.02, 0.0),
        rng=rng,
        n_bootstrap=100,
        pair_id=labels,
    )
    assert again["g1_err"] < 1e-10
    with pytest.raises(BlendflagError, match="pair_id"):
        selection_statistics(table, "all", step=STEP, pair_id=pair_id[:-1])


def test_bootstrap_is_reproducible(rng):
    table, _, _ = synthetic_table(100, rng, pairs=False)
    a = selection_statistics(table, "all", step=STEP, rng=np.random.default_rng(3), n_bootstrap=30)
    b = selection_statistics(table, "all", step=STEP, rng=np.random.default_rng(3), n_bootstrap=30)
    assert a == b


# ---------------------------------------------------------------------------
# shear_response and helpers
# ---------------------------------------------------------------------------


def test_shear_response_matrix(rng):
    table, _, R = synthetic_table(100, rng)
    matrix = shear_response(table, step=STEP)
    np.testing.assert_allclose(matrix, [[R.mean(), 0.0], [0.0, R.mean()]], atol=1e-12)
    mask = np.arange(len(table)) < 10
    assert shear_response(table, mask, step=STEP)[0, 0] == pytest.approx(R[:10].mean())
    assert np.isnan(shear_response(table, np.zeros(len(table), bool), step=STEP)).all()


def test_flag_names_decode_bits():
    assert flag_names(0) == []
    assert flag_names(MCAL_EMPTY_STAMP | MCAL_NONFINITE_STAMP) == ["nonfinite_stamp", "empty_stamp"]
    bits = list(MCAL_FLAG_NAMES)
    assert all(b & (b - 1) == 0 for b in bits) and len(set(bits)) == len(bits)


def test_crop_and_noise_helpers(rng):
    stamps = rng.normal(0.0, 3.0, size=(4, 41, 41))
    assert crop_stamps(stamps, 21).shape == (4, 21, 21)
    assert crop_stamps(stamps, 51) is stamps
    np.testing.assert_allclose(stamp_noise_sigma(stamps), 3.0, rtol=0.15)
    weight = np.full((100, 100), 1.0 / 4.0)
    weight[:, :50] = 0.0
    sig = noise_from_weight(weight, [75.0, 20.0], [50.0, 50.0], 21)
    assert sig[0] == pytest.approx(2.0)
    assert np.isnan(sig[1])


def test_pixel_scale_from_header():
    h = fits.Header()
    assert pixel_scale_from_header(None) is None
    assert pixel_scale_from_header(h) is None
    h["CD1_1"] = -0.187 / 3600
    h["CD2_2"] = 0.187 / 3600
    assert pixel_scale_from_header(h) == pytest.approx(0.187)
    h2 = fits.Header({"CDELT1": -0.1 / 3600, "CDELT2": 0.1 / 3600})
    assert pixel_scale_from_header(h2) == pytest.approx(0.1)
    assert pixel_scale_from_header(fits.Header({"PIXSCALE": 0.2})) == 0.2


def test_core_module_does_not_import_galsim():
    code = (
        "import sys, blendflag.shear\n"
        "assert 'galsim' not in sys.modules and 'ngmix' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------
# Engine base class, selection of engines, pipeline context
# ---------------------------------------------------------------------------


class RecordingEngine(StampShearEngine):
    """Returns zeros and records what it was given (no GalSim)."""

    name = "recording"
    priority = 10

    def measure(self, stamps, psf, pixel_scale, noise_sigma, rng, return_images=False):
        data = self.prepare(stamps, psf, pixel_scale, noise_sigma)
        type(self).seen = data  # the chunk driver builds its own instance
        table = empty_result_table(len(data.stamps))
        for version in METACAL_VERSIONS:
            for col in SHAPE_COLUMNS[version]:
                table[col] = 0.0
        table["MCAL_FLAGS"] = data.flags
        return MetacalResult(table=table, engine=self.name, step=self.step)


class Available(RecordingEngine):
    name = "ngmix"
    priority = 20


class Unavailable(RecordingEngine):
    name = "ngmix"

    @classmethod
    def available(cls):
        return False


def test_prepare_flags_bad_objects_and_rejects_bad_input():
    engine = RecordingEngine(ShearConfig())
    stamps = np.ones((3, 11, 11), dtype=np.float32)
    stamps[0] = 0.0
    stamps[1, 5, 5] = np.nan
    psf = np.ones((5, 5))
    data = engine.prepare(stamps, psf, 0.2, [1.0, 1.0, np.nan])
    assert list(data.flags) == [MCAL_EMPTY_STAMP, MCAL_NONFINITE_STAMP, 64]
    assert data.psf.sum() == pytest.approx(1.0)
    assert np.isfinite(data.stamps).all()
    with pytest.raises(BlendflagError, match="PSF"):
        engine.prepare(stamps, np.zeros((5, 5)), 0.2, 1.0)
    with pytest.raises(BlendflagError, match="PSF"):
        engine.prepare(stamps, np.full((5, 5), np.nan), 0.2, 1.0)
    with pytest.raises(BlendflagError, match="pixel scale"):
        engine.prepare(stamps, psf, 0.0, 1.0)
    with pytest.raises(BlendflagError, match="noise_sigma"):
        engine.prepare(stamps, psf, 0.2, [1.0, 2.0])
    with pytest.raises(BlendflagError, match="stamps"):
        engine.prepare(np.ones(5), psf, 0.2, 1.0)


def test_select_engine():
    engines = {"metacal": RecordingEngine, "ngmix": Unavailable}
    assert select_engine(engines, "auto") is RecordingEngine
    # the higher priority first when it can run...
    assert select_engine({"metacal": RecordingEngine, "ngmix": Available}, "auto") is Available

    # ...whatever the names: auto never prefers an engine by name
    class Preferred(RecordingEngine):
        name = "zzz_third_party"
        priority = 99

    assert select_engine({"ngmix": Available, "zzz": Preferred}, "auto") is Preferred
    with pytest.raises(PluginError, match="cannot run"):
        select_engine(engines, "ngmix")
    with pytest.raises(PluginError, match=r"unknown shear engine 'nope'.*metacal, ngmix"):
        select_engine(engines, "nope")
    with pytest.raises(PluginError, match="no shear engine"):
        select_engine({"ngmix": Unavailable}, "auto")


def test_measure_context_reads_the_context(rng):
    stamps = rng.normal(0.0, 2.0, size=(3, 61, 61)).astype(np.float32)
    context = SimpleNamespace(
        stamps=stamps,
        psf=np.ones((5, 5)),
        noise_sigma=2.5,
        pixel_scale=None,
        results={},
        truth=None,
        image_header=fits.Header({"PIXSCALE": 0.187}),
        weight=None,
        table=None,
        stamp_flags=np.array([0, 1, 0], dtype=np.int32),
        flagger_objects=[],
        seed=0,
        workers=1,
        scheduler=None,
        quiet=True,
    )
    engine = RecordingEngine(ShearConfig(stamp_size=51))
    result = engine.measure_context(context)
    assert RecordingEngine.seen.stamps.shape == (3, 51, 51)
    np.testing.assert_array_equal(RecordingEngine.seen.noise_sigma, 2.5)
    assert RecordingEngine.seen.pixel_scale == pytest.approx(0.187)
    assert list(result.table["MCAL_FLAGS"]) == [0, MCAL_STAMP_FLAGGED, 0]
    # without a known noise the stamps' borders give it
    context.noise_sigma = None
    engine.measure_context(context)
    np.testing.assert_allclose(RecordingEngine.seen.noise_sigma, 2.0, rtol=0.2)
    context.psf = None
    with pytest.raises(BlendflagError, match="PSF"):
        engine.measure_context(context)


def test_unstable_objects_are_flagged():
    """A shape that jumps between versions (response -30) is flagged, sane ones are not."""
    table = empty_result_table(4)
    for v in METACAL_VERSIONS:
        dg = VERSION_SHEARS[v]
        table[SHAPE_COLUMNS[v][0]] = 0.1 + 1.5 * STEP * dg[0]  # response 1.5
        table[SHAPE_COLUMNS[v][1]] = -0.2 + 1.5 * STEP * dg[1]
    table["G1_1P"][1] = -0.2  # jumped to another solution on one version
    table["G2_2M"][2] = 0.3
    table["MCAL_FLAGS"][3] = MCAL_MOMENTS_FAILED
    assert flag_unstable(table, STEP, 0.2) == 2
    flags = np.asarray(table["MCAL_FLAGS"])
    assert flags[0] == 0 and flags[1] == MCAL_UNSTABLE and flags[2] == MCAL_UNSTABLE
    assert flags[3] == MCAL_MOMENTS_FAILED  # already bad: left alone
    assert np.isnan(table["G1_NOSHEAR"][1]) and table["G1_NOSHEAR"][0] == pytest.approx(0.1)
    assert flag_names(MCAL_UNSTABLE) == ["unstable"]
    assert flag_unstable(table, STEP, 0.0) == 0  # switched off


def test_auto_keeps_paired_runs_on_engines_that_take_the_paired_fields():
    class Ignores(RecordingEngine):
        name = "ignores_fields"
        priority = 50
        takes_noise_fields = False

    engines = {"metacal": RecordingEngine, "ignores_fields": Ignores}
    assert select_engine(engines, "auto") is Ignores  # priority decides otherwise
    assert select_engine(engines, "auto", paired=True) is RecordingEngine
    assert select_engine(engines, "ignores_fields", paired=True) is Ignores  # asked by name
