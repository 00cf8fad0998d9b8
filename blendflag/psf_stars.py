"""Stars for PSFEx: the stellar locus of a SExtractor catalogue, followed across the image.

PSFEx's own choice (``SAMPLE_AUTOSELECT``: sources within ``SAMPLE_VARIABILITY``
of the mode of their FWHM) takes compact galaxies when the PSF varies across
the image: on a simulated CFIS tile (50,000 galaxies, 3,000 stars, PSF FWHM
+-14 % across it) it accepted 5,299 "stars" and its model came out 50-80 %
too large in adaptive size. Stars are the smallest bright sources at every
position, so :func:`stellar_locus` follows their ``FLUX_RADIUS`` across the
image with a quadratic surface in (x, y):

1. candidates: ``FLAGS == 0``, ``SNR_WIN >= min_snr``, finite positive radius;
2. a first guess: radii below 1.35 x the candidates' 2nd percentile (the
   PSF's smallest size plus its variation across a tile);
3. fit the surface to the selected radii and keep the candidates within a
   band around it, narrowing the band from 15 % to ``band`` over five fits.

On that tile (truth-matched) it keeps 2,089 sources of which 96.5 % are
stars (2,015 of the 2,628 detected; the rest are nearly point-like
galaxies).
"""

from __future__ import annotations

import numpy as np

#: Band widths (relative) of the successive fits, the last replaced by ``band``.
WIDTHS = (0.15, 0.10, 0.07)
#: First guess: radii below this many times the candidates' 2nd percentile.
FIRST_GUESS = 1.35


def _surface(x, y) -> np.ndarray:
    return np.column_stack([np.ones_like(x), x, y, x * x, x * y, y * y])


def stellar_locus(x, y, radius, snr, flags, min_snr: float = 50.0, band: float = 0.05):
    """Which sources lie on the stellar locus (bool array).

    Parameters
    ----------
    x, y : array_like
        Positions, pixels (``X_IMAGE``, ``Y_IMAGE``).
    radius : array_like
        Half-light radius, pixels (``FLUX_RADIUS``).
    snr : array_like
        S/N (``SNR_WIN``).
    flags : array_like
        SExtractor ``FLAGS``; only 0 is a candidate.
    min_snr : float
        Faintest candidate. [default: 50]
    band : float
        Half-width of the final band around the locus, relative. [default: 0.05]

    Returns
    -------
    numpy.ndarray
        bool, True for the stars; all False when fewer than 10 candidates.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    radius = np.asarray(radius, dtype=np.float64)
    cand = (np.asarray(flags) == 0) & (np.asarray(snr) >= min_snr)
    cand &= np.isfinite(radius) & (radius > 0) & np.isfinite(x) & np.isfinite(y)
    if cand.sum() < 10:
        return np.zeros(len(radius), dtype=bool)
    scale = max(np.ptp(x[cand]), np.ptp(y[cand]), 1.0)  # conditioning of the fit
    u, v = (x - x[cand].min()) / scale, (y - y[cand].min()) / scale
    selected = cand & (radius < FIRST_GUESS * np.percentile(radius[cand], 2))
    design = _surface(u, v)
    for width in (*WIDTHS, band, band):
        if selected.sum() < design.shape[1]:
            return np.zeros(len(radius), dtype=bool)
        coef, *_ = np.linalg.lstsq(design[selected], radius[selected], rcond=None)
        selected = cand & (np.abs(radius / (design @ coef) - 1.0) < width)
    return selected


def write_star_catalogue(source, target, min_snr: float = 50.0, band: float = 0.05) -> int:
    """Copy a FITS_LDAC catalogue keeping only its stellar-locus rows; return how many.

    Every HDU is kept (``LDAC_IMHEAD`` included, which PSFEx reads); the
    objects HDU is the last table HDU.
    """
    from astropy.io import fits

    from blendflag.atomic import atomic_output

    with fits.open(source) as hdul:
        index = max(i for i, h in enumerate(hdul) if isinstance(h, fits.BinTableHDU))
        data = hdul[index].data
        keep = stellar_locus(
            data["X_IMAGE"], data["Y_IMAGE"], data["FLUX_RADIUS"], data["SNR_WIN"],
            data["FLAGS"], min_snr, band,
        )  # fmt: skip
        hdul[index] = fits.BinTableHDU(data[keep], header=hdul[index].header)
        with atomic_output(target) as part:
            hdul.writeto(part)
    return int(keep.sum())
