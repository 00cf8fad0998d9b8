"""Isolated galaxies with a known shear, in 90-degree rotated pairs (tests, benchmarks).

GalSim is imported inside the function, never at import time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GalaxySet:
    """Isolated-galaxy stamps with a known shear (see :func:`isolated_galaxy_pairs`).

    Attributes
    ----------
    stamps : numpy.ndarray
        ``(n, S, S)`` float32, ADU.
    psf : numpy.ndarray
        PSF image (unit sum) at the same pixel scale.
    pixel_scale : float
        arcsec / pixel.
    noise_sigma : float
        Gaussian noise added per pixel, ADU.
    true_shear : tuple of float
        The applied (g1, g2).
    pair_id : numpy.ndarray
        Objects ``2k`` and ``2k + 1`` are a pair, the second rotated by 90 degrees.
    offsets : numpy.ndarray
        ``(n, 2)`` each galaxy's centre relative to its stamp's central pixel,
        ``(dx, dy)`` pixels (what a perfect detection gives an engine's ``offsets``).
    """

    stamps: np.ndarray
    psf: np.ndarray
    pixel_scale: float
    noise_sigma: float
    true_shear: tuple
    pair_id: np.ndarray
    offsets: np.ndarray


def isolated_galaxy_pairs(
    n_pairs: int,
    rng: np.random.Generator,
    true_shear=(0.02, 0.0),
    stamp_size: int = 51,
    pixel_scale: float = 0.187,
    psf_fwhm: float = 0.65,
    psf_shear=(0.0, 0.0),
    hlr_range=(0.3, 0.7),
    flux: float = 1.0e4,
    noise_sigma: float = 0.0,
    sigma_e: float = 0.25,
) -> GalaxySet:
    """Simple exponential galaxies in 90-degree rotated pairs, for tests and benchmarks.

    Each pair shares size, flux and sub-pixel offset; the second member's
    intrinsic shape is rotated by 90 degrees so intrinsic ellipticities
    cancel in the pair mean. Both are sheared by ``true_shear`` and convolved
    with a Moffat (beta 2.5) PSF.

    Parameters
    ----------
    n_pairs : int
        Number of pairs (``2 n_pairs`` stamps).
    rng : numpy.random.Generator
    true_shear : (float, float)
        Applied reduced shear. [default: (0.02, 0)]
    stamp_size : int
        Stamp side in pixels. [default: 51]
    pixel_scale : float
        arcsec / pixel. [default: 0.187, CFIS]
    psf_fwhm : float
        PSF FWHM in arcsec. [default: 0.65]
    psf_shear : (float, float)
        PSF ellipticity as a reduced shear. [default: round]
    hlr_range : (float, float)
        Uniform range of half-light radii, arcsec. [default: (0.3, 0.7)]
    flux : float
        Galaxy flux in ADU. [default: 1e4]
    noise_sigma : float
        Gaussian pixel noise in ADU; 0 for noiseless. [default: 0]
    sigma_e : float
        Per-component rms of the intrinsic shear. [default: 0.25]
    """
    import galsim

    psf_obj = galsim.Moffat(beta=2.5, fwhm=psf_fwhm).shear(g1=psf_shear[0], g2=psf_shear[1])
    psf_img = psf_obj.drawImage(nx=stamp_size, ny=stamp_size, scale=pixel_scale).array
    psf_img = psf_img / psf_img.sum()
    stamps = np.empty((2 * n_pairs, stamp_size, stamp_size), dtype=np.float32)
    image = galsim.ImageD(stamp_size, stamp_size, scale=pixel_scale)
    offsets = np.empty((2 * n_pairs, 2))
    for k in range(n_pairs):
        hlr = rng.uniform(*hlr_range)
        while True:
            g = rng.normal(0.0, sigma_e, size=2)
            if np.hypot(*g) < 0.7:
                break
        offset = rng.uniform(-0.5, 0.5, size=2)
        # galsim's offset is from the true centre, the central pixel of an odd stamp
        offsets[2 * k : 2 * k + 2] = offset + (stamp_size - 1) / 2.0 - stamp_size // 2
        for j, angle in enumerate((0.0, 90.0)):
            gal = galsim.Exponential(half_light_radius=hlr, flux=flux).shear(g1=g[0], g2=g[1])
            gal = gal.rotate(angle * galsim.degrees).shear(g1=true_shear[0], g2=true_shear[1])
            galsim.Convolve(gal, psf_obj).drawImage(image=image, offset=offset)
            stamps[2 * k + j] = image.array
    if noise_sigma > 0:
        stamps += rng.normal(0.0, noise_sigma, size=stamps.shape).astype(np.float32)
    return GalaxySet(
        stamps=stamps,
        psf=psf_img,
        pixel_scale=pixel_scale,
        noise_sigma=float(noise_sigma),
        true_shear=(float(true_shear[0]), float(true_shear[1])),
        pair_id=np.repeat(np.arange(n_pairs), 2),
        offsets=offsets,
    )
