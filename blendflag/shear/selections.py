"""The selections `compare` reports, measured from one shear result.

``all``
    every detection measured without a metacal flag that passes the cuts, as
    real data sees it: no truth matching, no rotated-pair completion;
``all_paired``
    on a simulated field with 90-degree rotated pairs, ``all`` kept only where
    both members of a true rotated pair are detected and kept (the rule every
    selection had before; ``dm_vs_all`` is the paired difference);
``all_masked``
    the same, measured with the other detected sources' pixels in each stamp
    filled with noise (``shear.neighbours: mask``; when the pipeline ran the
    masked measurement);
``no_true_blends``
    on a simulated field, the detections whose true galaxy's footprint
    overlaps no other (the reference a flagger should reach); on separately
    detected catalogues (metadetection) its rotated partner's must overlap
    no other either;
``no_<flagger>_blends``
    the objects a flagger does not call a blend, the flagger run on each
    metacal version's images (``context.results["metacal_flags"]``, filled by
    the flagging plugin), so the selection response ``R_S`` is measured.

Every stamp selection keeps only the objects that pass the shear
catalogue's cuts (``shear.cuts``: S/N and T / T_PSF, each metacal version on
its own measurement, :mod:`blendflag.shear.cuts`).

Stars (by the truth of a simulated field, else by the catalogue's stellar
locus: :mod:`blendflag.shear.star_cut`) are left out of every selection unless
``shear.keep_stars``; their count is ``context.results["stars"]``.

On a simulated field with 90-degree rotated pairs, ``all_paired`` and
``no_true_blends`` keep an object only when its rotated partner is kept too,
on every metacal version alike (so the selection response covers that rule);
``all``, ``all_masked`` and the flaggers' selections select by detection and
cuts alone. The bootstrap resamples square cells of the sky, the +g and -g
images' cells of one position together (:mod:`blendflag.shear.units`). Every
selection is bootstrapped with the same generator seed, so the selections are
resampled on the same units.
"""

from __future__ import annotations

import numpy as np

from blendflag.shear.results import METACAL_VERSIONS


def selection_name(flagger_name: str) -> str:
    """The selection that removes a flagger's blends, e.g. ``no_vgg16_blends``."""
    return f"no_{flagger_name}_blends"


def measure_selections(context) -> None:
    """Masks and per-unit sums of every selection, and their statistics, into the context.

    Reads ``context.results["shear"]`` (the engine's result), ``["pair_id"]``
    and ``["truth_match"]`` (the truth of a simulated field) and
    ``["metacal_flags"]`` (``{flagger: {version: bool per row}}``). Writes
    ``results["selection_masks"]``, ``["unit_sums"]`` (``{name: UnitSums}``,
    what ``--tiles`` stores and what a ±g comparison pairs), ``["selections"]``
    (the JSON entries of this image alone), ``["stars"]`` (the stars found
    and how: :meth:`blendflag.shear.star_cut.ImageStars.summary`) and the
    shear columns of the output catalogue.
    """
    from blendflag.shear.paired import UnitSums, compare_statistics, unit_description
    from blendflag.shear.star_cut import image_stars

    result = context.results["shear"]
    pairs = context.results.get("pair_id") if result.sum_layout == "stamps" else None
    units = selection_units(context, result)
    blend_flags = context.results.get("metacal_flags") or {}
    good = _cut(context, result, result.good_masks())
    stars = image_stars(context)
    star_rows = stars.version_rows(result)
    keep_stars = context.config.shear.keep_stars
    select = _Selector(star_rows, keep_stars, pairs)  # pairs: the truth's, never the cells
    masks, results_of = _selection_masks(context, result, good, select, blend_flags)
    n_stars = None if star_rows is None else int(star_rows["noshear"].sum())
    context.results["stars"] = stars.summary(n_stars, keep_stars)
    keys = result.unit_keys(units)
    unit_sums = {}
    for name, m in masks.items():
        sums, n_good = results_of.get(name, result).unit_sums(m, units)
        unit_sums[name] = UnitSums(keys, sums, n_good, context.shear_sign, result.sum_layout)
    n_boot = context.config.shear.n_bootstrap
    if context.n_bootstrap is not None:  # 0: no error bars
        n_boot = context.n_bootstrap
    entries = compare_statistics(
        {name: [u] for name, u in unit_sums.items()},
        result.step,
        context.true_shear,
        np.random.default_rng(context.seed + 1),
        n_boot,
        units=unit_description(result, context.config.shear.bootstrap_cell),
    )
    good0 = good["noshear"]
    if star_rows is not None and not keep_stars:  # the sample the flaggers cut from
        good0 = good0 & ~star_rows["noshear"]
    removed = {
        selection_name(name): (
            int(np.asarray(flags["noshear"], dtype=bool)[good0].sum()),
            int(good0.sum()),
        )
        for name, flags in blend_flags.items()
    }
    add_fraction_removed(entries, removed)
    context.results["flag_counts"] = removed
    context.results["selection_masks"] = masks
    context.results["unit_sums"] = unit_sums
    context.results["selections"] = entries
    context.results["bootstrap_unit"] = _unit_in_words(context, result)
    _annotate(context, result, pairs, units)


