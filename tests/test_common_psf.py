"""Metacalibration of a varying PSF through one common round Gaussian PSF."""

from __future__ import annotations

import numpy as np
import pytest

from blendflag.config import ShearConfig
from blendflag.errors import BlendflagError
from blendflag.psf.model import ShiftedPSF
from blendflag.simulate.presets import load_dataset
from blendflag.simulate.psf_variation import PSFVariation, VaryingPSF
from blendflag_plugins.metacal_galsim import GalSimMetacal

SCALE = 0.187


def _engine(mode: str, **more) -> GalSimMetacal:
    return GalSimMetacal(ShearConfig(options={"metacal": {"varying_psf": mode, **more}}))


def _psf(fwhm: float, g1: float = 0.0, side: int = 25) -> np.ndarray:
    import galsim

    img = galsim.Moffat(beta=2.5, fwhm=fwhm).shear(g1=g1, g2=0.01)
    arr = img.drawImage(nx=side, ny=side, scale=SCALE).array
    return arr / arr.sum()


def _pairs(psfs, shear, side=31, flux=3000.0):
    """A galaxy and its 90-degree rotated twin, sheared by ``shear`` and drawn with each PSF."""
    import galsim

    stamps = []
    for psf in psfs:
        psf_obj = galsim.InterpolatedImage(galsim.ImageD(psf, scale=SCALE))
        for angle in (0.0, 90.0):
            gal = galsim.Exponential(half_light_radius=0.45, flux=flux).shear(g1=0.25, g2=-0.1)
            gal = gal.rotate(angle * galsim.degrees).shear(g1=shear, g2=0.0)
            img = galsim.Convolve(gal, psf_obj).drawImage(
                nx=side, ny=side, scale=SCALE, method="no_pixel"
            )
            stamps.append(img.array)
    return np.stack(stamps), np.repeat(np.stack(psfs), 2, axis=0)


def _g1(result):
    t = result.table
    e = np.mean(t["G1_NOSHEAR"])
    r11 = np.mean((t["G1_1P"] - t["G1_1M"]) / (2 * result.step))
    return e / r11, r11


def test_identical_psfs_give_the_one_psf_measurement():
    """Common Gaussian = the PSF's own kernel: the one-PSF numbers (to resampling)."""
    psf = _psf(0.7)
    stamps, cube = _pairs([psf, psf], 0.02)
    stamps = stamps + np.random.default_rng(4).normal(0.0, 3.0, stamps.shape)
    one = _engine("common").measure(stamps, psf, SCALE, 3.0, np.random.default_rng(0))
    common = _engine("common").measure(stamps, cube, SCALE, 3.0, np.random.default_rng(0))
    assert "common to the image" in common.meta["reconvolution_psf"]
    assert common.meta["reconvolution_sigma_arcsec"] == pytest.approx(
        one.meta["reconvolution_sigma_arcsec"], rel=1e-12
    )
    for col in ("G1_NOSHEAR", "G2_NOSHEAR", "G1_1P", "G1_1M", "G2_2P", "G2_2M"):
        np.testing.assert_allclose(common.table[col], one.table[col], atol=1e-4)
    np.testing.assert_allclose(_g1(common)[1], _g1(one)[1], rtol=1e-3)


def test_varying_psf_recovers_the_shear_like_per_object():
    """PSFs from 0.6" to 0.8" FWHM, elliptical: the shear to 2e-3, both modes alike to 1e-3."""
    psfs = [_psf(0.6, 0.03), _psf(0.7, 0.0), _psf(0.8, -0.03)]
    stamps, cube = _pairs(psfs, 0.02)
    g_common, _ = _g1(_engine("common").measure(stamps, cube, SCALE, 0.0, None))
    g_each, _ = _g1(_engine("per_object").measure(stamps, cube, SCALE, 0.0, None))
    assert g_common == pytest.approx(0.02, rel=2e-3)
    assert g_common == pytest.approx(g_each, rel=1e-3)


def test_matrices_equal_the_stamp_by_stamp_rendering(tmp_path, monkeypatch):
    """The common operator through matrices = rendered per stamp, noise correction included."""
    monkeypatch.setenv("BLENDFLAG_CACHE_DIR", str(tmp_path))
    psfs = [_psf(0.6, side=9), _psf(0.75, side=9)]
    stamps, cube = _pairs(psfs, 0.02, side=9, flux=500.0)
    engine = _engine("common", common_psf_sigma=0.4)
    direct = engine.measure(stamps, cube, SCALE, 2.0, np.random.default_rng(1))
    engine.expected_stamps = 10**4  # the run is large: the matrices pay
    batch = engine.measure(stamps, cube, SCALE, 2.0, np.random.default_rng(1))
    assert batch.meta["matrices"] and not direct.meta["matrices"]
    for col in direct.table.colnames:
        np.testing.assert_allclose(batch.table[col], direct.table[col], rtol=1e-9, atol=1e-12)


def test_the_common_gaussian_spans_the_whole_image_for_every_section():
    """A section's model gives the whole image's grid, so every sub-tile uses one Gaussian."""
    model = VaryingPSF(load_dataset("cfis").psf, PSFVariation(), 600, 400).psf_model(SCALE, 25)
    assert model.domain == (400, 600)
    section = ShiftedPSF(model, 300, 200)
    np.testing.assert_array_equal(section.domain_images(size=25), model.domain_images(size=25))
    grid = model.domain_images(size=25, n_grid=3)
    assert grid.shape == (9, 25, 25)
    np.testing.assert_array_equal(grid[8], model.image_at(600, 400, 25))


def test_bad_settings_are_one_line_errors():
    stamps, cube = _pairs([_psf(0.7)], 0.0)
    with pytest.raises(BlendflagError, match="varying_psf: must be common or per_object"):
        _engine("each").measure(stamps, cube, SCALE, 0.0, None)
    with pytest.raises(BlendflagError, match="common_psf_sigma"):
        _engine("common", common_psf_sigma=-1.0).measure(stamps, cube, SCALE, 0.0, None)
