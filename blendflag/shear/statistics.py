"""Shear statistics: responses, selection sums, bootstrap, m and c.

From the per-unit sums a result gives (``unit_sums``, see
:mod:`blendflag.shear.results`) this module forms, for each selection:

- the shear response ``R11 = (<e1>_1p - <e1>_1m) / (2 step)`` and ``R22``;
- for stamp results, the selection response
  ``R11_S = (<e1_noshear>_{S+} - <e1_noshear>_{S-}) / (2 step)``, where ``S±``
  are the objects the same cut keeps when applied to the 1p / 1m images;
- the shear ``g = <e> / (R + R_S)``; with a known shear applied along g1
  only, ``m = g1 / g1_true - 1`` and ``c = g2``;
- errors as bootstrap standard deviations of the whole ratio, resampling
  units (objects, rotated pairs, cells) with replacement.
"""

from __future__ import annotations

import math

import numpy as np

from blendflag.errors import BlendflagError
from blendflag.shear.results import (
    METACAL_VERSIONS,
    SHAPE_COLUMNS,
    good_shapes,
    selection_unit_sums,
)


def shear_response(result_table, mask=None, step: float = 0.01) -> np.ndarray:
    """Mean shear response matrix of the (masked, unflagged) objects.

    Parameters
    ----------
    result_table : astropy.table.Table
        A :class:`MetacalResult` table.
    mask : array_like of bool or None
        Objects to average over; None takes all. Flagged objects are
        always excluded.
    step : float
        Metacalibration step the table was made with. [default: 0.01]

    Returns
    -------
    numpy.ndarray
        ``[[R11, R12], [R21, R22]]`` with ``Rij = (<ei>_jp - <ei>_jm) / (2 step)``;
        NaN when no object is left.
    """
    good = good_shapes(result_table)
    if mask is not None:
        good &= np.asarray(mask, dtype=bool)
    if not good.any():
        return np.full((2, 2), np.nan)
    R = np.empty((2, 2))
    for i in range(2):
        for j, (p, m) in enumerate((("1p", "1m"), ("2p", "2m"))):
            ep = np.asarray(result_table[SHAPE_COLUMNS[p][i]], dtype=np.float64)[good]
            em = np.asarray(result_table[SHAPE_COLUMNS[m][i]], dtype=np.float64)[good]
            R[i, j] = (ep.mean() - em.mean()) / (2.0 * step)
    return R


