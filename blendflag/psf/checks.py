"""PSF images checked at the door: size, centre, extent, flux, normalisation.

A PSF image that is off-centre, even-sized or cut too small does not fail in
the shear measurement: it gives wrong responses (a PSF 2 px off-centre turned
R11 = 1.12 into 0.60). :func:`check_psf_image` therefore refuses, with one
line that says by how much, any PSF image that

- is not a 2-d array, or holds NaN/inf pixels, or has no positive flux;
- has an even side (its centre falls between pixels);
- has its centroid more than 0.1 px from the central pixel;
- is smaller than :data:`MIN_SIDE_FWHM` times its FWHM on a side.

With ``recentre=True`` (``--recentre-psf``) an even-sized image is padded to
an odd size and an off-centre one shifted onto the central pixel (quintic
interpolation, GalSim's ``InterpolatedImage``), each with a logged note. A PSF whose sum
is not 1 is normalised to sum 1 with a logged note (shapes do not depend on
the PSF's flux, so normalising changes no measurement; the note says so).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from blendflag.errors import CatalogueError

log = logging.getLogger(__name__)

#: Largest distance (pixels) of the PSF's centroid from the central pixel.
CENTRE_TOLERANCE = 0.1
#: Smallest side of a PSF image, in units of its FWHM.
MIN_SIDE_FWHM = 3.0
#: Largest side (pixels): a bigger image is a science image, not a PSF stamp.
MAX_SIDE = 256
#: Relative departure of the sum from 1 that is normalised with a note.
NORM_TOLERANCE = 1e-3


def psf_centroid(psf: np.ndarray) -> tuple[float, float]:
    """Flux-weighted centroid ``(x, y)`` in pixels (0-based), negative pixels ignored."""
    w = np.clip(np.asarray(psf, dtype=np.float64), 0.0, None)
    total = w.sum()
    ny, nx = w.shape
    x = float((w.sum(axis=0) * np.arange(nx)).sum() / total)
    y = float((w.sum(axis=1) * np.arange(ny)).sum() / total)
    return x, y


def psf_fwhm(psf: np.ndarray) -> float:
    """FWHM in pixels from the area above half the peak: ``2 sqrt(area / pi)``."""
    psf = np.asarray(psf, dtype=np.float64)
    area = int((psf >= 0.5 * psf.max()).sum())
    return 2.0 * math.sqrt(area / math.pi)


def _offset(psf) -> tuple[float, float]:
    ny, nx = psf.shape
    x, y = psf_centroid(psf)
    return x - (nx - 1) / 2.0, y - (ny - 1) / 2.0


def _pad_to_odd(psf: np.ndarray, name: str) -> np.ndarray:
    ny, nx = psf.shape
    out = np.zeros((ny + (1 - ny % 2), nx + (1 - nx % 2)), dtype=np.float64)
    out[: psf.shape[0], : psf.shape[1]] = psf
    log.info("%s is %dx%d: padded to %dx%d to re-centre it", name, nx, ny, *out.shape[::-1])
    return out


def _shifted(psf: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``psf`` moved by (dx, dy) pixels: GalSim's interpolated image (quintic), flux kept."""
    import galsim

    ny, nx = psf.shape
    profile = galsim.InterpolatedImage(galsim.Image(psf, scale=1.0)).shift(dx, dy)
    return profile.drawImage(nx=nx, ny=ny, scale=1.0, method="no_pixel").array.astype(np.float64)


def check_psf_image(
    psf,
    name: str = "PSF image",
    recentre: bool = False,
    tolerance: float = CENTRE_TOLERANCE,
    min_side_fwhm: float = MIN_SIDE_FWHM,
) -> np.ndarray:
    """Check a PSF image (and re-centre it if asked); return it normalised to sum 1.

    Parameters
    ----------
    psf : array_like
        The PSF image (pixel response included), at the science image's pixel scale.
    name : str
        How messages name it, e.g. ``"PSF image psf.fits"``.
    recentre : bool
        Pad an even-sized image to an odd size and shift an off-centre one
        onto the central pixel (logged) instead of refusing it. [default: False]
    tolerance : float
        Largest centroid offset from the central pixel, pixels. [default: 0.1]
    min_side_fwhm : float
        Smallest side in FWHMs. [default: 3]

    Returns
    -------
    numpy.ndarray
        float64, odd-sized, centred, summing to 1.

    Raises
    ------
    CatalogueError
        One line naming the problem and by how much.
    """
    psf = np.array(psf, dtype=np.float64)
    _check_pixels(psf, name)
    psf = _odd_sided(psf, name, recentre)
    psf = _centred(psf, name, recentre, tolerance)
    _check_extent(psf, name, min_side_fwhm)
    total = float(psf.sum())
    if abs(total - 1.0) > NORM_TOLERANCE:
        log.info("%s sums to %.4g: normalised to 1 (shapes do not depend on it)", name, total)
    return psf / total


