"""Shear statistics of several selections together: ±g pairs and paired differences.

A comparison measures each selection on the same images: once on a field
sheared by +g and, with ±g pairs, once on the same galaxies and the same pixel
noise sheared by -g. Each selection gives, per image, its per-unit sums
(:class:`UnitSums`: one row per bootstrap unit, keyed by the unit's id, the
rotated pair of the truth on a simulated field). This module then

- puts every selection and sign on one table of units (the union of keys), so
  that one bootstrap draw resamples the same units (rotated pair x sign) for
  every selection;
- forms, per selection, ``m = (g1(+) - g1(-)) / (2 g) - 1``,
  ``c1 = (g1(+) + g1(-)) / 2`` and ``c2 = (g2(+) + g2(-)) / 2`` with ±g pairs,
  or ``m = g1 / g - 1`` and ``c2 = g2`` with one sign (``c1`` is then not
  separable from m and is None);
- forms the differences ``dm_vs_all`` and ``dm_vs_truth`` (against the
  selections ``all`` and ``no_true_blends``) on the same draws, so their errors
  are those of the difference, not two errors added in quadrature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blendflag.shear.statistics import _estimates

#: Fewest units (rotated pairs, or objects) with a measurement for a selection's shear,
#: m and c: below it they are null, with the reason in ``null_reason``.
MIN_UNITS = 10

#: The reference selections of the differences.
ALL = "all"
TRUTH = "no_true_blends"


@dataclass
class UnitSums:
    """One selection's per-unit sums on one image.

    Attributes
    ----------
    keys : numpy.ndarray
        int64 id of each unit (row of ``sums``).
    sums : numpy.ndarray
        ``(n_units, 15)`` sums in the result's ``layout``.
    n_good : int
        Objects measured without a flag on that image.
    sign : int
        +1 for the image sheared by +g (or the only image), -1 for its -g twin.
    layout : str
        ``stamps`` or ``versions`` (see :func:`blendflag.shear.statistics._estimates`).
    """

    keys: np.ndarray
    sums: np.ndarray
    n_good: int
    sign: int = 1
    layout: str = "stamps"

    def to_arrays(self, index: int, keys=None) -> dict:
        """The arrays that store these sums as selection ``index`` of a sums file.

        Parameters
        ----------
        index : int
            The selection's place in the file (``keys<index>``, ``sums<index>``...).
        keys : numpy.ndarray or None
            Unit ids to store instead of :attr:`keys`: ``keys[k]`` for unit ``k``
            (a sub-tile's rows in the whole catalogue).
        """
        stored = self.keys if keys is None else np.asarray(keys)[self.keys]
        return {
            f"keys{index}": stored,
            f"sums{index}": self.sums,
            f"ngood{index}": np.array(self.n_good),
        }

    @classmethod
    def from_arrays(cls, data, index: int, sign: int, layout: str, offset: int = 0) -> UnitSums:
        """The sums of selection ``index`` of a loaded sums file, unit ids moved by ``offset``."""
        return cls(
            data[f"keys{index}"] + offset,
            data[f"sums{index}"],
            int(data[f"ngood{index}"]),
            sign,
            layout,
        )


@dataclass
class SumsFile:
    """One image's (or tile's) per-unit sums of every selection: the ``*.sums.npz`` format.

    ``compare --tiles`` and split images store one per tile; combining them
    (:func:`blendflag.tiling.runner.combine_tiles`) pairs the +g and -g files of
    one field unit by unit. Written atomically; a file with another ``hash``
    than the run's is measured again.

    Attributes
    ----------
    selections : dict
        ``{name: UnitSums}``.
    flag_counts : dict
        ``{name: (flagged, measured)}`` of the flaggers' selections.
    hash : str
        What marks the tile done (its inputs and the run's settings).
    sign : int
        +1, or -1 for the -g twin of a ±g pair.
    field : str
        The key that pairs the +g and -g files of one simulated field.
    true_shear : tuple or None
        The image's own applied shear (g1, g2), sign included.
    step : float
        Metacalibration shear step.
    engine, layout, shape, neighbour_masking, noise_fields : str
        What measured (as the JSON reports it); ``""`` when unknown.
    units : str
        What one bootstrap unit of the file is, in words; ``""`` when unknown.
    stars : dict or None
        The stars of the image (``n``, ``identified_by``, ``note``:
        :meth:`blendflag.shear.star_cut.ImageStars.summary`); None in a file
        written before stars were counted.
    psf_check : dict or None
        The PSF model against the image's stars
        (:meth:`blendflag.psf.star_check.PSFCheck.document`); None when not checked.
    """

    selections: dict
    flag_counts: dict
    hash: str
    sign: int
    field: str
    true_shear: tuple | None
    step: float
    engine: str
    layout: str
    shape: str = ""
    neighbour_masking: str = ""
    noise_fields: str = ""
    units: str = ""
    stars: dict | None = None
    psf_check: dict | None = None

    #: Text fields stored as they are.
    _TEXT = (
        "hash", "field", "engine", "layout", "shape", "neighbour_masking", "noise_fields", "units"
    )  # fmt: skip
    #: Fields stored as JSON text (``""``: None).
    _JSON = ("stars", "psf_check")

    def save(self, path, keys=None) -> None:
        """Write the file atomically (``keys``: see :meth:`UnitSums.to_arrays`)."""
        import json

        from blendflag.io.atomic import atomic_output

        arrays = {name: np.array(getattr(self, name) or "") for name in self._TEXT}
        for name in self._JSON:
            value = getattr(self, name)
            arrays[name] = np.array("" if value is None else json.dumps(value))
        arrays.update(
            names=np.array(list(self.selections)),
            sign=np.array(self.sign),
            step=np.array(self.step),
            true_shear=np.array(self.true_shear if self.true_shear else [np.nan, np.nan]),
        )
        for k, (name, sums) in enumerate(self.selections.items()):
            arrays.update(sums.to_arrays(k, keys))
            arrays[f"flagged{k}"] = np.array(self.flag_counts.get(name, (-1, -1)))
        with atomic_output(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path, offset: int = 0) -> SumsFile:
        """Read a sums file; unit ids are moved by ``offset`` (to keep fields apart).

        Raises
        ------
        blendflag.errors.BlendflagError
            A file written by an older blendflag.
        """
        import json

        from blendflag.errors import BlendflagError

        with np.load(path, allow_pickle=False) as data:
            if "keys0" not in data.files:
                raise BlendflagError(
                    f"{Path(path).name} was written by an older blendflag: delete it and "
                    "rerun the tile"
                )
            text = {n: str(data[n]) if n in data.files else "" for n in cls._TEXT}
            stored = {n: str(data[n]) if n in data.files else "" for n in cls._JSON}
            sign, layout = int(data["sign"]), text["layout"]
            names = [str(n) for n in data["names"]]
            selections = {
                name: UnitSums.from_arrays(data, k, sign, layout, offset)
                for k, name in enumerate(names)
            }
            counts = {
                name: tuple(int(v) for v in data[f"flagged{k}"]) for k, name in enumerate(names)
            }
            shear = tuple(float(v) for v in data["true_shear"])
            step = float(data["step"])
        return cls(
            selections=selections,
            flag_counts={n: c for n, c in counts.items() if c[1] >= 0},
            sign=sign,
            true_shear=None if np.isnan(shear[0]) else shear,
            step=step,
            **text,
            **{n: json.loads(v) if v else None for n, v in stored.items()},
        )

    @staticmethod
    def stored_hash(path) -> str | None:
        """The ``hash`` of a sums file; None when there is no readable file."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return str(data["hash"])
        except (OSError, KeyError, ValueError, EOFError):
            return None


def bootstrap_counts(n_units: int, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_bootstrap, n_units)`` float32: how often each unit is drawn in each resampling."""
    counts = np.empty((n_bootstrap, n_units), dtype=np.float32)
    for b in range(n_bootstrap):
        counts[b] = np.bincount(rng.integers(0, n_units, size=n_units), minlength=n_units)
    return counts


def _float(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _std(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if values.size >= 2 else None


def _biases(est: dict, true_g1: float | None, paired: bool) -> dict:
    """g1, g2, m, c1, c2 (and m without R_S) from per-sign estimates.

    One sign alone (the -g image of a pair measured on its own, say) compares
    its g1 with that sign's true shear.
    """
    out = {}
    if not paired:
        ((sign, only),) = est.items()
        out["g1"], out["g2"] = only["g1"], only["g2"]
        out["c1"] = np.full_like(only["g1"], np.nan)
        out["c2"] = only["g2"]
        if true_g1:
            out["m"] = out["g1"] / (sign * true_g1) - 1.0
            out["m_noRS"] = only["g1_noRS"] / (sign * true_g1) - 1.0
        return out
    plus, minus = est[1], est[-1]
    if paired:
        out["g1"] = (plus["g1"] - minus["g1"]) / 2.0
        out["g2"] = (plus["g2"] + minus["g2"]) / 2.0
        out["c1"] = (plus["g1"] + minus["g1"]) / 2.0
        out["c2"] = out["g2"]
        g1_noRS = (plus["g1_noRS"] - minus["g1_noRS"]) / 2.0
    if true_g1:
        out["m"] = out["g1"] / true_g1 - 1.0
        out["m_noRS"] = g1_noRS / true_g1 - 1.0
    return out


def compare_statistics(
    selections: dict,
    step: float,
    true_shear=None,
    rng: np.random.Generator | None = None,
    n_bootstrap: int = 200,
    units: str | None = None,
) -> list[dict]:
    """The JSON entries of every selection, with paired differences.

    Parameters
    ----------
    selections : dict
        ``{name: [UnitSums, ...]}``: one entry per image (sign) the selection
        was measured on; every selection on the same images.
    step : float
        Metacalibration shear step.
    true_shear : (float, float) or None
        The shear of the +g image (applied along g1); None leaves m and c null.
    rng : numpy.random.Generator or None
        The bootstrap's generator: one set of draws for all selections.
        [default: seeded with 0]
    n_bootstrap : int
        Resamplings. [default: 200]
    units : str or None
        What a unit of an image engine is, for the reason of a null m (e.g.
        ``200-px cells, 4 in the image``: :func:`unit_description`); None
        names them from the sums' layout.

    Returns
    -------
    list of dict
        Per selection ``name, n, n_per_image, fraction_kept, R11, R22, R11_S, R22_S, g1,
        g1_err, g2, g2_err, m, m_err, c1, c1_err, c2, c2_err, c, c_err (= c2),
        m_noRS, m_noRS_err, dm_vs_all, dm_vs_all_err, dm_vs_truth,
        dm_vs_truth_err``; non-finite values and missing references are None.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    keys = np.unique(np.concatenate([u.keys for parts in selections.values() for u in parts]))
    n_units = len(keys)
    true_g1 = None if true_shear is None else float(true_shear[0])
    signs = sorted({u.sign for parts in selections.values() for u in parts}, reverse=True)
    paired = signs == [1, -1]
    counts = (
        bootstrap_counts(n_units, n_bootstrap, rng) if n_units > 1 and n_bootstrap > 1 else None
    )
    point, boot, meta = {}, {}, {}
    for name, parts in selections.items():
        point[name], boot[name], meta[name] = _selection_estimates(
            parts, keys, counts, step, true_g1, paired
        )
    entries = []
    for name in selections:
        entry = _entry(name, point, boot, meta, true_g1)
        entry["null_reason"] = null_reason(
            meta[name]["n_units"], true_g1, meta[name]["layout"], units
        )
        _null_small_selections(entry, meta)
        entries.append(entry)
    return entries


def _selection_estimates(parts: list, keys, counts, step: float, true_g1, paired: bool) -> tuple:
    """One selection's biases (point and bootstrap) and its counts, on the table of units.

    Returns
    -------
    (dict, dict or None, dict)
        Biases of the point estimate, biases of each bootstrap draw (None
        without draws), and ``response``, ``n``, ``n_per_image``, ``n_good``,
        ``n_units``.
    """
    stacked, est, est_boot = {}, {}, {}
    for u in parts:
        table = np.zeros((len(keys), u.sums.shape[1]))
        table[np.searchsorted(keys, u.keys)] = u.sums
        stacked[u.sign] = stacked.get(u.sign, 0) + table
    layout = parts[0].layout
    for sign, table in stacked.items():
        est[sign] = _estimates(table.sum(axis=0), step, true_g1, layout)
        if counts is not None:
            est_boot[sign] = _estimates(counts @ table, step, true_g1, layout)
    total = sum(stacked.values())
    meta = {
        "response": _estimates(total.sum(axis=0), step, true_g1, layout),
        "n": int(np.rint(total[:, 0].sum())),
        "n_per_image": [int(np.rint(u.sums[:, 0].sum())) for u in parts],
        "n_good": sum(u.n_good for u in parts),
        "n_units": int((np.abs(total).sum(axis=1) > 0).sum()),
        "layout": layout,
    }
    boot = _biases(est_boot, true_g1, paired) if counts is not None else None
    return _biases(est, true_g1, paired), boot, meta


def _entry(name: str, point: dict, boot: dict, meta: dict, true_g1) -> dict:
    """The JSON entry of one selection: counts, responses, biases, paired differences."""
    p, b, info = point[name], boot[name], meta[name]
    entry = {
        "name": name,
        "n": info["n"],
        "n_per_image": info["n_per_image"],
        "fraction_kept": info["n"] / info["n_good"] if info["n_good"] else None,
    }
    for key in ("R11", "R22", "R11_S", "R22_S"):
        entry[key] = _float(info["response"][key])
    for key in ("g1", "g2", "m", "c1", "c2", "m_noRS"):
        value = p.get(key) if (true_g1 is not None or key in ("g1", "g2")) else None
        entry[key] = None if value is None else _float(value)
        entry[f"{key}_err"] = None if (b is None or key not in b) else _std(b[key])
    entry["c"], entry["c_err"] = entry["c2"], entry["c2_err"]
    for ref, label in ((ALL, "dm_vs_all"), (TRUTH, "dm_vs_truth")):
        entry[label] = entry[f"{label}_err"] = None
        if ref in point and "m" in p and "m" in point[ref]:
            entry[label] = _float(p["m"] - point[ref]["m"])
            if b is not None:
                entry[f"{label}_err"] = _std(b["m"] - boot[ref]["m"])
    entry["n_units"] = info["n_units"]
    return entry


def _null_small_selections(entry: dict, meta: dict) -> None:
    """Null what rests on too few units: the selection's shear, or a difference's reference."""
    name = entry["name"]
    too_few = [n for n in (name, ALL, TRUTH) if n in meta and meta[n]["n_units"] < MIN_UNITS]
    if meta[name]["n_units"] < MIN_UNITS:
        for key in ("g1", "g2", "m", "c1", "c2", "c", "m_noRS", "dm_vs_all", "dm_vs_truth"):
            entry[key] = entry[f"{key}_err"] = None
    elif too_few:  # a difference against a reference that has too few units
        for label, ref in (("dm_vs_all", ALL), ("dm_vs_truth", TRUTH)):
            if ref in too_few:
                entry[label] = entry[f"{label}_err"] = None


def null_reason(
    n_units: int, true_g1: float | None, layout: str = "stamps", units: str | None = None
) -> str | None:
    """Why a selection's m is null (None when it is not).

    Parameters
    ----------
    n_units : int
        Units of the selection with a measurement: cells of the sky or
        detections (layout ``stamps``, :mod:`blendflag.shear.units`), an image
        engine's cells (``versions``).
    true_g1 : float or None
        The true shear along g1 (None or 0: m is undefined).
    layout : str
        The sums' layout (:attr:`UnitSums.layout`), which says what a unit is.
        [default: ``stamps``]
    units : str or None
        An image engine's units, e.g. ``200-px cells, 4 in the image``, or
        :data:`SKY_CELLS` when they are the sky cells of
        ``shear.bootstrap_cell`` (:func:`unit_description`). [default: named
        from ``layout``]
    """
    if n_units < MIN_UNITS and layout == "versions" and units != SKY_CELLS:
        cells = units or "cells of shear.options.<engine>.cell_size px"
        return (
            f"too few cells: {n_units} measured units, at least {MIN_UNITS} needed; an "
            f"image engine (metadetection) resamples whole cells, not objects ({cells}): "
            "give a larger image, more images (compare --tiles) or a smaller "
            "shear.options.<engine>.cell_size in the config"
        )
    if n_units < MIN_UNITS:
        return (
            f"too few units: {n_units} measured, at least {MIN_UNITS} needed; the bootstrap "
            "resamples square cells of the sky (shear.bootstrap_cell pixels, each detection "
            "with 0): give a larger image, more images (compare --tiles) or a smaller "
            "shear.bootstrap_cell in the config"
        )
    if true_g1 is None:
        return "no true shear (give --true-shear or --truth)"
    if not true_g1:
        return "true g1 is 0: m is undefined"
    return None


def unit_description(metacal, bootstrap_cell: int = 0) -> str | None:
    """An image engine's units in words, for :func:`null_reason`: its cells, or the sky's.

    Parameters
    ----------
    metacal : blendflag.shear.results.MetacalResult or blendflag.shear.catalogues.VersionCatalogues
        An engine's result; an image engine's ``meta`` gives ``cells`` (how many
        in the image) and ``settings["cell_size"]`` (pixels) when it has them.
    bootstrap_cell : int
        ``shear.bootstrap_cell`` of the run (pixels): above 0, the rows of an
        image engine that allows it (``sky_cells``) are put in the sky's
        cells (:func:`blendflag.shear.units.version_units`). [default: 0]

    Returns
    -------
    str or None
        e.g. ``200-px cells, 4 in the image``; :data:`SKY_CELLS` for an
        image engine's rows in sky cells; None for a stamp engine's result
        or without ``cells``.
    """
    meta = getattr(metacal, "meta", None) or {}
    if getattr(metacal, "sum_layout", "stamps") != "versions":
        return None
    if bootstrap_cell and getattr(metacal, "sky_cells", False):
        return SKY_CELLS
    if "cells" not in meta:
        return None
    size = (meta.get("settings") or {}).get("cell_size")
    kind = f"{size}-px cells" if size else "cells"
    return f"{kind}, {meta['cells']} in the image"


#: :func:`unit_description` of an image engine whose rows are put in the sky's
#: cells (``shear.bootstrap_cell``), as a stamp engine's detections are.
SKY_CELLS = "sky cells"

#: How an image engine's own cells start in the JSON's ``bootstrap.unit``.
ENGINE_UNIT_WORDS = "one cell of the image engine"
