"""Judging flaggers on labelled stamps: the numbers of the study's tables.

Every method runs on the same stamps; the results follow the ``evaluate`` JSON
contract of the README's evaluate section (column-normalised confusion, recalls,
accuracy by noise level, blend recall by separation, stamps per second).
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from blendflag.flagging.metrics import confusion, recalls, roc_auc

#: Upper edges of the separation bins, in pixels (the last bin is open).
SEPARATION_EDGES = (5.0, 10.0, 15.0)
#: Noise levels with more distinct values than this are binned in quantiles.
MAX_NOISE_LEVELS = 12


def _noise_groups(noise: np.ndarray) -> list[tuple[float, np.ndarray]]:
    levels = np.unique(noise)
    if len(levels) <= MAX_NOISE_LEVELS:
        return [(float(level), noise == level) for level in levels]
    edges = np.quantile(noise, np.linspace(0, 1, 7))
    groups = []
    for lo, hi in itertools.pairwise(edges):
        sel = (noise >= lo) & (noise <= hi if hi == edges[-1] else noise < hi)
        if sel.any():
            groups.append((float(np.median(noise[sel])), sel))
    return groups


def method_metrics(
    flag, truth_label, separation, noise, kind, probability=None, seconds=None
) -> dict:
    """All numbers of one method on one set of stamps.

    Parameters
    ----------
    flag : array_like of bool
        Predicted blend per stamp.
    truth_label : array_like
        1 for blends, 0 otherwise.
    separation : array_like
        Separation of the two sources in pixels (0 for singles).
    noise : array_like
        Noise sigma of each stamp (ADU).
    kind : array_like of str
        ``blend``, ``single`` or ``separated``.
    probability : array_like or None
        Blend probability (for the AUC), when the method has one.
    seconds : float or None
        Wall time the method took on all stamps.
    """
    flag = np.asarray(flag, dtype=bool)
    truth = np.asarray(truth_label).astype(bool)
    separation = np.asarray(separation, dtype=float)
    noise = np.asarray(noise, dtype=float)
    kind = np.asarray(kind).astype(str)
    out = {"confusion": confusion(flag, truth), **recalls(flag, truth)}
    out["by_noise"] = [
        {"noise": level, "n": int(sel.sum()), **recalls(flag[sel], truth[sel])}
        for level, sel in _noise_groups(noise)
    ]
    bins = []
    lows = (0.0, *SEPARATION_EDGES)
    highs = (*SEPARATION_EDGES, None)
    separated = kind == "separated"
    for lo, hi in zip(lows, highs, strict=True):
        in_bin = (separation >= lo) & ((separation < hi) if hi is not None else True)
        blends = in_bin & truth
        pairs = in_bin & separated
        bins.append(
            {
                "min": lo,
                "max": hi,
                "n": int(blends.sum()),
                "blend_recall": float(flag[blends].mean()) if blends.any() else None,
                "n_separated": int(pairs.sum()),
                "separated_recall": float((~flag[pairs]).mean()) if pairs.any() else None,
            }
        )
    out["by_separation"] = bins
    close = truth & (separation < 10.0)
    out["blend_recall_under_10px"] = float(flag[close].mean()) if close.any() else None
    out["by_kind"] = {
        k: {
            "n": int((kind == k).sum()),
            "flagged": float(flag[kind == k].mean()) if (kind == k).any() else None,
        }
        for k in ("blend", "single", "separated")
    }
    if probability is not None:
        out["auc"] = roc_auc(probability, truth)
    if seconds is not None:
        out["seconds"] = float(seconds)
        out["stamps_per_s"] = float(len(flag) / seconds) if seconds > 0 else None
    return out


def truth_reference_noise(truth) -> float | None:
    """The noise sigma (ADU) at which the stamps' labels are defined, or None.

    ``ISOPHOTE`` over the truth's ``ISOSIG`` (``blend.isophote_nsigma``) when
    it is one value for every stamp (labels at the preset's reference depth);
    None when it follows each stamp's noise or the columns are missing.
    """
    if "ISOPHOTE" not in truth.colnames or not truth.meta.get("ISOSIG"):
        return None
    iso = np.unique(np.asarray(truth["ISOPHOTE"], dtype=np.float64))
    if len(iso) != 1 or not np.isfinite(iso[0]) or iso[0] <= 0:
        return None
    return float(iso[0] / float(truth.meta["ISOSIG"]))


def evaluate_flaggers(flaggers, stamps, truth, reference_noise=None) -> dict:
    """Run each flagger on ``stamps`` and compute its metrics.

    Parameters
    ----------
    flaggers : list of blendflag.flagging.flaggers.Flagger
    stamps : numpy.ndarray
        ``(n, S, S)`` float32 stamps (ADU).
    truth : astropy.table.Table
        The ``TRUTH`` table of ``simulate``: LABEL, KIND, SEPARATION, NOISE_SIGMA.
    reference_noise : float or None
        Depth (noise sigma, ADU) at which the labels are defined, given to
        flaggers that have none set. [default: from the truth, see
        :func:`truth_reference_noise`]

    Returns
    -------
    dict
        ``{"n": n, "methods": {name: metrics}}``.
    """
    methods = {}
    if reference_noise is None:
        reference_noise = truth_reference_noise(truth)
    for flagger in flaggers:
        flagger.default_reference_noise(reference_noise)
        if len(stamps) > 64:  # warm up (model load, tracing) outside the timing
            flagger.flag_stamps(stamps[:64])
        start = time.perf_counter()
        result = flagger.flag_stamps(stamps)
        seconds = time.perf_counter() - start
        metrics = method_metrics(
            result.flag,
            truth["LABEL"],
            truth["SEPARATION"],
            truth["NOISE_SIGMA"],
            truth["KIND"],
            result.probability,
            seconds,
        )
        threshold = getattr(flagger, "threshold", None)
        if threshold is not None:
            metrics["threshold"] = float(threshold)
        views = getattr(flagger, "views", None)
        if views is not None:
            metrics["views"] = int(views)
        methods[flagger.name] = metrics
    return {"n": len(stamps), "methods": methods}
