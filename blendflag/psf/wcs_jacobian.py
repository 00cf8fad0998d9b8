"""The local Jacobian of an image's WCS: pixel scale, rotation and skew at each object.

A survey tile's WCS (TAN with a CD matrix, possibly with distortion terms;
pixels rotated or sheared on the sky) maps pixel offsets to sky offsets.
:func:`local_jacobians` gives, at each 1-based pixel position, the matrix

    J = [[d xi / dx, d xi / dy], [d eta / dx, d eta / dy]]   (arcsec per pixel)

where ``xi`` is the offset towards the east (RA increasing, times cos Dec)
and ``eta`` towards the north: astropy's ``pixel_scale_matrix`` convention
(the CD matrix, in arcsec), evaluated locally by finite differences of
``pixel_to_world`` (so distortions are included).

blendflag measures shapes and shears in the **image frame** (the pixel x, y
axes), with the pixel scale ``sqrt(|det J|)`` at the objects
(:func:`pixel_scales`). :func:`image_to_sky_shear` turns an image-frame shear
into the sky frame whose first axis points west and second north (the image
frame of a north-up, east-left image: there it changes nothing); it is exact
for any J, sheared pixels included (the shear of a round source mapped
through J). astropy is imported inside the functions.
"""

from __future__ import annotations

import numpy as np


def celestial_wcs(header):
    """The header's celestial ``astropy.wcs.WCS``, or None when it has none."""
    if header is None:
        return None
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
    except Exception:  # noqa: BLE001 - a broken WCS is no WCS; the pixel scale comes from elsewhere
        return None
    return wcs if wcs.has_celestial else None


def local_jacobians(wcs, x, y, step: float = 0.5) -> np.ndarray:
    """The WCS Jacobian (arcsec per pixel, east/north x pixel x/y) at 1-based ``(x, y)``.

    Parameters
    ----------
    wcs : astropy.wcs.WCS or astropy.io.fits.Header
        A celestial WCS (or a header holding one).
    x, y : float or array_like
        1-based pixel positions (SExtractor's X_IMAGE, Y_IMAGE).
    step : float
        Half the finite-difference step, pixels. [default: 0.5]

    Returns
    -------
    numpy.ndarray
        ``(n, 2, 2)`` float64.

    Raises
    ------
    ValueError
        No celestial WCS.
    """
    from astropy.io import fits

    if isinstance(wcs, fits.Header):
        wcs = celestial_wcs(wcs)
    if wcs is None:
        raise ValueError("no celestial WCS")
    x = np.atleast_1d(np.asarray(x, dtype=np.float64)) - 1.0  # astropy: 0-based
    y = np.atleast_1d(np.asarray(y, dtype=np.float64)) - 1.0
    centre = wcs.pixel_to_world(x, y)
    jac = np.empty((len(x), 2, 2))
    for k, (dx, dy) in enumerate(((step, 0.0), (0.0, step))):
        plus = wcs.pixel_to_world(x + dx, y + dy)
        minus = wcs.pixel_to_world(x - dx, y - dy)
        east_p, north_p = centre.spherical_offsets_to(plus)
        east_m, north_m = centre.spherical_offsets_to(minus)
        jac[:, 0, k] = (east_p - east_m).to_value("arcsec") / (2 * step)
        jac[:, 1, k] = (north_p - north_m).to_value("arcsec") / (2 * step)
    return jac


def pixel_scales(jac) -> np.ndarray:
    """Pixel scale ``sqrt(|det J|)`` (arcsec) of each Jacobian."""
    jac = np.asarray(jac, dtype=np.float64).reshape(-1, 2, 2)
    return np.sqrt(np.abs(np.linalg.det(jac)))


def jacobian_summary(jac) -> dict:
    """Scale (arcsec), rotation of the x axis from west (degrees), skew and parity of a Jacobian.

    ``skew`` is the reduced shear the pixel grid itself imprints on a round
    source (0 for square pixels); ``parity`` is +1 for an image that shows the
    sky as seen (east left of north, like ``CD1_1 < 0``), -1 when mirrored.
    """
    j = np.asarray(jac, dtype=np.float64).reshape(2, 2)
    a = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ j  # (west, north) per pixel
    g1, g2 = _shape(a)
    return {
        "pixel_scale_arcsec": float(np.sqrt(abs(np.linalg.det(j)))),
        "rotation_deg": float(np.degrees(np.arctan2(a[1, 0], a[0, 0]))),
        "skew": float(np.hypot(g1, g2)),
        "parity": int(np.sign(np.linalg.det(a))),
    }


def _shape(a) -> tuple[float, float]:
    """Reduced shear (g1, g2) of the ellipse ``a @ unit circle``."""
    m = a @ a.T
    e1 = (m[0, 0] - m[1, 1]) / (m[0, 0] + m[1, 1])
    e2 = 2.0 * m[0, 1] / (m[0, 0] + m[1, 1])
    e = np.hypot(e1, e2)
    if e == 0:
        return 0.0, 0.0
    g = e / (1.0 + np.sqrt(1.0 - e * e))  # distortion -> reduced shear
    return float(e1 * g / e), float(e2 * g / e)


def image_to_sky_shear(g1: float, g2: float, jac) -> tuple[float, float]:
    """An image-frame reduced shear in the sky frame (west, north) through the Jacobian ``jac``.

    The image-frame shear is that of a round source sheared by ``(g1, g2)``
    in pixels; mapped through J (with east flipped to west) it is an ellipse
    on the sky whose reduced shear is returned. For J a rotation by ``theta``
    (square pixels) this is ``g e^(2 i theta)``; sheared pixels add their
    own skew (a source round on the sky is not round in such pixels).
    """
    import math

    g = math.hypot(g1, g2)
    if g >= 1:
        raise ValueError(f"|g| must be < 1, got {g}")
    s = np.array([[1.0 + g1, g2], [g2, 1.0 - g1]]) / math.sqrt(1.0 - g * g)
    j = np.asarray(jac, dtype=np.float64).reshape(2, 2)
    a = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ j
    return _shape(a @ s)
