"""The selections `compare` reports, measured from one shear result.

``all``
    every object measured without a metacal flag;
``no_<flagger>_blends``
    the objects a flagger does not call a blend, the flagger run on each
    metacal version's images (``context.results["metacal_flags"]``, filled by
    the flagging plugin), so the selection response ``R_S`` is measured.

On a simulated field with 90-degree rotated pairs a stamp selection keeps an
object only when its rotated partner is kept too, on every metacal version
alike (so the selection response covers that rule), and the bootstrap
resamples pairs. Every selection is bootstrapped with the same generator seed,
so the selections are resampled on the same units.
"""

from __future__ import annotations

import numpy as np

from blendflag.shear.results import METACAL_VERSIONS
from blendflag.shear.statistics import statistics_from_sums


def selection_name(flagger_name: str) -> str:
    """The selection that removes a flagger's blends, e.g. ``no_vgg16_blends``."""
    return f"no_{flagger_name}_blends"


def measure_selections(context) -> None:
    """Masks, per-unit sums and statistics of every selection, into the context.

    Reads ``context.results["shear"]`` (the engine's result), ``["pair_id"]``
    (rotated pairs of a simulated field) and ``["metacal_flags"]`` (``{flagger:
    {version: bool per row}}``). Writes ``results["selection_masks"]``,
    ``["selection_sums"]`` (``{name: (sums, n_good)}``, what ``--tiles``
    stores), ``["selections"]`` (the JSON entries) and the shear columns of the
    output catalogue.
    """
    result = context.results["shear"]
    units = result.bootstrap_units(context.results.get("pair_id"))
    blend_flags = context.results.get("metacal_flags") or {}
    good = result.good_masks()
    masks = {"all": result.complete_units(dict(good), units)}
    for name, flags in blend_flags.items():
        keep = {v: good[v] & ~np.asarray(flags[v], dtype=bool) for v in METACAL_VERSIONS}
        masks[selection_name(name)] = result.complete_units(keep, units)
    sums = {name: result.unit_sums(m, units) for name, m in masks.items()}
    n_boot = context.n_bootstrap or context.config.shear.n_bootstrap
    entries = [
        statistics_from_sums(
            name,
            unit_sums,
            n_good,
            result.step,
            context.true_shear,
            np.random.default_rng(context.seed + 1),
            n_boot,
            result.sum_layout,
        )
        for name, (unit_sums, n_good) in sums.items()
    ]
    good0 = good["noshear"]
    for entry, flags in zip(entries[1:], blend_flags.values(), strict=True):
        removed = np.asarray(flags["noshear"], dtype=bool)[good0]
        entry["fraction_removed"] = float(removed.mean()) if good0.any() else None
    context.results["selection_masks"] = masks
    context.results["selection_sums"] = sums
    context.results["selections"] = entries
    _annotate(context, result, units)


def _annotate(context, result, units) -> None:
    """Shear columns (one row per detection, stamp results only) and cards."""
    ann = context.annotation
    for name, values in result.catalogue_columns().items():
        ann.columns[name] = values
    if units is not None and result.sum_layout == "stamps":
        ann.columns["PAIR_ID"] = np.asarray(units).astype(np.int64)
    ann.cards.append(("BF_MCENG", result.engine, "metacalibration engine"))
    ann.cards.append(("BF_MCSTP", result.step, "metacalibration shear step"))