def _unit_in_words(context, result) -> str:
    """One bootstrap unit of this image, in words (the JSON's ``bootstrap.unit``)."""
    from blendflag.shear.paired import ENGINE_UNIT_WORDS, SKY_CELLS, unit_description
    from blendflag.shear.units import rotated_halves, unit_note

    if result.sum_layout != "stamps":
        cells = unit_description(result, context.config.shear.bootstrap_cell)
        if cells != SKY_CELLS:
            return f"{ENGINE_UNIT_WORDS} ({cells or 'its cells'})"
    rotated = rotated_halves(context.image_header, context.truth)
    return unit_note(context.config.shear.bootstrap_cell, rotated)


def _selection_masks(context, result, good: dict, select, blend_flags: dict) -> tuple:
    """``{selection: {version: mask}}`` and the result each selection is measured on.

    ``all``, ``all_masked`` and the flaggers' selections by detection and cuts
    alone; ``all_paired`` and ``no_true_blends`` in whole rotated pairs.
    """
    masks = {"all": select.detected(result, good)}
    results_of = dict.fromkeys(masks, result)
    if select.pairs is not None:  # the truth's rotated pairs (stamp results only)
        masks[PAIRED_SELECTION] = select.paired(result, good)
    masked = context.results.get("shear_masked")
    if masked is not None:  # every object, other sources' pixels filled with noise
        masks[MASKED_SELECTION] = select.detected(
            masked, _cut(context, masked, masked.good_masks())
        )
        results_of[MASKED_SELECTION] = masked
    isolated = true_isolation(context)
    if isolated is not None and result.sum_layout == "stamps":
        keep = {v: good[v] & isolated for v in METACAL_VERSIONS}
        masks[TRUTH_SELECTION] = select.paired(result, keep)
    lonely_rows = version_true_isolation(context, result)
    if lonely_rows is not None:  # separately detected catalogues: each its own match
        keep = {v: good[v] & lonely_rows[v] for v in METACAL_VERSIONS}
        masks[TRUTH_SELECTION] = select.paired(result, keep)
    for name, flags in blend_flags.items():
        keep = {v: good[v] & ~np.asarray(flags[v], dtype=bool) for v in METACAL_VERSIONS}
        masks[selection_name(name)] = select.detected(result, keep)
    return masks, results_of


class _Selector:
    """The two ways a stamp selection is made: by detection alone, or in whole rotated pairs.

    Stars are left out (or kept, each alone, with ``shear.keep_stars``) either way.
    """

    def __init__(self, star_rows: dict | None, keep_stars: bool, pairs):
        self.star_rows, self.keep_stars, self.pairs = star_rows, keep_stars, pairs

    def detected(self, result, keep: dict) -> dict:
        """``keep`` (per version) with the stars left out: no pair rule."""
        from blendflag.shear.star_cut import complete_without_stars

        return complete_without_stars(result, dict(keep), None, self.star_rows, self.keep_stars)

    def paired(self, result, keep: dict) -> dict:
        """``keep`` where the rotated partner is kept too (the truth's pairs), stars left out.

        An image engine's catalogues (metadetection) complete their own units.
        """
        from blendflag.shear.star_cut import complete_without_stars

        return complete_without_stars(
            result, dict(keep), self.pairs, self.star_rows, self.keep_stars
        )


def selection_units(context, result):
    """The bootstrap unit of every row of an engine's result: square cells of the sky.

    Stamp results: :func:`blendflag.shear.units.context_units` (None with
    ``shear.bootstrap_cell: 0``, each row its own unit). An image engine's
    version catalogues that allow it (``result.sky_cells``, the built-in
    metadetection's): the same cells, by each row's position
    (:func:`blendflag.shear.units.version_units`); otherwise, and with
    ``bootstrap_cell: 0``, the units the engine defines
    (``result.bootstrap_units``).
    """
    from blendflag.shear.units import context_units, version_units

    if result.sum_layout == "stamps":
        return context_units(context)
    sky = version_units(context, result.tables) if getattr(result, "sky_cells", False) else None
    return sky if sky is not None else result.bootstrap_units(context.results.get("pair_id"))