def _estimates(S: np.ndarray, step: float, true_g1: float | None, layout: str = "stamps"):
    """Shear estimates from per-unit sums ``S`` of shape ``(..., 15)``.

    ``layout`` says what the 15 columns hold: ``"stamps"``
    (:data:`~blendflag.shear.results.STAMP_SUM_TERMS`: R_gamma from the noshear
    selection plus R_S from the sheared selections) or ``"versions"`` (count,
    sum e1, sum e2 of each version's own catalogue: R from separately selected
    catalogues, selection response included, as in metadetection).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        if layout == "versions":
            n = S[..., 0::3]
            mean1 = S[..., 1::3] / n
            mean2 = S[..., 2::3] / n
            idx = {v: k for k, v in enumerate(METACAL_VERSIONS)}
            e1, e2 = mean1[..., idx["noshear"]], mean2[..., idx["noshear"]]
            R11 = (mean1[..., idx["1p"]] - mean1[..., idx["1m"]]) / (2 * step)
            R22 = (mean2[..., idx["2p"]] - mean2[..., idx["2m"]]) / (2 * step)
            nan = np.full_like(R11, np.nan)
            R11_S, R22_S = nan, nan
            g1, g2 = e1 / R11, e2 / R22
            g1_noRS, g2_noRS = nan, nan
        elif layout == "stamps":
            n0 = S[..., 0]
            e1 = S[..., 1] / n0
            e2 = S[..., 2] / n0
            R11 = (S[..., 3] - S[..., 4]) / n0 / (2 * step)
            R22 = (S[..., 5] - S[..., 6]) / n0 / (2 * step)
            R11_S = (S[..., 8] / S[..., 7] - S[..., 10] / S[..., 9]) / (2 * step)
            R22_S = (S[..., 12] / S[..., 11] - S[..., 14] / S[..., 13]) / (2 * step)
            g1, g2 = e1 / (R11 + R11_S), e2 / (R22 + R22_S)
            g1_noRS, g2_noRS = e1 / R11, e2 / R22
        else:
            raise BlendflagError(f"unknown sum layout {layout!r} (stamps or versions)")
        out = {
            "R11": R11,
            "R22": R22,
            "R11_S": R11_S,
            "R22_S": R22_S,
            "g1": g1,
            "g2": g2,
            "g1_noRS": g1_noRS,
            "g2_noRS": g2_noRS,
        }
        if true_g1:
            out["m"] = out["g1"] / true_g1 - 1.0
            out["m_noRS"] = out["g1_noRS"] / true_g1 - 1.0
    return out


def shape_and_response(S: np.ndarray, step: float, layout: str = "stamps") -> tuple:
    """Mean e1 and the whole response along g1 from per-unit sums ``S`` of shape ``(..., 15)``.

    Parameters
    ----------
    S : numpy.ndarray
        Sums in ``layout`` (see :func:`_estimates`), e.g. one row per field.
    step : float
        Metacalibration shear step.
    layout : str
        ``stamps`` (the response is R11 + R11_S) or ``versions`` (R11 of the
        separately selected catalogues, selection included).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``<e1>`` and ``R`` per row, so that ``g1 = <e1> / R``.
    """
    est = _estimates(S, step, None, layout)
    response = est["R11"]
    if layout == "stamps":
        response = response + est["R11_S"]
    return est["g1"] * response, response


def _bootstrap_sums(X, units, n_units, rng, n_bootstrap, chunk_elems=4_000_000):
    """Sums of ``X`` over ``n_bootstrap`` resamplings (with replacement) of the units."""
    n_obj = X.shape[0]
    chunk = max(1, min(n_bootstrap, chunk_elems // max(1, max(n_obj, n_units))))
    out = np.empty((n_bootstrap, X.shape[1]))
    done = 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        draws = rng.integers(0, n_units, size=(b, n_units))
        draws += (np.arange(b) * n_units)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n_units).reshape(b, n_units)
        weights = counts[:, units].astype(np.float64)
        out[done : done + b] = weights @ X
        done += b
    return out


def _float_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def selection_statistics(
    table,
    name: str,
    selection_masks=None,
    step: float = 0.01,
    true_shear=None,
    rng: np.random.Generator | None = None,
    n_bootstrap: int = 200,
    pair_id=None,
) -> dict:
    """Shear, responses and biases of one selection (one ``compare`` JSON entry).

    Parameters
    ----------
    table : astropy.table.Table
        A :class:`MetacalResult` table (objects with ``MCAL_FLAGS != 0`` or
        non-finite ellipticities are excluded everywhere).
    name : str
        Selection name, e.g. ``"all"`` or ``"no_vgg16_blends"``.
    selection_masks : dict, array_like or None
        ``{version: bool mask}`` for the five versions ``noshear, 1p, 1m, 2p,
        2m``: the objects the cut keeps when it is applied to each version's
        image (e.g. the blend flagger run on that version). A single mask
        applies to every version (no selection response); None keeps all.
    step : float
        Metacalibration shear step. [default: 0.01]
    true_shear : (float, float) or None
        The applied shear (g1, g2), applied along g1 only; None leaves m, c
        and their errors null.
    rng : numpy.random.Generator or None
        For the bootstrap. [default: a Generator seeded with 0]
    n_bootstrap : int
        Bootstrap resamplings. [default: 200]
    pair_id : array_like of int or None
        Rotated-pair label of each object: the bootstrap then resamples
        pairs, keeping both members together. None resamples objects.

    Returns
    -------
    dict
        ``name, n, R11, R22, g1, g1_err, g2, g2_err, m, m_err, c, c_err``
        (the compare JSON contract) plus ``R11_S, R22_S`` (selection responses), ``g1_noRS,
        m_noRS, m_noRS_err`` (correcting by R_gamma only, as a pipeline that
        ignores the selection would) and ``fraction_kept`` (n over the number
        of unflagged objects). Non-finite values are None. ``g = <e>/(R + R_S)``;
        errors are bootstrap standard deviations of the whole ratio.
    """
    sums, n_good = selection_unit_sums(table, selection_masks, pair_id)
    return statistics_from_sums(name, sums, n_good, step, true_shear, rng, n_bootstrap)


def statistics_from_sums(
    name: str,
    sums: np.ndarray,
    n_good: int,
    step: float = 0.01,
    true_shear=None,
    rng: np.random.Generator | None = None,
    n_bootstrap: int = 200,
    layout: str = "stamps",
) -> dict:
    """One ``compare`` JSON entry from per-unit sums (a result's ``unit_sums``).

    The bootstrap resamples the rows of ``sums`` (objects, rotated pairs or
    cells). ``layout`` is the result's ``sum_layout`` (see :func:`_estimates`).
    """
    sums = np.asarray(sums, dtype=np.float64)
    n_units = len(sums)
    # The contract applies the shear along g1 only: c = g2 is the additive
    # bias (true g2 should be 0 and is not subtracted).
    true_g1 = None if true_shear is None else float(true_shear[0])
    point = _estimates(sums.sum(axis=0), step, true_g1, layout)
    rng = rng if rng is not None else np.random.default_rng(0)
    errors: dict[str, float | None] = {}
    if n_units > 1 and n_bootstrap >= 2:
        units = np.arange(n_units)
        boot = _estimates(
            _bootstrap_sums(sums, units, n_units, rng, int(n_bootstrap)), step, true_g1, layout
        )
        for key in ("g1", "g2", "m", "m_noRS"):
            if key not in boot:
                continue
            values = boot[key][np.isfinite(boot[key])]
            errors[key] = float(np.std(values, ddof=1)) if values.size >= 2 else None
    n_sel = int(np.rint(sums[:, 0].sum()))
    entry = {
        "name": name,
        "n": n_sel,
        "R11": _float_or_none(point["R11"]),
        "R22": _float_or_none(point["R22"]),
        "g1": _float_or_none(point["g1"]),
        "g1_err": errors.get("g1"),
        "g2": _float_or_none(point["g2"]),
        "g2_err": errors.get("g2"),
        "m": None,
        "m_err": None,
        "c": None,
        "c_err": None,
        "R11_S": _float_or_none(point["R11_S"]),
        "R22_S": _float_or_none(point["R22_S"]),
        "g1_noRS": _float_or_none(point["g1_noRS"]),
        "m_noRS": None,
        "m_noRS_err": None,
        "fraction_kept": n_sel / n_good if n_good else None,
    }
    if true_shear is not None:
        entry["c"] = entry["g2"]
        entry["c_err"] = entry["g2_err"]
        if "m" in point:  # not with true g1 = 0
            entry["m"] = _float_or_none(point["m"])
            entry["m_err"] = errors.get("m")
            entry["m_noRS"] = _float_or_none(point["m_noRS"])
            entry["m_noRS_err"] = errors.get("m_noRS")
    return entry
