"""Shapes from moments: Gaussian-weighted (``wmom``, metadetection's) and adaptive.

:func:`weighted_version_shapes` and :func:`adaptive_version_shapes` measure
one object's five metacal versions (the ``metacal`` engine's ``shape``).

For a stamp ``I``, a round Gaussian weight ``w`` of fixed size centred on the
detection (sub-pixel), and offsets ``dx, dy`` from that centre:

* flux ``F = sum(w I)``;
* second moments ``Mxx = sum(w I dx^2) / F`` (and ``Myy``, ``Mxy``), in arcsec^2;
* size ``T = Mxx + Myy`` and ellipticity ``e = (Mxx - Myy, 2 Mxy) / T``;
* ``S/N = F / (sigma sqrt(sum w^2))`` for white noise of sigma ``sigma``.

The moments are not corrected for the weight or the PSF: metacalibration's
response calibrates them, and a size cut compares ``T`` with the same
measurement of the reconvolution PSF (``T / T_psf``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: FWHM of a Gaussian in units of its sigma.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass
class WeightedMoments:
    """Per-stamp results of :func:`weighted_moments` (arrays of length n).

    Attributes
    ----------
    e1, e2 : numpy.ndarray
        Ellipticity of the weighted second moments.
    T : numpy.ndarray
        ``Mxx + Myy``, arcsec^2.
    flux : numpy.ndarray
        Weighted flux ``sum(w I)``, ADU.
    s2n : numpy.ndarray
        Signal-to-noise of the weighted flux.
    ok : numpy.ndarray
        bool: flux and T positive and every value finite.
    """

    e1: np.ndarray
    e2: np.ndarray
    T: np.ndarray
    flux: np.ndarray
    s2n: np.ndarray
    ok: np.ndarray


def weighted_moments(
    stamps: np.ndarray,
    centres: np.ndarray,
    weight_fwhm: float,
    pixel_scale: float,
    noise_sigma: float,
    recentre: int = 0,
    masks=None,
) -> WeightedMoments:
    """Gaussian-weighted moments of each stamp about its centre.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, S, S)`` stamps, ADU.
    centres : numpy.ndarray
        ``(n, 2)`` weight centres ``(x, y)`` in 0-based stamp pixels.
    weight_fwhm : float
        FWHM of the round Gaussian weight, arcsec.
    pixel_scale : float
        arcsec per pixel.
    noise_sigma : float
        Per-pixel noise sigma, ADU (0: S/N is infinite where the flux is positive).
    recentre : int
        Iterations that move each centre to the weighted first moment before
        measuring (a detection's isophotal centroid is noisy, and a weight
        off the light's centre changes the shape). [default: 0]
    masks : numpy.ndarray or None
        ``(n, S, S)`` factors in [0, 1] on the weight (down-weighted
        neighbours, :mod:`blendflag.shear.neighbour_weights`). [default: None]

    Returns
    -------
    WeightedMoments
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    n, ny, nx = stamps.shape
    centres = np.asarray(centres, dtype=np.float64).reshape(n, 2)
    sigma = weight_fwhm / FWHM_PER_SIGMA / pixel_scale  # pixels
    for iteration in range(recentre + 1):
        dx = (np.arange(nx)[None, :] - centres[:, 0:1])[:, None, :] * np.ones((1, ny, 1))
        dy = (np.arange(ny)[None, :] - centres[:, 1:2])[:, :, None] * np.ones((1, 1, nx))
        w = np.exp(-0.5 * (dx * dx + dy * dy) / (sigma * sigma))
        if masks is not None:
            w = w * masks
        wi = w * stamps
        if iteration < recentre:
            flux = wi.sum(axis=(1, 2))
            with np.errstate(invalid="ignore", divide="ignore"):
                shift = np.column_stack(
                    [(wi * dx).sum(axis=(1, 2)) / flux, (wi * dy).sum(axis=(1, 2)) / flux]
                )
            # a step only where it is finite and stays near the detection
            shift = np.where(np.isfinite(shift) & (np.abs(shift) < 2.0), shift, 0.0)
            centres = centres + shift
    flux = wi.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        mxx = (wi * dx * dx).sum(axis=(1, 2)) / flux
        myy = (wi * dy * dy).sum(axis=(1, 2)) / flux
        mxy = (wi * dx * dy).sum(axis=(1, 2)) / flux
        T = mxx + myy
        e1 = (mxx - myy) / T
        e2 = 2.0 * mxy / T
        norm = np.sqrt((w * w).sum(axis=(1, 2)))
        s2n = flux / (noise_sigma * norm) if noise_sigma > 0 else np.where(flux > 0, np.inf, 0.0)
    T = T * pixel_scale**2
    ok = (flux > 0) & (T > 0) & np.isfinite(e1) & np.isfinite(e2) & np.isfinite(T)
    return WeightedMoments(e1=e1, e2=e2, T=T, flux=flux, s2n=np.asarray(s2n, float), ok=ok)


def adaptive_weighted_flux(array, cen, sigma, e1, e2):
    """Adaptive-Gaussian weighted flux ``sum(w I)`` and ``sqrt(sum(w^2))``.

    The S/N of the weighted flux with white noise sigma is
    ``sum(w I) / (sigma sqrt(sum w^2))`` (the Admom definition); the weight
    is the adaptive elliptical Gaussian of distortion (e1, e2) and
    ``det(M)^(1/4) = sigma`` pixels, centred at ``cen`` (0-based x, y).
    """
    ny, nx = array.shape
    y, x = np.mgrid[0:ny, 0:nx]
    dx = x - cen[0]
    dy = y - cen[1]
    esq = e1 * e1 + e2 * e2
    if not esq < 1.0:
        return np.nan, np.nan
    # second moments of the weight: T (1 + e1)/2, T (1 - e1)/2, T e2 / 2
    T = 2.0 * sigma * sigma / math.sqrt(1.0 - esq)
    ixx = 0.5 * T * (1.0 + e1)
    iyy = 0.5 * T * (1.0 - e1)
    ixy = 0.5 * T * e2
    det = ixx * iyy - ixy * ixy
    rho2 = (iyy * dx * dx - 2.0 * ixy * dx * dy + ixx * dy * dy) / det
    w = np.exp(-0.5 * rho2)
    return float((w * array).sum()), float(np.sqrt((w * w).sum()))


#: Recentring iterations of :func:`weighted_version_shapes` in each version.
RECENTRE = 3


def adaptive_version_shapes(images, versions, pixel_scale, guess):
    """HSM adaptive moments of one object's metacal images (the ``admom`` shape).

    Parameters
    ----------
    images : dict
        ``{version: (S, S) array}``, ADU.
    versions : sequence of str
        The versions to measure, noshear first (its adaptive size seeds the others).
    pixel_scale : float
        arcsec per pixel.
    guess : float
        First guess of the adaptive sigma, pixels.

    Returns
    -------
    tuple or None
        ``(e, T, num, den)``: ``(n_versions, 2)`` distortions and, per
        version, ``(n_versions,)`` the size ``T`` (arcsec^2), the weighted
        flux ``num`` and ``den = sqrt(sum w^2)`` (S/N = num / (sigma den));
        None when a version's moments fail.
    """
    import galsim

    n = len(versions)
    e = np.full((n, 2), np.nan)
    T, num, den = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for k, version in enumerate(versions):
        moments = galsim.hsm.FindAdaptiveMom(
            galsim.ImageD(images[version], scale=pixel_scale), guess_sig=guess, strict=False
        )
        if moments.moments_status != 0 or moments.error_message:
            return None
        e[k] = moments.observed_shape.e1, moments.observed_shape.e2
        sigma = moments.moments_sigma
        if k == 0:
            guess = sigma  # the noshear size seeds the sheared versions
        # hsm centroids are in image coordinates (1-based)
        cen = (moments.moments_centroid.x - 1.0, moments.moments_centroid.y - 1.0)
        num[k], den[k] = adaptive_weighted_flux(images[version], cen, sigma, *e[k])
        esq = e[k] @ e[k]
        T[k] = 2.0 * sigma**2 / math.sqrt(1.0 - esq) * pixel_scale**2 if esq < 1 else np.nan
    return e, T, num, den


def weighted_version_shapes(
    images, versions, pixel_scale, weight_fwhm, start=(0.0, 0.0), masks=None
):
    """Gaussian-weighted moments of one object's metacal images (the ``wmom`` shape).

    One round weight of ``weight_fwhm`` arcsec, moved in each version to the
    light's weighted centroid (:data:`RECENTRE` steps from the detection's
    position ``start``), so each ellipticity is a smooth function of the pixels: it
    cannot fail or jump between the +g and -g images of a pair the way an
    adaptive fit can. The weight must follow the object into each sheared
    version: kept at the noshear centroid, an object off the stamp's centre
    moves under the metacal shear while its weight does not, which biased m
    by -0.008 (one centring step) and -0.021 (none) on isolated galaxies,
    against -0.00007 with each version recentred. The steps start at the
    detection's sub-pixel position, not at the stamp's central pixel: the
    central pixel jumps by one when a position crosses a half pixel between
    the +g and -g images, and three steps from starting points a pixel apart
    end in different places next to a neighbour (those jumps carried most of
    the variance of m on blended fields).

    Parameters
    ----------
    start : tuple of float
        The detection's position relative to the stamp's central pixel
        ``(S // 2, S // 2)``, ``(dx, dy)`` in pixels. [default: (0, 0)]
    masks : numpy.ndarray or None
        ``(len(versions), S, S)`` factors on each version's weight. [default: None]

    Returns
    -------
    tuple or None
        As :func:`adaptive_version_shapes` (``T``, ``num``, ``den`` per
        version); None when a flux or size is not positive.
    """
    stack = np.stack([images[v] for v in versions])
    ny, nx = stack.shape[1:]
    centres = np.tile([nx // 2 + start[0], ny // 2 + start[1]], (len(versions), 1))
    wm = weighted_moments(
        stack, centres, weight_fwhm, pixel_scale, 1.0, recentre=RECENTRE, masks=masks
    )
    if not wm.ok.all():
        return None
    # S/N = flux / (sigma sqrt(sum w^2)); at sigma 1 the moments' s2n is flux / norm
    e = np.column_stack([wm.e1, wm.e2])
    return e, np.array(wm.T, float), np.array(wm.flux, float), np.array(wm.flux / wm.s2n, float)


def version_shapes(images, pixel_scale, weight_fwhm, guess, start=(0.0, 0.0), masks=None):
    """The five metacal versions' shapes: ``wmom`` when ``weight_fwhm`` > 0, else ``admom``.

    See :func:`weighted_version_shapes` (``start``, ``masks``) and
    :func:`adaptive_version_shapes` (``guess``, pixels).
    """
    from blendflag.shear.results import METACAL_VERSIONS

    if weight_fwhm:
        return weighted_version_shapes(
            images, METACAL_VERSIONS, pixel_scale, weight_fwhm, start, masks
        )
    return adaptive_version_shapes(images, METACAL_VERSIONS, pixel_scale, guess)
