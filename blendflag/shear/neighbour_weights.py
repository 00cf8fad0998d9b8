"""Neighbours down-weighted in each metacal version, by light models that follow its shear.

``shear.neighbour_pixels: model`` (with ``shear.neighbours: mask``) does not
fill any pixel. Each object's stamp keeps its neighbours' light; the shape's
weight is lowered where a neighbour's catalogue model (an elliptical Gaussian
of FLUX_AUTO, A_IMAGE, B_IMAGE, THETA_IMAGE) outshines the object's own, and
the models are sheared with each metacal version before the comparison, so
the boundary moves with the version's shear as a boundary drawn on a sheared
image would, and the selection response of the mask is in R. The boundary
is smooth (logistic in the log of the light ratio), so a small shear cannot
move it by whole pixels, as it moves a segmentation map's. Far from both
sources the models' tails decide, where the shape's Gaussian weight is small.

- :func:`neighbour_models`: per object, its own model and its neighbours', in
  its stamp's pixels;
- :func:`version_weight`: the factor in [0, 1] on one version's stamp;
- :func:`version_weights`: the five versions' factors.
"""

from __future__ import annotations

import numpy as np

from blendflag.errors import BlendflagError

#: Catalogue columns of the light models.
MODEL_COLUMNS = ("FLUX_AUTO", "A_IMAGE", "B_IMAGE", "THETA_IMAGE")
#: Neighbours kept per object (the brightest nearby, by their light at the object).
MAX_NEIGHBOURS = 15
#: Width of the logistic transitions, in the natural log of the light.
SOFTNESS = 0.5
#: Floor of a model's galaxy variance once the PSF's is taken out (pixels^2).
MIN_VARIANCE = 0.01


def catalogue_models(table, mode: str = "model") -> np.ndarray:
    """``(n, 4)`` FLUX_AUTO (ADU), A_IMAGE, B_IMAGE (pixels), THETA_IMAGE (degrees).

    Raises
    ------
    BlendflagError
        A column is missing (the message names ``shear.neighbour_pixels: mode``).
    """
    missing = [c for c in MODEL_COLUMNS if table is None or c not in table.colnames]
    if missing:
        raise BlendflagError(
            f"shear.neighbour_pixels: {mode} needs the column(s) {', '.join(missing)}; "
            "give them or use neighbour_pixels: segment"
        )
    return np.column_stack([np.asarray(table[c], dtype=np.float64) for c in MODEL_COLUMNS])


def gaussian_covariances(models) -> tuple[np.ndarray, np.ndarray]:
    """``log(flux / 2 pi)`` and the covariance ``(n, 3)``: xx, xy, yy (pixels^2) of each model."""
    models = np.asarray(models, dtype=np.float64)
    a2, b2 = (np.clip(models[:, k], 0.3, None) ** 2 for k in (1, 2))  # a floor, never 0
    theta = np.radians(models[:, 3])
    cos, sin = np.cos(theta), np.sin(theta)
    cov = np.column_stack(
        [a2 * cos**2 + b2 * sin**2, (a2 - b2) * cos * sin, a2 * sin**2 + b2 * cos**2]
    )
    return np.log(np.clip(models[:, 0], 1e-30, None) / (2.0 * np.pi)), cov


def gaussian_parameters(models) -> tuple[np.ndarray, np.ndarray]:
    """Log peak (ADU per pixel) and inverse covariance ``(n, 3)``: xx, xy, yy (pixels^-2)."""
    log_flux, cov = gaussian_covariances(models)
    det = cov[:, 0] * cov[:, 2] - cov[:, 1] ** 2
    inv = np.column_stack([cov[:, 2], -cov[:, 1], cov[:, 0]]) / det[:, None]
    return log_flux - 0.5 * np.log(det), inv


def psf_variance(psf) -> float:
    """Variance (pixels^2) of the PSF image's adaptive Gaussian; 0 when the moments fail."""
    import galsim

    moments = galsim.hsm.FindAdaptiveMom(galsim.ImageD(np.asarray(psf, float)), strict=False)
    return float(moments.moments_sigma**2) if moments.moments_status == 0 else 0.0


