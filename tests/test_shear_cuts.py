"""The shear catalogue's cuts (``shear.cuts``): made on each metacal version, so R_S sees them."""

from __future__ import annotations

import numpy as np
import pytest

from blendflag.config import ShearConfig, ShearCuts, load_pipeline_config
from blendflag.errors import ConfigError
from blendflag.shear.cuts import shear_cut_masks
from blendflag.shear.results import METACAL_VERSIONS
from blendflag.shear.statistics import selection_statistics
from blendflag.shear.testdata import isolated_galaxy_pairs
from blendflag_plugins.metacal_galsim import GalSimMetacal


@pytest.fixture(scope="module")
def measured():
    """40 noisy rotated pairs (S/N ~20-60) measured by the built-in engine."""
    pairs = isolated_galaxy_pairs(40, np.random.default_rng(4), true_shear=(0.02, 0.0))
    rng = np.random.default_rng(5)
    stamps = pairs.stamps + rng.normal(0.0, 4.0, pairs.stamps.shape).astype(np.float32)
    result = GalSimMetacal(ShearConfig()).measure(
        stamps, pairs.psf, pairs.pixel_scale, 4.0, np.random.default_rng(6)
    )
    assert result.good.all()
    return result


def test_every_version_has_its_own_size_and_s2n(measured):
    t = measured.table
    for v in METACAL_VERSIONS[1:]:
        assert np.isfinite(t[f"T_{v.upper()}"]).all() and np.isfinite(t[f"S2N_{v.upper()}"]).all()
    # the 1p and 1m images differ in size by the shear step's stretch, not by chance
    assert not np.array_equal(t["T_1P"], t["T_1M"])
    # the reconvolution kernel's weighted size: below the objects' (they are resolved)
    assert (t["T_PSF"] > 0).all() and np.median(t["T_NOSHEAR"] / t["T_PSF"]) > 1.0


def test_a_cut_on_a_sheared_quantity_enters_r_s_a_fixed_cut_does_not(measured):
    """A size cut at the sample's median ratio: per version, R_S is not zero; fixed, it is."""
    t = measured.table
    ratio = np.asarray(t["T_NOSHEAR"] / t["T_PSF"])
    cuts = ShearCuts(s2n_min=0.0, t_ratio_min=float(np.median(ratio)))
    good = measured.good
    masks, summary = shear_cut_masks(t, cuts, good)
    assert summary["in_response"] and summary["size_cut"] == "applied"
    assert 0 < summary["kept_noshear"] < len(t)
    own = selection_statistics(t, "cut", masks, step=measured.step)
    fixed = selection_statistics(t, "cut", masks["noshear"], step=measured.step)
    assert fixed["R11_S"] == 0.0
    # flipping objects across the cut between 1p and 1m: a response of order 0.01-0.1
    assert abs(own["R11_S"]) > 1e-3
    # the masks differ between versions exactly where the sheared size crosses the cut
    crossed = masks["1p"] != masks["1m"]
    assert crossed.any()
    r1p, r1m = (np.asarray(t[f"T_{v}"] / t["T_PSF"]) for v in ("1P", "1M"))
    assert ((r1p >= cuts.t_ratio_min) != (r1m >= cuts.t_ratio_min))[crossed].all()


def test_an_engine_without_version_sizes_gets_the_noshear_cut_everywhere(measured):
    """Columns of the sheared versions missing: every version cut on noshear, said so."""
    t = measured.table.copy()
    for v in METACAL_VERSIONS[1:]:
        t.remove_columns([f"T_{v.upper()}", f"S2N_{v.upper()}"])
    masks, summary = shear_cut_masks(t, ShearCuts(s2n_min=30.0, t_ratio_min=0.0), measured.good)
    assert not summary["in_response"]
    for v in METACAL_VERSIONS:
        np.testing.assert_array_equal(masks[v], masks["noshear"])
    assert masks["noshear"].sum() == int((np.asarray(t["S2N_NOSHEAR"]) >= 30.0).sum())


def test_cuts_are_configured_and_validated(tmp_path):
    assert load_pipeline_config(None).shear.cuts == ShearCuts(s2n_min=10.0, t_ratio_min=1.2)
    path = tmp_path / "p.yaml"
    path.write_text("shear:\n  cuts:\n    s2n_min: -1\n")
    with pytest.raises(ConfigError, match=r"shear\.cuts\.s2n_min"):
        load_pipeline_config(path)
    path.write_text("shear:\n  cuts:\n    s2n_min: 0\n    t_ratio_min: 0\n")
    assert not load_pipeline_config(path).shear.cuts.active
