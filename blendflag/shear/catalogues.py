"""The result of an image engine: one catalogue per metacal version (metadetection)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from blendflag.shear.results import MCAL_FLAG_NAMES, METACAL_VERSIONS


@dataclass
class VersionCatalogues:
    """What an image engine returns: one catalogue per metacal version.

    Each version's catalogue comes from its own detection on that version's
    image (metadetection): rows are not matched between versions, and the
    response ``R11 = (<e1>_1p - <e1>_1m) / (2 step)`` is formed from the
    separately selected catalogues, selection response included.

    Attributes
    ----------
    tables : dict
        ``tables[version]``: astropy Table with at least ``G1``, ``G2``
        (ellipticity), ``MCAL_FLAGS`` (int32 bits of :data:`MCAL_FLAG_NAMES`)
        and the detection's ``X_IMAGE``, ``Y_IMAGE`` (1-based pixels).
    images : dict or None
        ``images[version]``: ``(n_version, S, S)`` stamps of that version's
        detections (ADU), for running blend flaggers on each version.
    units : dict or None
        ``units[version]``: int bootstrap unit of every row (a cell, a ±g
        pair of images); None makes every row its own unit.
    engine, step, meta, flag_names
        As for :class:`MetacalResult`.
    sky_cells : bool
        The engine's units are only cells of the image by position, so the
        pipeline may put the rows in its own cells of the sky instead
        (:func:`blendflag.shear.units.version_units`, with
        ``shear.bootstrap_cell`` > 0); False keeps the engine's units.
        [default: False]
    """

    tables: dict
    images: dict | None = None
    units: dict | None = None
    engine: str = ""
    step: float = 0.01
    meta: dict = field(default_factory=dict)
    flag_names: dict = field(default_factory=lambda: dict(MCAL_FLAG_NAMES))
    sky_cells: bool = False

    #: Meaning of the columns of :meth:`unit_sums` (see ``statistics``).
    sum_layout = "versions"

    def __len__(self) -> int:
        return len(self.tables["noshear"])

    @property
    def good(self) -> np.ndarray:
        """bool mask of the noshear catalogue's rows measured without a flag."""
        return self.good_masks()["noshear"]

    def bootstrap_units(self, pair_id):
        """Bootstrap units: the engine's own (:attr:`units`); detection pair ids do not apply."""
        return self.units

    def complete_units(self, masks: dict, unit_id) -> dict:
        """Unchanged: rows of separately detected catalogues are not paired."""
        return masks

    def unit_keys(self, unit_id=None) -> np.ndarray:
        """The id of each row of :meth:`unit_sums` (0 to the largest unit)."""
        units = unit_id if unit_id is not None else self.units
        if units is None:
            return np.arange(len(self.tables["noshear"]), dtype=np.int64)
        top = max((int(np.max(u)) for u in units.values() if len(u)), default=0)
        return np.arange(top + 1, dtype=np.int64)

    def catalogue_columns(self) -> dict:
        """None: version catalogues have their own rows, not the pipeline's detections."""
        return {}

    def good_masks(self) -> dict[str, np.ndarray]:
        """Per version, the rows of its catalogue measured without a flag."""
        out = {}
        for v in METACAL_VERSIONS:
            t = self.tables[v]
            good = np.asarray(t["MCAL_FLAGS"]) == 0
            for col in ("G1", "G2"):
                good &= np.isfinite(np.asarray(t[col], dtype=np.float64))
            out[v] = good
        return out

    def unit_sums(self, selection_masks, unit_id=None) -> tuple[np.ndarray, int]:
        """Per-unit sums ``(n_units, 15)``: for each version, count, sum e1, sum e2.

        Parameters
        ----------
        selection_masks : dict
            ``{version: bool mask over that version's rows}``.
        unit_id : dict or None
            ``{version: int unit per row}``; default :attr:`units`, else one
            unit per noshear row (rows of other versions then share unit 0).
        """
        units = unit_id if unit_id is not None else self.units
        good = self.good_masks()
        parts = []
        for v in METACAL_VERSIONS:
            t = self.tables[v]
            sel = (np.asarray(selection_masks[v], dtype=bool) & good[v]).astype(np.float64)
            e1 = np.where(sel > 0, np.asarray(t["G1"], dtype=np.float64), 0.0)
            e2 = np.where(sel > 0, np.asarray(t["G2"], dtype=np.float64), 0.0)
            if units is None:
                uid = np.arange(len(t)) if v == "noshear" else np.zeros(len(t), dtype=np.int64)
            else:
                uid = np.asarray(units[v], dtype=np.int64)
            parts.append((uid, np.column_stack([sel, sel * e1, sel * e2])))
        n_units = 1 + max((int(uid.max()) for uid, _ in parts if uid.size), default=0)
        sums = np.zeros((n_units, 3 * len(METACAL_VERSIONS)))
        for k, (uid, X) in enumerate(parts):
            np.add.at(sums[:, 3 * k : 3 * k + 3], uid, X)
        return sums, int(good["noshear"].sum())
