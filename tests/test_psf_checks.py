"""PSF images checked at the door: each failure the issue measured is refused (or re-centred)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from blendflag.errors import CatalogueError
from blendflag.psf.checks import check_psf_image, psf_centroid

FWHM = 3.5  # pixels, about the CFIS preset's PSF


def gaussian_psf(size=51, dx=0.0, dy=0.0, fwhm=FWHM, flux=1.0):
    """A Gaussian PSF whose centre is (dx, dy) px from the central pixel (odd) or point."""
    sigma = fwhm / 2.3548
    c = (size - 1) / 2.0
    y, x = np.mgrid[:size, :size]
    img = np.exp(-((x - c - dx) ** 2 + (y - c - dy) ** 2) / (2 * sigma**2))
    return flux * img / img.sum()


def test_a_centred_normalised_psf_passes_unchanged():
    psf = gaussian_psf()
    out = check_psf_image(psf)
    np.testing.assert_allclose(out, psf, rtol=1e-12)


@pytest.mark.parametrize("offset", [1.0, 2.0, 15.0])
def test_an_off_centre_psf_is_refused_saying_by_how_much(offset):
    with pytest.raises(CatalogueError, match=rf"{offset:.2f} px from its central pixel"):
        check_psf_image(gaussian_psf(dx=offset), "PSF image p.fits")


def test_a_small_offset_within_a_tenth_of_a_pixel_passes():
    check_psf_image(gaussian_psf(dx=0.05, dy=-0.05))


@pytest.mark.parametrize("offset", [1.0, 2.0])
def test_recentre_psf_shifts_it_onto_the_central_pixel(offset, caplog):
    with caplog.at_level(logging.INFO, logger="blendflag"):
        out = check_psf_image(gaussian_psf(dx=offset, dy=-0.5 * offset), recentre=True)
    x, y = psf_centroid(out)
    assert abs(x - 25) < 0.02 and abs(y - 25) < 0.02
    np.testing.assert_allclose(
        out, gaussian_psf(), atol=1e-2 * out.max()
    )  # interpolation of a 3.5 px FWHM
    assert "shifted" in caplog.text


def test_an_even_psf_is_refused_and_recentred_on_request():
    even = gaussian_psf(size=50)  # centre between pixels 24 and 25
    with pytest.raises(CatalogueError, match="50x50: a PSF image needs odd sides"):
        check_psf_image(even)
    out = check_psf_image(even, recentre=True)
    assert out.shape == (51, 51)
    x, y = psf_centroid(out)
    assert abs(x - 25) < 0.02 and abs(y - 25) < 0.02


def test_a_3x3_psf_is_too_small_for_its_fwhm():
    tiny = gaussian_psf(size=51)[24:27, 24:27]
    with pytest.raises(CatalogueError, match="3x3 for a FWHM of"):
        check_psf_image(tiny)


def test_nan_pixels_are_refused():
    psf = gaussian_psf()
    psf[3, 4] = np.nan
    with pytest.raises(CatalogueError, match="1 NaN/inf pixels"):
        check_psf_image(psf)


@pytest.mark.parametrize("flux", [0.0, -1.0])
def test_no_positive_flux_is_refused(flux):
    with pytest.raises(CatalogueError, match="no positive flux"):
        check_psf_image(gaussian_psf() * flux)


def test_an_unnormalised_psf_is_normalised_with_a_note(caplog):
    with caplog.at_level(logging.INFO, logger="blendflag"):
        out = check_psf_image(gaussian_psf(flux=250.0))
    assert out.sum() == pytest.approx(1.0)
    assert "normalised to 1" in caplog.text


def test_a_science_image_is_no_psf():
    with pytest.raises(CatalogueError, match="not an image"):
        check_psf_image(gaussian_psf(size=301))
