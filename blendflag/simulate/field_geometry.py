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


#: Linking length (pixels) of the groups whose positions are sheared together:
#: about half a measurement stamp (51 px), so that galaxies that share a stamp
#: keep their sheared separation and an isolated galaxy does not move.
GROUP_LINK = 25.0


def friends_of_friends(xs, ys, link: float = GROUP_LINK, keys=None) -> np.ndarray:
    """Group label of each position: friends-of-friends with linking length ``link``.

    Parameters
    ----------
    xs, ys : numpy.ndarray
        Positions, pixels.
    link : float
        Two positions closer than this are friends; groups are the connected sets.
    keys : numpy.ndarray or None
        Positions with different keys are never linked (e.g. the two halves of
        a rotated-pair image). [default: one key]

    Returns
    -------
    numpy.ndarray
        int64 label per position, 0..n_groups-1, in order of first member.
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    n = len(xs)
    keys = np.zeros(n, dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
    parent = np.arange(n)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    cell = {}
    cx = np.floor(xs / link).astype(np.int64)
    cy = np.floor(ys / link).astype(np.int64)
    for i in range(n):
        cell.setdefault((int(keys[i]), int(cx[i]), int(cy[i])), []).append(i)
    link2 = link * link
    for (k, gx, gy), members in cell.items():
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                others = cell.get((k, gx + dx, gy + dy))
                if not others:
                    continue
                a = np.asarray(members)
                b = np.asarray(others)
                d2 = (xs[a, None] - xs[None, b]) ** 2 + (ys[a, None] - ys[None, b]) ** 2
                for i, j in zip(*np.nonzero(d2 < link2), strict=True):
                    ri, rj = root(a[i]), root(b[j])
                    if ri != rj:
                        parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([root(i) for i in range(n)], dtype=np.int64)
    _, labels = np.unique(roots, return_inverse=True)
    return labels.ravel()


def attach_to_groups(xs, ys, leaders, groups, link: float = GROUP_LINK, keys=None) -> np.ndarray:
    """Groups of every position: the leaders' own, others joining the nearest leader's.

    A position that is not a leader joins the group of the nearest leader
    closer than ``link`` (with the same key), else forms a group of its own.

    Parameters
    ----------
    xs, ys : numpy.ndarray
        All positions, pixels.
    leaders : numpy.ndarray
        bool per position: those grouped by :func:`friends_of_friends`.
    groups : numpy.ndarray
        The leaders' group labels (:func:`friends_of_friends` of the leaders).
    link : float
        Largest distance to a leader, pixels.
    keys : numpy.ndarray or None
        Positions never join a leader with another key. [default: one key]

    Returns
    -------
    numpy.ndarray
        int64 group label per position.
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    n = len(xs)
    keys = np.zeros(n, dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
    lead = np.flatnonzero(leaders)
    out = np.full(n, -1, dtype=np.int64)
    out[lead] = groups
    cell = {}
    for i in lead:
        cell.setdefault((int(keys[i]), int(xs[i] // link), int(ys[i] // link)), []).append(i)
    next_label = int(groups.max(initial=-1)) + 1
    for i in np.flatnonzero(~np.asarray(leaders, dtype=bool)):
        gx, gy = int(xs[i] // link), int(ys[i] // link)
        near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1)
                for j in cell.get((int(keys[i]), gx + dx, gy + dy), ())]  # fmt: skip
        if near:
            near = np.asarray(near)
            d2 = (xs[near] - xs[i]) ** 2 + (ys[near] - ys[i]) ** 2
            k = int(np.argmin(d2))
            if d2[k] < link * link:
                out[i] = out[near[k]]
                continue
        out[i] = next_label
        next_label += 1
    return out


def position_matrix(shear) -> np.ndarray:
    """The matrix :func:`shear_positions` applies to offsets from a group's centre.

    GalSim's area-preserving shear matrix of ``shear`` (g1, g2), divided by
    its largest row sum of absolute values, so that sheared offsets stay
    within the unsheared extent (the same factor for +g and -g).
    """
    matrix, shrink = _shear_matrix(shear)
    return matrix * shrink


def _shear_matrix(shear):
    """GalSim's area-preserving matrix of ``shear`` and the factor that keeps offsets in bounds."""
    import galsim

    matrix = galsim.Shear(g1=shear[0], g2=shear[1]).getMatrix()  # like GSObject.shear()
    return matrix, 1.0 / np.abs(matrix).sum(axis=1).max()


def shear_positions(
    xs, ys, shear, groups, centred_on=None, centres=None
) -> tuple[np.ndarray, np.ndarray]:
    """Shear galaxy positions like their shapes, about the centre of their group.

    Lensing shears the whole scene: the separation of two neighbours is
    sheared as well, and metacalibration (which shears whole stamps) assumes
    it. Shearing about each group's centre (:func:`friends_of_friends`) keeps
    that, while an isolated galaxy does not move: two images of the same
    galaxies sheared by +g and -g then put each galaxy on the same noise
    pixels, and the noise cancels in the pair. Offsets from the group centre
    are first drawn in by the largest stretch of the shear matrix (the same
    for +g and -g), so that a group stays inside its unsheared extent and the
    field's margins hold. Without shear, or for a lone galaxy, positions are
    unchanged.

    Parameters
    ----------
    xs, ys : numpy.ndarray
        1-based pixel positions before shear.
    shear : (float, float)
        Reduced shear (g1, g2).
    groups : numpy.ndarray of int
        Group label of each galaxy.
    centred_on : numpy.ndarray or None
        bool per galaxy: a group's centre is the mean position of these
        members (of all its members when it has none), so that a galaxy
        alone among them keeps its pixels while the others in its group are
        sheared about it. [default: every member]
    centres : numpy.ndarray or None
        (n_groups, 2) x, y of each group's centre, 1-based pixels, instead of
        a mean of its members. [default: None]

    Returns
    -------
    xs, ys : numpy.ndarray
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    if shear[0] == 0 and shear[1] == 0:
        return xs, ys
    groups = np.asarray(groups)
    if centres is None:
        cx, cy = _group_centres(xs, ys, groups, centred_on)
    else:
        cx, cy = np.asarray(centres, dtype=np.float64)[groups].T
    matrix, shrink = _shear_matrix(shear)
    dx, dy = (xs - cx) * shrink, (ys - cy) * shrink
    return (
        cx + matrix[0, 0] * dx + matrix[0, 1] * dy,
        cy + matrix[1, 0] * dx + matrix[1, 1] * dy,
    )


def _group_centres(xs, ys, groups, centred_on):
    """x and y of each galaxy's group centre: the mean of its ``centred_on`` members (or all)."""
    w = np.ones(len(xs)) if centred_on is None else np.asarray(centred_on, dtype=np.float64)
    # a group without a member to centre on is centred on all its members
    w = np.where(np.bincount(groups, weights=w)[groups] > 0, w, 1.0)
    counts = np.bincount(groups, weights=w)
    cx = (np.bincount(groups, weights=w * xs) / counts)[groups]
    cy = (np.bincount(groups, weights=w * ys) / counts)[groups]
    return cx, cy


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
