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
        # the flagger's header cards (weights file and its SHA-256, threshold): what was run
        metrics["setup"] = {key: value for key, value, _ in flagger.provenance()}
        _add_stamp_truth_metrics(metrics, result, truth)
        methods[flagger.name] = metrics
    return {"n": len(stamps), "methods": methods}


def _add_stamp_truth_metrics(metrics: dict, result, truth) -> None:
    """The count confusion (for flaggers that count) and false blends by size, in place."""
    if result.n_sources is not None:
        if "COUNT_CLASS" in truth.colnames:
            true_class = np.asarray(truth["COUNT_CLASS"])
        else:  # the study's stamps: one source, or a blend of two
            true_class = (np.asarray(truth["LABEL"]) > 0).astype(np.int64)
        metrics["count"] = count_metrics(result.n_sources, true_class)
    if "HLR1" in truth.colnames:
        metrics["false_blends_by_hlr"] = false_blends_by_size(
            result.flag, truth["LABEL"], truth["HLR1"]
        )


#: Names of the count classes (sources overlapping the central object's footprint).
COUNT_NAMES = ("1", "2", "3", "4+")
#: Edges of the half-light-radius bins of the false-blend rate, arcsec.
HLR_EDGES = (0.15, 0.25, 0.4)


def count_metrics(n_sources, true_class) -> dict:
    """Count confusion matrix (rows: true class, normalised) and accuracies.

    Parameters
    ----------
    n_sources : array_like of int
        Predicted sources (1, 2, 3, 4 or more).
    true_class : array_like of int
        True count class, 0-3 for 1, 2, 3, 4+ sources.

    Returns
    -------
    dict
        ``classes``, ``confusion`` (row i: the fractions of true class i
        predicted as each class; None for an empty row), ``counts`` (raw
        numbers), ``accuracy`` and ``balanced_accuracy`` (mean recall over the
        non-empty classes).
    """
    k = len(COUNT_NAMES)
    pred = np.clip(np.asarray(n_sources, dtype=np.int64), 1, k) - 1
    true = np.asarray(true_class, dtype=np.int64)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (true, pred), 1)
    rows = counts.sum(axis=1)
    confusion = [(counts[i] / rows[i]).tolist() if rows[i] else None for i in range(k)]
    recalls_ = [counts[i, i] / rows[i] for i in range(k) if rows[i]]
    return {
        "classes": list(COUNT_NAMES),
        "confusion": confusion,
        "counts": counts.tolist(),
        "accuracy": float(np.mean(pred == true)) if len(true) else None,
        "balanced_accuracy": float(np.mean(recalls_)) if recalls_ else None,
    }


def false_blends_by_size(flag, label, hlr) -> list[dict]:
    """Share of single (non-blend) stamps flagged as blends, per half-light-radius bin.

    Parameters
    ----------
    flag : array_like of bool
        Predicted blends.
    label : array_like
        1 for blends, 0 otherwise.
    hlr : array_like
        Half-light radius of the central galaxy, arcsec.

    Returns
    -------
    list of dict
        ``min``, ``max`` (arcsec; None: open), ``n`` singles, ``flagged``
        (their share called blends, None when empty) and its binomial error.
    """
    flag = np.asarray(flag, dtype=bool)
    single = np.asarray(label) == 0
    hlr = np.asarray(hlr, dtype=float)
    out = []
    for lo, hi in zip((0.0, *HLR_EDGES), (*HLR_EDGES, None), strict=True):
        sel = single & (hlr >= lo) & ((hlr < hi) if hi is not None else True)
        n = int(sel.sum())
        rate = float(flag[sel].mean()) if n else None
        out.append(
            {
                "min": lo,
                "max": hi,
                "n": n,
                "flagged": rate,
                "flagged_err": float(np.sqrt(rate * (1 - rate) / n)) if n else None,
            }
        )
    return out