def neighbour_models(
    x, y, models, offsets, size: int, psf_var: float = 0.0, pool=None
) -> np.ndarray:
    """Each object's light model and its neighbours', in its stamp's pixels.

    Parameters
    ----------
    x, y : array_like
        ``(n,)`` detection positions (pixels, FITS 1-based, as X_IMAGE).
    models : array_like
        ``(n, 4)`` :func:`catalogue_models`.
    offsets : array_like
        ``(n, 2)`` each detection's position relative to its stamp's central
        pixel (:func:`blendflag.shear.inputs.stamp_offsets`).
    size : int
        Stamp side (pixels).
    psf_var : float
        Variance of the PSF (pixels^2, :func:`psf_variance`): the part of each
        model's covariance that a shear of the galaxy does not shear.
    pool : numpy.ndarray or None
        ``(m, 6)`` X_IMAGE, Y_IMAGE and the four model columns of the
        sources the neighbours are taken from (a split image: the whole
        catalogue's in its region); None: the objects themselves. A pool
        source at an object's own position is that object.

    Returns
    -------
    numpy.ndarray
        ``(n, 1 + MAX_NEIGHBOURS, 7)``: ``dx, dy`` (pixels from the stamp's
        central pixel), ``log(flux / 2 pi)``, covariance xx, xy, yy
        (pixels^2), ``psf_var``. Row 0 is the object; missing neighbours have
        a log flux of -inf.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    own_flux, own_cov = gaussian_covariances(models)
    if pool is None:
        px, py, pool_models = x, y, models
    else:
        pool = np.asarray(pool, dtype=np.float64).reshape(-1, 6)
        px, py, pool_models = pool[:, 0], pool[:, 1], pool[:, 2:]
    log_peak, inv = gaussian_parameters(pool_models)
    log_flux, cov = gaussian_covariances(pool_models)
    offsets = np.asarray(offsets, dtype=np.float64).reshape(len(x), 2)
    out = np.zeros((len(x), 1 + MAX_NEIGHBOURS, 7))
    out[:, :, 2] = -np.inf
    out[:, :, 6] = psf_var
    out[:, 0, :2] = offsets
    out[:, 0, 2] = own_flux
    out[:, 0, 3:6] = own_cov
    # a neighbour counts when its model reaches into the stamp (3 A beyond its edge)
    reach = size / 2.0 + 3.0 * np.clip(np.asarray(pool_models, float)[:, 1], 0.3, None)
    order = np.argsort(px, kind="stable")
    sx = px[order]
    lo = np.searchsorted(sx, x - reach.max())
    hi = np.searchsorted(sx, x + reach.max())
    for i in range(len(x)):
        near = order[lo[i] : hi[i]]
        dx, dy = px[near] - x[i], py[near] - y[i]
        itself = (near == i) if pool is None else (np.abs(dx) < 1e-6) & (np.abs(dy) < 1e-6)
        keep = ~itself & (np.abs(dx) < reach[near]) & (np.abs(dy) < reach[near])
        near, dx, dy = near[keep], dx[keep], dy[keep]
        if not len(near):
            continue
        # the brightest at the object first
        q = inv[near, 0] * dx * dx + 2 * inv[near, 1] * dx * dy + inv[near, 2] * dy * dy
        near_order = np.argsort(-(log_peak[near] - 0.5 * q))[:MAX_NEIGHBOURS]
        k = len(near_order)
        out[i, 1 : 1 + k, 0] = offsets[i, 0] + dx[near_order]
        out[i, 1 : 1 + k, 1] = offsets[i, 1] + dy[near_order]
        out[i, 1 : 1 + k, 2] = log_flux[near][near_order]
        out[i, 1 : 1 + k, 3:6] = cov[near][near_order]
    return out


def version_weight(models, matrix, shape, softness: float = SOFTNESS):
    """The factor on one metacal version's weight: 1, falling to 0 where neighbours outshine.

    Parameters
    ----------
    models : numpy.ndarray
        ``(K, 7)`` one object's row of :func:`neighbour_models`.
    matrix : numpy.ndarray
        ``(2, 2)`` the version's shear (GalSim's ``Shear.getMatrix()``),
        applied about the stamp's true centre as metacalibration shears the
        deconvolved image: positions by ``M``, each covariance ``C`` as
        ``M (C - P) M^T + P`` with ``P`` the PSF's (the galaxy part clipped
        at :data:`MIN_VARIANCE`); the identity for ``noshear``.
    shape : tuple of int
        ``(ny, nx)`` of the stamp.
    softness : float
        Width of the transitions in log light. [default: :data:`SOFTNESS`]

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` factor in [0, 1].
    """
    ny, nx = shape
    real = np.isfinite(models).all(axis=1)  # padding (-inf) and NaN catalogue values drop out
    if not real[0] or real.sum() < 2:  # no model of the object itself: nothing to compare
        return np.ones(shape)
    models = models[real]
    matrix = np.asarray(matrix, dtype=np.float64)
    centre = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
    position = models[:, :2] + np.array([nx // 2, ny // 2]) - centre
    position = position @ matrix.T + centre  # 0-based stamp pixels after the shear
    psf = models[:, 6]
    galaxy = _clip_covariance(models[:, 3:6] - np.column_stack([psf, 0 * psf, psf]))
    cov = np.array([[galaxy[:, 0], galaxy[:, 1]], [galaxy[:, 1], galaxy[:, 2]]]).transpose(2, 0, 1)
    cov = matrix[None] @ cov @ matrix.T[None]
    cov[:, 0, 0] += psf
    cov[:, 1, 1] += psf
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
    cinv = np.stack([cov[:, 1, 1], -cov[:, 0, 1], cov[:, 0, 0]], axis=1) / det[:, None]
    dx = np.arange(nx)[None, None, :] - position[:, 0, None, None]
    dy = np.arange(ny)[None, :, None] - position[:, 1, None, None]
    log_light = (models[:, 2] - 0.5 * np.log(det))[:, None, None] - 0.5 * (
        cinv[:, 0, None, None] * dx * dx
        + 2 * cinv[:, 1, None, None] * dx * dy
        + cinv[:, 2, None, None] * dy * dy
    )
    own = log_light[0]
    others = np.logaddexp.reduce(log_light[1:], axis=0)
    return 1.0 - _logistic((others - own) / softness)


def _clip_covariance(cov):
    """``(n, 3)`` symmetric 2 x 2 matrices with their eigenvalues raised to :data:`MIN_VARIANCE`."""
    mean = 0.5 * (cov[:, 0] + cov[:, 2])
    half = np.hypot(0.5 * (cov[:, 0] - cov[:, 2]), cov[:, 1])
    angle = 0.5 * np.arctan2(2 * cov[:, 1], cov[:, 0] - cov[:, 2])
    big, small = (np.maximum(mean + s * half, MIN_VARIANCE) for s in (1, -1))
    cos, sin = np.cos(angle), np.sin(angle)
    return np.column_stack(
        [big * cos**2 + small * sin**2, (big - small) * cos * sin, big * sin**2 + small * cos**2]
    )


def _logistic(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def shear_matrix(g1: float, g2: float) -> np.ndarray:
    """GalSim's ``Shear(g1=g1, g2=g2).getMatrix()``: area-preserving, applied to positions."""
    return np.array([[1.0 + g1, g2], [g2, 1.0 - g1]]) / np.sqrt(1.0 - g1 * g1 - g2 * g2)


def version_weights(models, step: float, shape) -> np.ndarray:
    """:func:`version_weight` of every metacal version, in ``METACAL_VERSIONS`` order.

    Returns
    -------
    numpy.ndarray or None
        ``(5, ny, nx)``; ``noshear`` unsheared, ``1p``/``1m`` by ``(±step, 0)``,
        ``2p``/``2m`` by ``(0, ±step)``. None when ``models`` is None.
    """
    if models is None:
        return None
    from blendflag.shear.results import METACAL_VERSIONS, VERSION_SHEARS

    return np.stack(
        [
            version_weight(models, shear_matrix(*np.multiply(VERSION_SHEARS[v], step)), shape)
            for v in METACAL_VERSIONS
        ]
    )