def _cut(context, result, good: dict) -> dict:
    """``good`` with the shear catalogue's cuts (``shear.cuts``) made on each version.

    Stamp engines only (a metadetection engine cuts its own catalogues); the
    first result's summary goes to ``context.results["shear_cuts"]``.
    """
    from blendflag.shear.cuts import shear_cut_masks

    cuts = context.config.shear.cuts
    if result.sum_layout != "stamps" or not cuts.active:
        context.results.setdefault("shear_cuts", {"applied": False})
        return dict(good)
    masks, summary = shear_cut_masks(result.table, cuts, good["noshear"])
    context.results.setdefault("shear_cuts", {"applied": True, **summary})
    return {v: good[v] & masks[v] for v in METACAL_VERSIONS}


def add_fraction_removed(entries: list, counts: dict) -> None:
    """``fraction_removed`` of each flagger's selection: flagged / measured (noshear)."""
    for entry in entries:
        if entry["name"] in counts:
            flagged, measured = counts[entry["name"]]
            entry["fraction_removed"] = flagged / measured if measured else None


#: Every object measured with the other sources' pixels filled with noise.
MASKED_SELECTION = "all_masked"

#: ``all`` in whole rotated pairs of the truth (a simulation's selection, not real data's).
PAIRED_SELECTION = "all_paired"

#: The truth reference: detections whose true galaxy overlaps no other.
TRUTH_SELECTION = "no_true_blends"


def _lonely_truth(context) -> np.ndarray | None:
    """Per true galaxy: its footprint overlaps no other's (None without that truth).

    The footprints are those at the depth ``config.shear.truth_depth`` names:
    ``field`` (the isophote at the image's own noise: the blends this image
    shows) or ``reference`` (the preset's depth, the flaggers' blend label).
    """
    truth = context.truth
    if truth is None:
        return None
    column = {"field": "OVERLAPS_FIELD", "reference": "OVERLAPS"}[context.config.shear.truth_depth]
    if column not in truth.colnames:
        return None
    return np.asarray(truth[column]) < 0


def true_isolation(context) -> np.ndarray | None:
    """Per detection: matched to a true galaxy whose footprint overlaps no other's.

    None without a truth that has the footprints (see :func:`_lonely_truth`).
    """
    lonely = _lonely_truth(context)
    match = context.results.get("truth_match")
    if lonely is None or match is None:
        return None
    return (match >= 0) & lonely[np.maximum(match, 0)]


def version_true_isolation(context, result) -> dict | None:
    """Per version of an image engine's catalogues: rows matched to a lonely true galaxy.

    Each version's detections are matched to the truth on their own, at the
    positions before that version's shear (``X_UNSHEARED``, ``Y_UNSHEARED``
    when the engine gives them, else ``X_IMAGE``, ``Y_IMAGE``); the matches
    go to ``context.results["version_truth_match"]``. A true galaxy counts as
    lonely only when its rotated partner is lonely too
    (:func:`blendflag.truth.lonely_pairs`): the footprints are those of the
    sheared field, so without whole pairs the selection is biased by the
    shear (-0.051 +/- 0.007 in m on true shapes at 3x density, docs/results.md#metadetection).
    None for a stamp result or without a truth with footprints.
    """
    lonely = _lonely_truth(context)
    if lonely is None or result.sum_layout != "versions":
        return None
    from astropy.table import Table

    from blendflag.truth import lonely_pairs, match_truth

    # no detection-level pair completion here, so complete the pairs in the truth
    lonely = lonely_pairs(lonely, context.truth)

    matches, out = {}, {}
    for v in METACAL_VERSIONS:
        t = result.tables[v]
        cols = (
            ("X_UNSHEARED", "Y_UNSHEARED")
            if "X_UNSHEARED" in t.colnames
            else ("X_IMAGE", "Y_IMAGE")
        )
        positions = Table({"X_IMAGE": t[cols[0]], "Y_IMAGE": t[cols[1]]})
        matches[v] = match_truth(positions, context.truth)
        out[v] = (matches[v] >= 0) & lonely[np.maximum(matches[v], 0)]
    context.results["version_truth_match"] = matches
    return out


def _annotate(context, result, pairs, units) -> None:
    """Shear columns (one row per detection, stamp results only) and cards."""
    ann = context.annotation
    for name, values in result.catalogue_columns().items():
        ann.columns[name] = values
    if result.sum_layout == "stamps":
        if pairs is not None:
            ann.columns["PAIR_ID"] = np.asarray(pairs).astype(np.int64)
        if units is not None:
            ann.columns["SHEAR_CELL"] = np.asarray(units).astype(np.int64)
    ann.cards.append(("BF_MCENG", result.engine, "metacalibration engine"))
    ann.cards.append(("BF_MCSTP", result.step, "metacalibration shear step"))