def _check_pixels(psf: np.ndarray, name: str) -> None:
    """Refuse a PSF that is not a 2-d stamp of finite pixels with positive flux (ADU or any unit).

    Raises
    ------
    CatalogueError
        Not 2-d, more than :data:`MAX_SIDE` pixels a side, NaN/inf pixels, or
        no positive sum or peak.
    """
    if psf.ndim != 2:
        raise CatalogueError(f"{name} is {psf.ndim}-d: a PSF is a 2-d image")
    ny, nx = psf.shape
    if max(nx, ny) > MAX_SIDE:
        raise CatalogueError(f"{name} is {nx}x{ny}: expected a PSF stamp, not an image")
    n_bad = int((~np.isfinite(psf)).sum())
    if n_bad:
        raise CatalogueError(f"{name} has {n_bad} NaN/inf pixels")
    total = float(psf.sum())
    if not total > 0 or float(psf.max()) <= 0:
        raise CatalogueError(f"{name} has no positive flux (sum {total:.3g})")


def _odd_sided(psf: np.ndarray, name: str, recentre: bool) -> np.ndarray:
    """``psf`` if both its sides (pixels) are odd, else padded to odd sides with ``recentre``.

    Raises
    ------
    CatalogueError
        A side is even and ``recentre`` is False.
    """
    ny, nx = psf.shape
    if nx % 2 and ny % 2:
        return psf
    if not recentre:
        raise CatalogueError(
            f"{name} is {nx}x{ny}: a PSF image needs odd sides (its centre on a pixel); "
            "pass --recentre-psf to pad and re-centre it"
        )
    return _pad_to_odd(psf, name)


def _centred(psf: np.ndarray, name: str, recentre: bool, tolerance: float) -> np.ndarray:
    """``psf`` if its centroid is within ``tolerance`` pixels of the central pixel, else shifted.

    With ``recentre`` an off-centre PSF is shifted onto its central pixel (logged).

    Raises
    ------
    CatalogueError
        Off-centre and ``recentre`` is False, or still off-centre after the shift.
    """
    dx, dy = _offset(psf)
    if not math.hypot(dx, dy) > tolerance:
        return psf
    if not recentre:
        raise CatalogueError(
            f"{name}'s centroid is {math.hypot(dx, dy):.2f} px from its central pixel "
            f"(dx {dx:+.2f}, dy {dy:+.2f}; at most {tolerance:g} px); centre it or "
            "pass --recentre-psf"
        )
    psf = _shifted(psf, -dx, -dy)
    log.info("%s shifted by (%+.2f, %+.2f) px onto its central pixel", name, -dx, -dy)
    dx, dy = _offset(psf)
    if math.hypot(dx, dy) > tolerance:
        raise CatalogueError(
            f"{name} could not be re-centred (still {math.hypot(dx, dy):.2f} px off): "
            "is the PSF cut off by the image's edge?"
        )
    return psf


def _check_extent(psf: np.ndarray, name: str, min_side_fwhm: float) -> None:
    """Refuse a PSF whose smaller side is under ``min_side_fwhm`` times its FWHM (pixels).

    Raises
    ------
    CatalogueError
        The stamp cuts the PSF too small.
    """
    ny, nx = psf.shape
    fwhm = psf_fwhm(psf)
    if min(nx, ny) < min_side_fwhm * fwhm:
        raise CatalogueError(
            f"{name} is {nx}x{ny} for a FWHM of {fwhm:.1f} px: it needs at least "
            f"{min_side_fwhm:g} FWHM ({math.ceil(min_side_fwhm * fwhm)} px) on a side"
        )
