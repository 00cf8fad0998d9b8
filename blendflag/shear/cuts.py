"""The shear catalogue's cuts: S/N and size, measured on each metacal version.

Surveys keep an object in the shear catalogue when its S/N and its size
relative to the PSF pass (the metadetection paper: S/N > 10 and
T / T_PSF > 1.2, Sheldon et al. 2020, ApJ 902, 138). A cut on a quantity
that responds to shear must be made on each metacalibration version's own
measurement, so that the selection response ``R_S`` sees it; a cut on the
noshear values alone, applied to every version, has no ``R_S`` and biases
the shear by the cut's response. :func:`shear_cut_masks` makes the cuts of
``shear.cuts`` (:class:`blendflag.config.ShearCuts`) per version from a
stamp engine's ``S2N_<VERSION>``, ``T_<VERSION>`` and ``T_PSF`` columns
(:data:`blendflag.shear.results.S2N_COLUMNS`); an engine that measures only
the noshear values gets the noshear cut on every version, and the summary
says so (``in_response`` false).
"""

from __future__ import annotations

import numpy as np

from blendflag.shear.results import (
    METACAL_VERSIONS,
    PSF_SIZE_COLUMN,
    S2N_COLUMNS,
    SIZE_COLUMNS,
)


def _version_column(table, columns: dict, version: str, good: np.ndarray) -> tuple:
    """A version's column (NaN where not measured), and whether the engine measured it."""
    name = columns[version]
    if name in table.colnames:
        values = np.asarray(table[name], dtype=np.float64)
        if not good.any() or np.isfinite(values[good]).any() or np.isinf(values[good]).any():
            return values, True
    return np.asarray(table[columns["noshear"]], dtype=np.float64), False


def shear_cut_masks(table, cuts, good: np.ndarray) -> tuple[dict, dict]:
    """Per version, the rows that pass the S/N and size cuts.

    Parameters
    ----------
    table : astropy.table.Table
        A stamp engine's result table.
    cuts : blendflag.config.ShearCuts
        ``s2n_min`` and ``t_ratio_min`` (0 switches a cut off).
    good : numpy.ndarray
        bool per row: measured without a flag.

    Returns
    -------
    masks : dict
        ``{version: bool per row}``.
    summary : dict
        ``s2n_min``, ``t_ratio_min``, ``in_response`` (every version cut on
        its own measurement), ``size_cut`` (``applied``, ``off``, or
        ``no T_PSF``: the engine gave no PSF size) and ``kept_noshear``
        (rows kept on the noshear version, of ``measured``).
    """
    n = len(table)
    psf = (
        np.asarray(table[PSF_SIZE_COLUMN], dtype=np.float64)
        if PSF_SIZE_COLUMN in table.colnames
        else np.full(n, np.nan)
    )
    size_cut = "off" if cuts.t_ratio_min <= 0 else "applied"
    if size_cut == "applied" and good.any() and not np.isfinite(psf[good]).any():
        size_cut = "no T_PSF"
    masks, own = {}, []
    for version in METACAL_VERSIONS:
        keep = np.ones(n, dtype=bool)
        if cuts.s2n_min > 0:
            s2n, measured = _version_column(table, S2N_COLUMNS, version, good)
            own.append(measured)
            with np.errstate(invalid="ignore"):
                keep &= s2n >= cuts.s2n_min  # NaN fails, inf (noiseless) passes
        if size_cut == "applied":
            size, measured = _version_column(table, SIZE_COLUMNS, version, good)
            own.append(measured)
            with np.errstate(invalid="ignore", divide="ignore"):
                keep &= size / psf >= cuts.t_ratio_min
        masks[version] = keep
    summary = {
        "s2n_min": float(cuts.s2n_min),
        "t_ratio_min": float(cuts.t_ratio_min),
        "in_response": bool(all(own)),
        "size_cut": size_cut,
        "kept_noshear": int((masks["noshear"] & good).sum()),
        "measured": int(good.sum()),
    }
    return masks, summary
