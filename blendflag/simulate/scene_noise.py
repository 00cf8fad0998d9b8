"""Pixel noise that follows a uniformly sheared scene: a permutation of the noise pixels.

A ±g pair of fields shares its galaxies and its pixel noise, so that the
noise cancels in the pair (Pujol et al. 2019; Sheldon et al. 2020). Under a
uniform shear every position moves, by up to g x the distance to the shear's
centre (tens of pixels on a survey field), so a galaxy sits on other noise
pixels in the +g and the -g image and the pairing no longer cancels the
noise. Here the same noise values are *permuted* for each image, so that the
noise near every galaxy moves with it: output pixel ``p`` takes the noise of
pixel ``centre + A^-1 (p - centre)`` (rounded), where ``A`` is the matrix the
positions were sheared by.

A permutation of independent, identically distributed pixels is again
independent and identically distributed: each image's noise has exactly the
statistics of unpermuted noise, whatever the permutation, so following the
scene changes no expectation, only how well the +g and -g noise cancel. The
permutation is exact (a bijection on the pixels of each scene); where
rounding leaves a pixel without a source, or a source unused (near the
edges and along the rows and columns where the rounding steps), the spare
sources fill the spare pixels in raster order.
"""

from __future__ import annotations

import numpy as np


def axis_sources(n: int, scale: float, centre: float) -> np.ndarray:
    """Source index of each of ``n`` pixels along one axis, or -1 where there is none.

    Pixel ``i`` takes ``round(centre + scale * (i - centre))``; -1 where that
    falls outside ``0..n-1`` or repeats the previous pixel's source (a
    stretch), so that the result is injective.

    Parameters
    ----------
    n : int
        Pixels along the axis.
    scale : float
        Source offset per output offset (the inverse shear's diagonal entry).
    centre : float
        0-based pixel coordinate the scaling is about.

    Returns
    -------
    numpy.ndarray
        int64 per pixel.
    """
    i = np.arange(n)
    source = np.rint(centre + scale * (i - centre)).astype(np.int64)
    fresh = np.ones(n, dtype=bool)
    fresh[1:] = source[1:] != source[:-1]
    return np.where(fresh & (source >= 0) & (source < n), source, -1)


def complete_permutation(partial: np.ndarray) -> np.ndarray:
    """A permutation from an injective partial one: spare sources fill unset entries (-1) in order.

    Parameters
    ----------
    partial : numpy.ndarray
        int64 flat source index per flat pixel, -1 where unset; the set
        entries are distinct.

    Returns
    -------
    numpy.ndarray
        int64, every index ``0..len(partial)-1`` exactly once.
    """
    used = np.zeros(len(partial), dtype=bool)
    used[partial[partial >= 0]] = True
    order = partial.copy()
    order[partial < 0] = np.flatnonzero(~used)
    return order


def _stretch_order(shape, scales, centre) -> np.ndarray:
    """The diagonal part: each axis scaled about ``centre`` (x, y), as a permutation."""
    ny, nx = shape
    xs = axis_sources(nx, scales[0], centre[0])
    ys = axis_sources(ny, scales[1], centre[1])
    valid = (ys[:, None] >= 0) & (xs[None, :] >= 0)
    partial = np.where(valid, ys[:, None] * nx + xs[None, :], -1)
    return complete_permutation(partial.ravel())


def _skew_order(shape, skews, centre) -> np.ndarray:
    """The off-diagonal part: rows shifted by ``skews[0] * dy``, then columns by
    ``skews[1] * dx``, cyclically (each step a permutation)."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    x1 = (x + np.rint(skews[0] * (y - centre[1])).astype(np.int64)) % nx
    y1 = (y + np.rint(skews[1] * (x1 - centre[0])).astype(np.int64)) % ny
    return (y1 * nx + x1).ravel()


def scene_noise_order(shape, matrix, centre) -> np.ndarray:
    """The noise permutation of one scene sheared about ``centre`` by ``matrix``.

    Parameters
    ----------
    shape : (int, int)
        (ny, nx) of the scene, pixels.
    matrix : array_like
        2x2 matrix the positions were sheared by (offsets from ``centre``).
    centre : (float, float)
        0-based (x, y) pixel coordinates of the shear's fixed point.

    Returns
    -------
    numpy.ndarray
        int64 flat source pixel per flat pixel of the scene: a permutation,
        with ``order[p]`` within about a pixel of ``centre + matrix^-1 (p -
        centre)`` away from the edges.
    """
    inverse = np.linalg.inv(np.asarray(matrix, dtype=np.float64))
    scales = (inverse[0, 0], inverse[1, 1])
    # inverse ~ diag(scales) (I + skew): the skew first, then the stretch
    skew = _skew_order(shape, (inverse[0, 1] / scales[0], inverse[1, 0] / scales[1]), centre)
    return _stretch_order(shape, scales, centre)[skew]


def field_noise_order(shape, matrix, scenes: int) -> np.ndarray:
    """The noise permutation of a field of ``scenes`` square scenes side by side.

    Each scene (a rotated-pair image has two) is sheared about its own
    centre and its noise permuted within it (:func:`scene_noise_order`).

    Parameters
    ----------
    shape : (int, int)
        (ny, nx) of the image; ``nx = scenes * ny``.
    matrix : array_like
        2x2 matrix the positions were sheared by.
    scenes : int
        Square scenes side by side (1, or 2 with rotated pairs).

    Returns
    -------
    numpy.ndarray
        int64 flat source pixel per flat pixel of the image (a permutation).
    """
    ny, nx = shape
    side = nx // scenes
    centre = ((side - 1) / 2.0, (ny - 1) / 2.0)
    local_y, local_x = np.divmod(scene_noise_order((ny, side), matrix, centre), side)
    local_y, local_x = local_y.reshape(ny, side), local_x.reshape(ny, side)
    order = np.concatenate([local_y * nx + local_x + k * side for k in range(scenes)], axis=1)
    return order.ravel()
