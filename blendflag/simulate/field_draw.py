"""Drawing a field's galaxies (in worker processes) and stars: noiseless stamps and footprints."""

from __future__ import annotations

import math

import numpy as np

from blendflag.simulate.galaxies import galaxy_object, make_psf
from blendflag.simulate.presets import DatasetConfig


def _stamp_side(config: DatasetConfig, hlr_arcsec: float) -> int:
    """Side of the postage stamp a field galaxy is drawn into (odd, pixels)."""
    psf_px = (
        2.0
        * max(
            config.psf.fwhm if config.psf.type != "airy" else 1.03 * config.psf.lam_over_diam, 0.1
        )
        / config.pixel_scale
    )
    side = math.ceil(2 * (8.0 * hlr_arcsec / config.pixel_scale + 2 * psf_px)) | 1
    return min(max(side, 33), 201)


def _draw_field_chunk(
    config: DatasetConfig, params: list, xs, ys, shear, thresh: float, psf_at=None, build=None
):
    """Draw galaxies (in a worker).

    ``psf_at`` (a :class:`~blendflag.simulate.psf_variation.VaryingPSF` or
    None) gives each galaxy the PSF at its position; None: the preset's PSF.
    ``build(params, gsparams, shear)`` makes one galaxy's GalSim profile
    [default: :func:`blendflag.simulate.galaxies.galaxy_object` with the
    preset's galaxy settings].

    Returns
    -------
    list of (x0, y0, image, fx0, fy0, footprint)
        Per galaxy: the noiseless stamp with the 1-based image coordinates of
        its first pixel, and its footprint (pixels above ``thresh``) cropped to
        its bounding box, with that box's first pixel (empty: a 0x0 array).
    """
    import galsim

    gsparams = galsim.GSParams(folding_threshold=config.folding_threshold)
    psf = make_psf(config, gsparams)
    out = []
    for p, x, y in zip(params, xs, ys, strict=True):
        if build is None:
            gal = galaxy_object(p, config.galaxy, gsparams, shear=shear)
        else:
            gal = build(p, gsparams, shear)
        side = _stamp_side(config, p["hlr"])
        if psf_at is not None:
            psf = psf_at.profile_at(x, y, gsparams)
        stamp = galsim.Convolve(gal, psf, gsparams=gsparams).drawImage(
            nx=side, ny=side, scale=config.pixel_scale, center=galsim.PositionD(x, y)
        )
        arr = stamp.array
        x0, y0 = stamp.bounds.xmin, stamp.bounds.ymin
        out.append((x0, y0, arr, *footprint(arr, x0, y0, thresh)))
    return out


def draw_stars(config: DatasetConfig, fluxes, xs, ys, thresh: float, psf_at=None):
    """Draw stars: the PSF (at each position with ``psf_at``) times each flux (ADU).

    Returns the same list as :func:`_draw_field_chunk`; the stamps are
    :data:`STAR_STAMP` pixels a side (the Moffat wings of a bright star).
    """
    import galsim

    gsparams = galsim.GSParams(folding_threshold=config.folding_threshold)
    psf = make_psf(config, gsparams)
    out = []
    for flux, x, y in zip(fluxes, xs, ys, strict=True):
        if psf_at is not None:
            psf = psf_at.profile_at(x, y, gsparams)
        stamp = psf.withFlux(float(flux)).drawImage(
            nx=STAR_STAMP, ny=STAR_STAMP, scale=config.pixel_scale, center=galsim.PositionD(x, y)
        )
        arr = stamp.array
        x0, y0 = stamp.bounds.xmin, stamp.bounds.ymin
        out.append((x0, y0, arr, *footprint(arr, x0, y0, thresh)))
    return out


#: Side of a star's stamp, pixels.
STAR_STAMP = 65


def draw_field_task(start: int, *args):
    """``(start, _draw_field_chunk(*args))``: the first galaxy's index travels with the result."""
    return start, _draw_field_chunk(*args)


def stamp_signal(arr: np.ndarray) -> float:
    """sqrt(sum I^2) of a noiseless stamp (ADU): its optimal S/N times the noise sigma."""
    return float(np.sqrt(np.sum(np.square(arr, dtype=np.float64))))


def footprint(arr: np.ndarray, x0: int, y0: int, thresh: float) -> tuple:
    """The pixels of a noiseless stamp above ``thresh``, cropped to their bounding box.

    Parameters
    ----------
    arr : numpy.ndarray
        Noiseless stamp (ADU per pixel) whose first pixel is at 1-based ``(x0, y0)``.
    thresh : float
        Isophote (ADU per pixel).

    Returns
    -------
    (fx0, fy0, mask)
        The box's first pixel and the bool footprint (a 0x0 array when empty).
    """
    mask = arr > thresh
    ys_, xs_ = np.nonzero(mask)
    if not len(xs_):
        return x0, y0, np.zeros((0, 0), dtype=bool)
    x_lo, y_lo = xs_.min(), ys_.min()
    return (
        x0 + int(x_lo),
        y0 + int(y_lo),
        mask[y_lo : ys_.max() + 1, x_lo : xs_.max() + 1],
    )
