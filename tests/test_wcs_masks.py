"""WCS Jacobians (rotated and sheared pixels) and masks (weight 0, flag maps, edges)."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from blendflag.flagging.flaggers import Flagger, FlagResult
from blendflag.io.catalog import read_catalogue
from blendflag.io.stamps import STAMP_EDGE, STAMP_MASKED, STAMP_NONFINITE, cut_stamps, stamp_flags
from blendflag.psf.wcs_jacobian import (
    image_to_sky_shear,
    jacobian_summary,
    local_jacobians,
    pixel_scales,
)
from tests.conftest import gaussian_image, run_cli


def tan_header(theta_deg=30.0, skew=0.05, scale=0.187, shape=(400, 400)):
    """A TAN header whose pixels are rotated by ``theta_deg`` and sheared by ``skew``."""
    s, t = scale / 3600.0, math.radians(theta_deg)
    h = fits.Header()
    h.update(
        CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.0, CRVAL2=30.0,
        CRPIX1=shape[1] / 2 + 0.5, CRPIX2=shape[0] / 2 + 0.5,
        CD1_1=-s * math.cos(t), CD1_2=s * math.sin(t) * (1 + skew),
        CD2_1=s * math.sin(t), CD2_2=s * math.cos(t),
    )  # fmt: skip
    return h


def test_jacobian_of_rotated_sheared_pixels_matches_astropy():
    header = tan_header()
    wcs = WCS(header)
    jac = local_jacobians(header, header["CRPIX1"], header["CRPIX2"])[0]
    np.testing.assert_allclose(jac, wcs.pixel_scale_matrix * 3600.0, rtol=1e-7)
    scales = proj_plane_pixel_scales(wcs) * 3600.0
    np.testing.assert_allclose(np.hypot(jac[0], jac[1]), scales, rtol=1e-7)  # column norms
    assert pixel_scales(jac)[0] == pytest.approx(
        math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0
    )
    info = jacobian_summary(jac)
    assert info["rotation_deg"] == pytest.approx(30.0) and info["parity"] == 1
    assert info["skew"] > 0.01
    # away from the tangent point the projection changes it a little, continuously
    far = local_jacobians(wcs, [1.0, 400.0], [1.0, 400.0])
    assert np.all(np.abs(far - jac) < 1e-3 * 0.187) and np.any(far != jac)


def test_image_to_sky_shear():
    square = np.array([[-0.187, 0.0], [0.0, 0.187]])  # north up, east left: the same frame
    assert image_to_sky_shear(0.02, -0.01, square) == pytest.approx((0.02, -0.01))
    t = math.radians(30.0)
    rot = 0.187 * np.array([[-math.cos(t), math.sin(t)], [math.sin(t), math.cos(t)]])
    g1, g2 = image_to_sky_shear(0.02, 0.0, rot)
    assert (g1, g2) == pytest.approx((0.02 * math.cos(2 * t), 0.02 * math.sin(2 * t)))


def test_file_input_takes_the_pixel_scale_from_the_local_jacobian(tmp_path):
    from blendflag.pipeline.field_input import file_input

    image = gaussian_image((400, 400), [(200.0, 200.0)])
    fits.PrimaryHDU(image, header=tan_header()).writeto(tmp_path / "img.fits")
    psf = np.zeros((11, 11), dtype=np.float32)
    psf[4:7, 4:7] = 1
    fits.PrimaryHDU(psf).writeto(tmp_path / "psf.fits")
    data = file_input(tmp_path / "img.fits", tmp_path / "psf.fits")
    wcs = data.description["wcs"]
    assert data.description["shear_frame"].startswith("image")
    assert wcs["rotation_deg"] == pytest.approx(30.0, abs=1e-3)
    assert data.pixel_scale == pytest.approx(wcs["pixel_scale_arcsec"])
    t = math.radians(30.0)  # sqrt(|det CD|) at the tangent point, the image centre
    det = math.cos(t) ** 2 + 1.05 * math.sin(t) ** 2
    assert data.pixel_scale == pytest.approx(0.187 * math.sqrt(det), rel=1e-6)


def test_stamp_flags_without_stamps_equal_cut_stamps():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(120, 150)).astype(np.float32)
    weight = np.ones_like(image)
    weight[40:50, 60:90] = 0
    image[100, 10] = np.nan
    x, y = rng.uniform(1, 150, 300), rng.uniform(1, 120, 300)
    _, expect = cut_stamps(image, x, y, 21, weight=weight)
    np.testing.assert_array_equal(stamp_flags(image, x, y, 21, weight=weight), expect)
    assert (expect & STAMP_MASKED).any() and (expect & STAMP_EDGE).any()


class SpyFlagger(Flagger):
    """Records the largest absolute pixel it is given."""

    name = "spy"
    needs_stamps = True
    seen: ClassVar[list] = []

    def flag_stamps(self, stamps, noise_sigma=None):
        SpyFlagger.seen.append(float(np.nanmax(np.abs(stamps))))
        return FlagResult(flag=np.zeros(len(stamps), dtype=bool))


@pytest.fixture
def masked_pair(tmp_path):
    """The same image twice: masked block zero in one, 1e30 and NaN in the other; flag map."""
    rng = np.random.default_rng(7)
    positions = [(60.0, 60.0), (140.0, 60.0), (60.0, 140.0), (140.0, 140.0), (100.0, 100.0),
                 (6.0, 100.0)]  # fmt: skip
    clean = gaussian_image((200, 200), positions, noise=5.0, rng=rng)
    flag_map = np.zeros(clean.shape, dtype=np.int32)
    flag_map[120:135, 150:175] = 4  # inside the stamp of the source at (140, 140)
    dirty = clean.copy()
    dirty[120:135, 150:175] = 1e30
    dirty[125, 160] = np.nan
    clean[120:135, 150:175] = 0.0
    weight = np.full(clean.shape, 1 / 25.0, dtype=np.float32)
    paths = {}
    for name, arr in (("clean", clean), ("dirty", dirty), ("weight", weight), ("flags", flag_map)):
        paths[name] = tmp_path / f"{name}.fits"
        fits.PrimaryHDU(arr).writeto(paths[name])
    psf = gaussian_image((25, 25), [(12.0, 12.0)], flux=1.0, noise=0.0)
    fits.PrimaryHDU(psf).writeto(tmp_path / "psf.fits")
    cat = Table({"X_IMAGE": [p[0] + 1 for p in positions], "Y_IMAGE": [p[1] + 1 for p in positions],
                 "FLAGS": np.zeros(len(positions), dtype=np.int16)})  # fmt: skip
    cat.write(tmp_path / "cat.fits")
    return {**paths, "psf": tmp_path / "psf.fits", "cat": tmp_path / "cat.fits", "tmp": tmp_path}


def test_masked_pixels_never_reach_a_flagger(masked_pair):
    from blendflag.config import PipelineConfig
    from blendflag.pipeline.stages import flag_catalogue_file
    from blendflag.plugins import get_plugin_manager

    pm, config = get_plugin_manager(), PipelineConfig()
    SpyFlagger.seen.clear()
    ctx = flag_catalogue_file(
        pm, config, [SpyFlagger()], masked_pair["cat"], masked_pair["dirty"],
        masked_pair["weight"], masked_pair["flags"],
    )  # fmt: skip
    assert SpyFlagger.seen and max(SpyFlagger.seen) < 1e4  # no 1e30, no NaN
    flags = ctx.annotation.columns["STAMP_FLAGS"]
    assert flags[3] & STAMP_MASKED and flags[5] & STAMP_EDGE and flags[0] == 0


def test_masked_pixels_never_reach_a_measurement(masked_pair, capsys, monkeypatch):
    p = masked_pair
    # the two files are one image to the measurement: seed both with the same
    # correction fields (by default each file's own bytes seed its draws)
    monkeypatch.setattr("blendflag.io.images.image_identity", lambda path: "sha256:same")
    outs = {}
    for name in ("clean", "dirty"):
        outs[name] = p["tmp"] / f"out_{name}.fits"
        code, _, err = run_cli(
            ["compare", "--image", p[name], "--psf", p["psf"], "--catalogue", p["cat"],
             "--weight", p["weight"], "--flag-map", p["flags"], "--pixel-scale", 0.187,
             "--flaggers", "sextractor", "--workers", 1, "--bootstrap", 10, "--quiet",
             "--catalogue-out", outs[name]],
            capsys,
        )  # fmt: skip
        assert code == 0, err
    clean, dirty = (read_catalogue(outs[n]).table for n in ("clean", "dirty"))
    assert clean.colnames == dirty.colnames
    for col in clean.colnames:
        if col != "STAMP_FLAGS":
            np.testing.assert_array_equal(np.asarray(clean[col]), np.asarray(dirty[col]), col)
    # the dirty image's masked NaN adds only the non-finite bit to that stamp
    np.testing.assert_array_equal(clean["STAMP_FLAGS"] | STAMP_NONFINITE * (np.arange(6) == 3),
                                  dirty["STAMP_FLAGS"])  # fmt: skip
    assert clean["MCAL_FLAGS"][3] != 0 and clean["STAMP_FLAGS"][3] & STAMP_MASKED
    assert np.isfinite(clean["G1_NOSHEAR"][0])


def test_masked_pixels_are_never_detected(masked_pair, capsys):
    p = masked_pair
    cats = {}
    for name in ("clean", "dirty"):
        cats[name] = p["tmp"] / f"det_{name}.fits"
        code, _, err = run_cli(
            ["detect", p[name], "--flag-map", p["flags"], "--out", cats[name]], capsys
        )
        assert code == 0, err
    clean, dirty = (read_catalogue(cats[n]).table for n in ("clean", "dirty"))
    np.testing.assert_array_equal(clean["X_IMAGE"], dirty["X_IMAGE"])
    x, y = np.asarray(dirty["X_IMAGE"]), np.asarray(dirty["Y_IMAGE"])
    assert not np.any((x > 150) & (x < 176) & (y > 120) & (y < 136))  # nothing in the block
