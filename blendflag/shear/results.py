"""Metacalibration results: the five versions, per-object flags, and the two result shapes.

An engine measures five metacalibration versions of its input,

=========  ==========================================
version    operation on the PSF-deconvolved image
=========  ==========================================
noshear    none
1p / 1m    shear by (+step, 0) / (-step, 0)
2p / 2m    shear by (0, +step) / (0, -step)
=========  ==========================================

each reconvolved with the same round, slightly larger PSF, and returns either

- a :class:`MetacalResult`: one row per input stamp holding the shapes of all
  five versions (``G1_<VERSION>``, ``G2_<VERSION>``): stamp engines; or
- a :class:`blendflag.shear.catalogues.VersionCatalogues`: one catalogue per
  version, each from its own detection, rows not matched between versions
  (``G1``, ``G2``): image engines such as metadetection.

Both give :mod:`blendflag.shear.statistics` the per-unit sums it reduces, through
the same method (``unit_sums``), so the statistics never ask which kind ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from blendflag.errors import BlendflagError

if TYPE_CHECKING:
    from astropy.table import Table

#: The five metacalibration versions, in the order engines produce them.
METACAL_VERSIONS = ("noshear", "1p", "1m", "2p", "2m")

#: Applied shear of each version, in units of the step: (g1, g2).
VERSION_SHEARS = {
    "noshear": (0, 0),
    "1p": (1, 0),
    "1m": (-1, 0),
    "2p": (0, 1),
    "2m": (0, -1),
}

# ---------------------------------------------------------------------------
# Per-object flags (ngmix style: a bad object is flagged, never raised)
# ---------------------------------------------------------------------------

MCAL_NONFINITE_STAMP = 1  #: the stamp holds NaN or inf pixels
MCAL_EMPTY_STAMP = 2  #: the stamp is all zero (no object to measure)
MCAL_STAMP_FLAGGED = 4  #: the stamp was cut at an image edge or over masked pixels
MCAL_RENDER_FAILED = 8  #: the metacalibration images could not be made
MCAL_MOMENTS_FAILED = 16  #: the shape measurement failed on at least one version
MCAL_NONFINITE_RESULT = 32  #: a measured ellipticity or size is NaN or inf
MCAL_BAD_NOISE = 64  #: the noise sigma of the object is negative or not finite
MCAL_ENGINE_FAILED = 128  #: any other failure inside the engine
MCAL_UNSTABLE = 256  #: the five versions' shapes differ by more than ``max_version_spread``
MCAL_LOW_S2N = 512  #: S/N below an engine's cut (metadetection: ``min_s2n``)
MCAL_SMALL_SIZE = 1024  #: size below an engine's cut (metadetection: ``T / T_psf < min_t_ratio``)

#: Bit value -> name, to decode ``MCAL_FLAGS``.
MCAL_FLAG_NAMES = {
    MCAL_NONFINITE_STAMP: "nonfinite_stamp",
    MCAL_EMPTY_STAMP: "empty_stamp",
    MCAL_STAMP_FLAGGED: "stamp_flagged",
    MCAL_RENDER_FAILED: "render_failed",
    MCAL_MOMENTS_FAILED: "moments_failed",
    MCAL_NONFINITE_RESULT: "nonfinite_result",
    MCAL_BAD_NOISE: "bad_noise",
    MCAL_ENGINE_FAILED: "engine_failed",
    MCAL_UNSTABLE: "unstable",
    MCAL_LOW_S2N: "low_s2n",
    MCAL_SMALL_SIZE: "small_size",
}

#: Ellipticity columns of a result table, per version: (e1 column, e2 column).
SHAPE_COLUMNS = {v: (f"G1_{v.upper()}", f"G2_{v.upper()}") for v in METACAL_VERSIONS}
#: Each version's size ``T`` (arcsec^2) and S/N columns (the shear cuts read them).
SIZE_COLUMNS = {v: f"T_{v.upper()}" for v in METACAL_VERSIONS}
S2N_COLUMNS = {v: f"S2N_{v.upper()}" for v in METACAL_VERSIONS}
#: The reconvolution PSF's size with the object's weight, arcsec^2.
PSF_SIZE_COLUMN = "T_PSF"


def flag_names(flags: int) -> list[str]:
    """Names of the bits set in one ``MCAL_FLAGS`` value (e.g. ``["empty_stamp"]``)."""
    return [name for bit, name in MCAL_FLAG_NAMES.items() if int(flags) & bit]


def flag_unstable(table: Table, step: float, max_spread: float) -> int:
    """Flag objects whose shape jumps between metacalibration versions.

    A shear of ``step`` changes an ellipticity by about ``step * R`` with
    R between 0 and 2; a spread far larger than that means the shape
    measurement converged to a different solution on some version (a
    neighbour, the stamp edge), and the object's response is meaningless
    (responses of -30 are seen). Such objects get :data:`MCAL_UNSTABLE`.

    Parameters
    ----------
    table : astropy.table.Table
        A result table (changed in place).
    step : float
        Metacalibration shear step.
    max_spread : float
        Largest allowed difference of any ellipticity component between the
        five versions (dimensionless); 0 or less switches the check off.

    Returns
    -------
    int
        Objects newly flagged.
    """
    if max_spread <= 0 or len(table) == 0:
        return 0
    flags = np.asarray(table["MCAL_FLAGS"])
    ok = np.flatnonzero(flags == 0)
    spread = np.zeros(len(ok))
    for comp in (0, 1):
        e = np.stack(
            [
                np.asarray(table[SHAPE_COLUMNS[v][comp]], dtype=np.float64)[ok]
                for v in METACAL_VERSIONS
            ]
        )
        spread = np.maximum(spread, e.max(axis=0) - e.min(axis=0))
    bad = ok[~(spread <= max_spread)]  # NaN spreads count as unstable too
    table["MCAL_FLAGS"][bad] |= MCAL_UNSTABLE
    for col in table.colnames:
        if col != "MCAL_FLAGS":
            table[col][bad] = np.nan
    return len(bad)


def empty_result_table(n: int) -> Table:
    """A result table of ``n`` rows: NaN measurements, zero flags.

    Columns ``G1_<VERSION>``, ``G2_<VERSION>`` (ellipticity, dimensionless),
    ``T_NOSHEAR`` (size ``<x^2> + <y^2>`` of the adaptive Gaussian, arcsec^2),
    ``S2N_NOSHEAR`` (signal-to-noise of the adaptive-weighted flux; inf for a
    noiseless stamp), ``MCAL_FLAGS`` (int32 bits of :data:`MCAL_FLAG_NAMES`),
    and, for the shear cuts, each sheared version's ``T_<VERSION>`` and
    ``S2N_<VERSION>`` and the reconvolution PSF's ``T_PSF`` (arcsec^2, with
    the object's weight): NaN when an engine does not measure them.
    """
    from astropy.table import Table

    table = Table()
    for version in METACAL_VERSIONS:
        for col in SHAPE_COLUMNS[version]:
            table[col] = np.full(n, np.nan)
    table["T_NOSHEAR"] = np.full(n, np.nan)
    table["S2N_NOSHEAR"] = np.full(n, np.nan)
    table["MCAL_FLAGS"] = np.zeros(n, dtype=np.int32)
    for version in METACAL_VERSIONS[1:]:
        table[SIZE_COLUMNS[version]] = np.full(n, np.nan)
        table[S2N_COLUMNS[version]] = np.full(n, np.nan)
    table[PSF_SIZE_COLUMN] = np.full(n, np.nan)
    return table


def filled_result_table(shapes, size, s2n, flags, versions=None) -> Table:
    """A stamp engine's result table from its per-object measurements.

    An unflagged object whose measured ellipticities or size are NaN or inf
    gets :data:`MCAL_NONFINITE_RESULT`; every flagged object's measurements
    are NaN, as :func:`empty_result_table` has them.

    Parameters
    ----------
    shapes : numpy.ndarray
        ``(5, 2, n)`` ellipticity ``(e1, e2)`` of each version, in
        :data:`METACAL_VERSIONS` order (dimensionless).
    size : numpy.ndarray
        ``(n,)`` noshear size ``T`` (arcsec^2), stored as ``T_NOSHEAR``.
    s2n : numpy.ndarray
        ``(n,)`` noshear signal-to-noise (dimensionless; inf for a noiseless
        stamp), stored as ``S2N_NOSHEAR``.
    flags : numpy.ndarray
        ``(n,)`` ``MCAL_FLAGS`` bits set while measuring (not changed).
    versions : VersionSizes or None
        Each version's size and S/N and the PSF's size (the shear cuts');
        None leaves those columns NaN.

    Returns
    -------
    astropy.table.Table
        The columns of :func:`empty_result_table`, ``MCAL_FLAGS`` with the
        non-finite results flagged.
    """
    flags = np.array(flags, copy=True)
    ok = flags == 0
    measured = np.all(np.isfinite(shapes), axis=(0, 1)) & np.isfinite(size)
    flags[ok & ~measured] |= MCAL_NONFINITE_RESULT
    good = flags == 0
    table = empty_result_table(len(flags))
    for k, version in enumerate(METACAL_VERSIONS):
        c1, c2 = SHAPE_COLUMNS[version]
        table[c1] = np.where(good, shapes[k, 0], np.nan)
        table[c2] = np.where(good, shapes[k, 1], np.nan)
    table["T_NOSHEAR"] = np.where(good, size, np.nan)
    table["S2N_NOSHEAR"] = np.where(good, s2n, np.nan)
    table["MCAL_FLAGS"] = flags
    if versions is not None:
        for k, version in enumerate(METACAL_VERSIONS[1:], start=1):
            table[SIZE_COLUMNS[version]] = np.where(good, versions.size[k], np.nan)
            table[S2N_COLUMNS[version]] = np.where(good, versions.s2n[k], np.nan)
        table[PSF_SIZE_COLUMN] = np.where(good, versions.psf_size, np.nan)
    return table


@dataclass
class VersionSizes:
    """Each metacal version's size and S/N of every object, and the PSF's size.

    Attributes
    ----------
    size : numpy.ndarray
        ``(5, n)`` ``T`` per version in :data:`METACAL_VERSIONS` order, arcsec^2.
    s2n : numpy.ndarray
        ``(5, n)`` S/N per version (dimensionless).
    psf_size : numpy.ndarray
        ``(n,)`` the reconvolution PSF's ``T`` with the object's weight, arcsec^2.
    """

    size: np.ndarray
    s2n: np.ndarray
    psf_size: np.ndarray


@dataclass
class MetacalResult:
    """What a shear engine returns.

    Attributes
    ----------
    table : astropy.table.Table
        One row per stamp, in input order; see :func:`empty_result_table`.
    images : dict or None
        ``images[version]`` -> ``(n, S, S)`` float32 metacalibration images
        (ADU, noise correction included), for running a blend flagger on the
        sheared versions; None unless requested.
    engine : str
        Name of the engine that measured.
    step : float
        Metacalibration shear step.
    meta : dict
        Engine details worth recording (reconvolution PSF, noise correction, timing).
    flag_names : dict
        ``MCAL_FLAGS`` bit -> name.
    """

    table: Table
    images: dict | None = None
    engine: str = ""
    step: float = 0.01
    meta: dict = field(default_factory=dict)
    flag_names: dict = field(default_factory=lambda: dict(MCAL_FLAG_NAMES))

    @property
    def good(self) -> np.ndarray:
        """bool mask of objects measured without any flag."""
        return np.asarray(self.table["MCAL_FLAGS"]) == 0

    #: Meaning of the columns of :meth:`unit_sums` (see ``statistics``).
    sum_layout = "stamps"

    def __len__(self) -> int:
        return len(self.table)

    def good_masks(self) -> dict[str, np.ndarray]:
        """Per version, the rows measured without a flag (the same rows for every version)."""
        return {v: self.good for v in METACAL_VERSIONS}

    def bootstrap_units(self, pair_id):
        """Bootstrap unit of every row: the rotated-pair id when known, else the row."""
        return pair_id

    def complete_units(self, masks: dict, unit_id) -> dict:
        """``masks`` restricted to rows whose rotated partner is kept too (see
        :func:`blendflag.truth.pair_complete`); unchanged without pair ids."""
        from blendflag.truth import pair_complete

        return {v: pair_complete(m, unit_id) for v, m in masks.items()}

    def unit_sums(self, selection_masks, unit_id=None) -> tuple[np.ndarray, int]:
        """Per-unit sums of a selection (see :func:`selection_unit_sums`)."""
        return selection_unit_sums(self.table, selection_masks, unit_id)

    def unit_keys(self, unit_id=None) -> np.ndarray:
        """The id of each row of :meth:`unit_sums`: sorted unit ids, or the row index."""
        if unit_id is None:
            return np.arange(len(self.table), dtype=np.int64)
        return np.unique(np.asarray(unit_id)).astype(np.int64)

    def catalogue_columns(self) -> dict:
        """The result table's columns, one row per detection, for the output catalogue."""
        return {name: np.asarray(self.table[name]) for name in self.table.colnames}


# ---------------------------------------------------------------------------
# Per-unit sums of a stamp result
# ---------------------------------------------------------------------------


def good_shapes(table) -> np.ndarray:
    """Objects without flags whose five versions all have finite e1, e2."""
    good = np.asarray(table["MCAL_FLAGS"]) == 0
    for version in METACAL_VERSIONS:
        for col in SHAPE_COLUMNS[version]:
            good &= np.isfinite(np.asarray(table[col], dtype=np.float64))
    return good


def normalise_masks(selection_masks, n: int) -> dict[str, np.ndarray]:
    """``{version: mask}`` from None (keep all), one mask, or one mask per version.

    Raises
    ------
    BlendflagError
        A mask of the wrong length, or a dict missing a version.
    """
    if selection_masks is None:
        return {v: np.ones(n, dtype=bool) for v in METACAL_VERSIONS}
    if not isinstance(selection_masks, dict):
        mask = np.asarray(selection_masks, dtype=bool)
        if mask.shape != (n,):
            raise BlendflagError(f"selection mask has shape {mask.shape}, expected ({n},)")
        return {v: mask for v in METACAL_VERSIONS}
    missing = [v for v in METACAL_VERSIONS if v not in selection_masks]
    if missing:
        raise BlendflagError(
            f"selection masks are missing version(s) {', '.join(missing)}: give one mask per "
            "metacal version (noshear, 1p, 1m, 2p, 2m), or a single mask for no selection response"
        )
    out = {}
    for v in METACAL_VERSIONS:
        mask = np.asarray(selection_masks[v], dtype=bool)
        if mask.shape != (n,):
            raise BlendflagError(f"selection mask {v!r} has shape {mask.shape}, expected ({n},)")
        out[v] = mask
    return out


#: Columns of a stamp result's per-unit sums: (mask version, value column or
#: None for the count). Index 0 is the number selected on the noshear images.
STAMP_SUM_TERMS = (
    ("noshear", None),  # 0  N_S
    ("noshear", "G1_NOSHEAR"),  # 1
    ("noshear", "G2_NOSHEAR"),  # 2
    ("noshear", "G1_1P"),  # 3
    ("noshear", "G1_1M"),  # 4
    ("noshear", "G2_2P"),  # 5
    ("noshear", "G2_2M"),  # 6
    ("1p", None),  # 7
    ("1p", "G1_NOSHEAR"),  # 8
    ("1m", None),  # 9
    ("1m", "G1_NOSHEAR"),  # 10
    ("2p", None),  # 11
    ("2p", "G2_NOSHEAR"),  # 12
    ("2m", None),  # 13
    ("2m", "G2_NOSHEAR"),  # 14
)


def selection_unit_sums(table, selection_masks=None, pair_id=None) -> tuple[np.ndarray, int]:
    """The sums a selection's statistics need, per bootstrap unit.

    Parameters
    ----------
    table : astropy.table.Table
        A :class:`MetacalResult` table.
    selection_masks : dict, array_like or None
        See :func:`normalise_masks`.
    pair_id : array_like of int or None
        Bootstrap unit of each object (a rotated pair): rows of a unit are summed.

    Returns
    -------
    sums : numpy.ndarray
        ``(n_units, 15)``: per object (or per unit, when ``pair_id`` is
        given, in sorted id order) the selected counts and ellipticity sums of
        every version (see :data:`STAMP_SUM_TERMS`). Sums of several tiles can be
        stacked and reduced with :func:`blendflag.shear.statistics.statistics_from_sums`.
    n_good : int
        Objects measured without a flag (for ``fraction_kept``).
    """
    n_obj = len(table)
    masks = normalise_masks(selection_masks, n_obj)
    good = good_shapes(table)
    X = np.empty((n_obj, len(STAMP_SUM_TERMS)))
    for k, (version, col) in enumerate(STAMP_SUM_TERMS):
        sel = (masks[version] & good).astype(np.float64)
        X[:, k] = sel if col is None else sel * _column(table, col, good)
    if pair_id is None:
        return X, int(good.sum())
    pair_id = np.asarray(pair_id)
    if pair_id.shape != (n_obj,):
        raise BlendflagError(f"pair_id has shape {pair_id.shape}, expected ({n_obj},)")
    _, units = np.unique(pair_id, return_inverse=True)
    units = units.ravel()
    n_units = int(units.max()) + 1 if n_obj else 0
    sums = np.zeros((n_units, X.shape[1]))
    np.add.at(sums, units, X)
    return sums, int(good.sum())


def _column(table, col, good) -> np.ndarray:
    return np.where(good, np.asarray(table[col], dtype=np.float64), 0.0)
