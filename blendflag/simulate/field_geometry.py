"""Geometry of simulated fields: their size, sheared galaxy positions, footprint overlaps.

Used by :func:`blendflag.simulate.field.simulate_field`. Positions are 1-based
image pixels.
"""

from __future__ import annotations

import math

import numpy as np

from blendflag.simulate.presets import DatasetConfig


def field_size(config: DatasetConfig, n_galaxies: int) -> int:
    """Side of a square field (or half-field), in pixels: ``field.size`` or from the density."""
    if config.field.size:
        return int(config.field.size)
    area_arcmin2 = n_galaxies / config.field.density
    return max(math.ceil(math.sqrt(area_arcmin2) * 60.0 / config.pixel_scale), 64)


def shear_positions(xs, ys, shear, side: int, right_half) -> tuple[np.ndarray, np.ndarray]:
    """Shear galaxy positions like their shapes, about the centre of their square.

    Lensing shears the whole scene: the separation of two neighbours is
    sheared as well, and metacalibration (which shears whole stamps) assumes
    it. Positions are first drawn towards the centre by the largest stretch
    of the shear matrix, so that sheared positions stay inside the margins;
    without shear they are unchanged.

    Parameters
    ----------
    xs, ys : numpy.ndarray
        1-based pixel positions before shear.
    shear : (float, float)
        Reduced shear (g1, g2).
    side : int
        Side of each square (the image, or each half of a rotated-pair image).
    right_half : numpy.ndarray of bool
        Galaxies of the right half (centre shifted by ``side``).

    Returns
    -------
    xs, ys : numpy.ndarray
    """
    import galsim

    g1, g2 = shear
    if g1 == 0 and g2 == 0:
        return xs, ys
    matrix = galsim.Shear(g1=g1, g2=g2).getMatrix()  # area-preserving, like .shear()
    shrink = 1.0 / np.abs(matrix).sum(axis=1).max()
    centre = (side + 1) / 2.0
    cx = centre + np.where(right_half, side, 0)
    dx = (xs - cx) * shrink
    dy = (ys - centre) * shrink
    return (
        cx + matrix[0, 0] * dx + matrix[0, 1] * dy,
        centre + matrix[1, 0] * dx + matrix[1, 1] * dy,
    )


def footprint_overlaps(footprints, n: int, nx: int, ny: int):
    """Footprint overlaps between galaxies, clipped to the image.

    ``footprints`` holds, per galaxy, ``(fx0, fy0, mask)``: a cropped boolean
    footprint and the 1-based image coordinates of its first pixel.

    Returns
    -------
    best : numpy.ndarray
        Per galaxy, the index of the galaxy sharing the most footprint pixels, or -1.
    count : numpy.ndarray
        Per galaxy, how many galaxies share footprint pixels with it.
    """
    boxes = np.full((n, 4), -1, dtype=np.int64)  # x0, x1, y0, y1 of the footprint (inclusive)
    for i, (x0, y0, mask) in enumerate(footprints):
        if mask.size:
            boxes[i] = (x0, x0 + mask.shape[1] - 1, y0, y0 + mask.shape[0] - 1)
    best = np.full(n, -1, dtype=np.int32)
    best_n = np.zeros(n, dtype=np.int64)
    count = np.zeros(n, dtype=np.int32)
    valid = np.nonzero(boxes[:, 0] >= 0)[0]
    order = valid[np.argsort(boxes[valid, 0])]
    for k, i in enumerate(order):  # sweep along x
        for j in order[k + 1 :]:
            if boxes[j, 0] > boxes[i, 1]:
                break
            xa, xb = max(boxes[i, 0], boxes[j, 0], 1), min(boxes[i, 1], boxes[j, 1], nx)
            ya, yb = max(boxes[i, 2], boxes[j, 2], 1), min(boxes[i, 3], boxes[j, 3], ny)
            if xa > xb or ya > yb:
                continue
            xi0, yi0, mi = footprints[i]
            xj0, yj0, mj = footprints[j]
            shared = int(
                np.count_nonzero(
                    mi[ya - yi0 : yb - yi0 + 1, xa - xi0 : xb - xi0 + 1]
                    & mj[ya - yj0 : yb - yj0 + 1, xa - xj0 : xb - xj0 + 1]
                )
            )
            if shared == 0:
                continue
            count[i] += 1
            count[j] += 1
            for a, b in ((i, j), (j, i)):
                if shared > best_n[a]:
                    best_n[a], best[a] = shared, b
    return best, count
