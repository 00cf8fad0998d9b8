"""Detections against the truth of a simulated field: matches, rotated pairs, blends.

A simulated field (``simulate-field``, or ``compare``'s default) comes with a
truth table: the true position of every galaxy (``X``, ``Y``, 1-based pixels),
the id of its 90-degree rotated partner (``PAIR_ID``), whether it sits in the
rotated half (``ROTATED``) and the index of a galaxy whose footprint it
overlaps (``OVERLAPS``, -1 for none).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

#: Largest distance (pixels) between a detection and a true galaxy to match them.
MATCH_RADIUS = 2.0


def match_truth(table: Table, truth: Table, radius: float = MATCH_RADIUS) -> np.ndarray:
    """Index of the true galaxy nearest each detection (within ``radius`` px), or -1."""
    x = np.asarray(table["X_IMAGE"], dtype=float)
    y = np.asarray(table["Y_IMAGE"], dtype=float)
    tx = np.asarray(truth["X"], dtype=float)
    ty = np.asarray(truth["Y"], dtype=float)
    order = np.argsort(tx)
    txs, tys = tx[order], ty[order]
    out = np.full(len(x), -1, dtype=np.int64)
    lo = np.searchsorted(txs, x - radius)
    hi = np.searchsorted(txs, x + radius)
    for i in range(len(x)):
        if hi[i] > lo[i]:
            d2 = (txs[lo[i] : hi[i]] - x[i]) ** 2 + (tys[lo[i] : hi[i]] - y[i]) ** 2
            j = int(np.argmin(d2))
            if d2[j] <= radius**2:
                out[i] = order[lo[i] + j]
    return out


def pair_complete(keep: np.ndarray, pid: np.ndarray | None) -> np.ndarray:
    """``keep`` restricted to objects whose rotated partner is kept too.

    A pair counts only when it has exactly two detections and both are kept;
    unmatched detections (unique ids) and broken pairs are dropped. Applied to
    every metacal version alike, so the selection response covers it.
    """
    keep = np.asarray(keep, dtype=bool)
    if pid is None:
        return keep
    _, inverse, members = np.unique(pid, return_inverse=True, return_counts=True)
    kept = np.bincount(inverse, weights=keep.astype(float))
    return keep & (members[inverse] == 2) & (kept[inverse] == 2)


def lonely_pairs(lonely: np.ndarray, truth: Table) -> np.ndarray:
    """``lonely`` (per true galaxy) kept only where the 90-degree rotated partner is lonely too.

    A selection made on the truth of a sheared field (a footprint that touches
    no other) responds to the field's shear, not to a metacal version's, so
    metacalibration's R cannot correct it; keeping whole rotated pairs makes
    the kept galaxies' intrinsic shapes cancel whatever the selection. Rows
    without a partner (``PAIR_ID`` -1: stars, or a field without rotated
    pairs) keep their own value.
    """
    keep = np.asarray(lonely, dtype=bool).copy()
    if "PAIR_ID" not in truth.colnames:
        return keep
    pid = np.asarray(truth["PAIR_ID"], dtype=np.int64)
    paired = pid >= 0
    keep[paired] = pair_complete(keep[paired], pid[paired])
    return keep


def pair_ids(table: Table, truth: Table | None) -> np.ndarray | None:
    """Rotated-pair id of each detection (unique ids for unmatched ones), or None."""
    if truth is None or "PAIR_ID" not in truth.colnames:
        return None
    match = match_truth(table, truth)
    pid = np.where(match >= 0, np.asarray(truth["PAIR_ID"])[np.maximum(match, 0)], -1)
    pid = pid.astype(np.int64)
    unmatched = pid < 0
    pid[unmatched] = pid.max(initial=0) + 1 + np.arange(unmatched.sum())
    return pid


def true_stars(match: np.ndarray, truth: Table) -> np.ndarray:
    """Per detection: matched to a star of the truth (``STAR`` true).

    A truth without a ``STAR`` column is a field drawn without stars: no
    detection is a star.

    Parameters
    ----------
    match : numpy.ndarray
        :func:`match_truth` of every detection (-1: unmatched).
    truth : astropy.table.Table
    """
    match = np.asarray(match)
    if "STAR" not in truth.colnames or not len(truth):
        return np.zeros(len(match), dtype=bool)
    star = np.asarray(truth["STAR"], dtype=bool)
    return (match >= 0) & star[np.maximum(match, 0)]


def truth_summary(match: np.ndarray, truth: Table, blend_flags: dict) -> dict:
    """How the detections relate to the truth, and what each flagger flags.

    Parameters
    ----------
    match : numpy.ndarray
        :func:`match_truth` of every detection.
    truth : astropy.table.Table
        The simulated galaxies.
    blend_flags : dict
        ``{flagger name: bool flag per detection}`` (on the noshear images).

    Returns
    -------
    dict
        ``n_true``, ``n_detected``, ``n_matched`` and, when the truth has
        ``OVERLAPS``, ``fraction_truly_blended`` and per flagger the fraction
        of truly blended and of isolated detections it flags.
    """
    n = len(match)
    info = {"n_true": len(truth), "n_detected": n, "n_matched": int((match >= 0).sum())}
    if "OVERLAPS" not in truth.colnames:
        return info
    overlapping = np.asarray(truth["OVERLAPS"]) >= 0
    matched = match >= 0
    truly_blended = np.zeros(n, bool)
    truly_blended[matched] = overlapping[match[matched]]
    info["fraction_truly_blended"] = float(truly_blended.mean())
    for name, flag in blend_flags.items():
        info[f"{name}_flags_true_blends"] = (
            float(flag[truly_blended].mean()) if truly_blended.any() else None
        )
        info[f"{name}_flags_isolated"] = (
            float(flag[~truly_blended].mean()) if (~truly_blended).any() else None
        )
    return info
