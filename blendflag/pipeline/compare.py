"""Shear several ways: all sources, without each flagger's blends, and the truth's reference.

`compare` builds one pipeline context per image (:mod:`blendflag.pipeline.field_input`:
a simulated field and its -g twin, or the user's files) and runs the
pipeline's stages on each: detect, cutout, flag_blends, match_truth,
measure_shear, flag_metacal_blends, shear_statistics, annotate. The
selections' per-unit sums (:mod:`blendflag.shear.selections`) of the two
images are then paired unit by unit (:mod:`blendflag.shear.paired`): m and c
from ±g, and the differences between selections on the same bootstrap draws.
``compare --tiles`` (:mod:`blendflag.tiling.runner`) calls :func:`run_compare` per
tile and pairs the stored sums the same way, so both routes measure alike.

The catalogue columns ``BLEND_<NAME>`` are the flags on the original images
(as ``flag`` writes them); ``MCAL_BLEND_<NAME>`` are the flags on the noshear
metacal images that the selections use.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from blendflag.pipeline.stages import Context, run_pipeline


@dataclass
class CompareSummary:
    """What one comparison measured, whichever route ran it: the JSON contract.

    The direct run (:func:`run_compare`), ``--tiles``
    (:func:`blendflag.tiling.runner.combine_tiles`) and a split image
    (:func:`blendflag.tiling.split_image.run_split_compare`) each fill one;
    :meth:`document` makes the JSON, so the three have the same keys (a key
    that does not apply to a route is null).

    Attributes
    ----------
    selections : list of dict
        One entry per selection (:func:`blendflag.shear.paired.compare_statistics`).
    engine : str
        The shear engine's name (several joined by commas: tiles measured apart).
    step : float
        Metacalibration shear step.
    true_shear : list or None
        The +g image's shear (g1, g2), the reference of m; None for real data.
    shear_pairs : bool
        Whether m and c come from ±g pairs.
    n_objects, n_measured : int
        Catalogue rows, and rows measured without a flag.
    noise_fields, shape, neighbour_masking : str or None
        How the engine measured (correction fields, shape measurement, the
        masking of ``all_masked``).
    n_in_complete_pairs : int or None
        Rows in whole rotated pairs (simulations).
    input : dict or None
        What was measured (the simulated field's preset, or your files).
    truth : dict or None
        The truth's blend counts and its depth (simulations).
    flaggers : dict or None
        ``{name: settings}`` of each flagger.
    original_images_flagged : bool or None
        Whether the ``BLEND_<NAME>`` columns were filled.
    timings_s : dict
        Seconds per stage and ``total``.
    workers : int or None
        Processes of the run.
    tiles : dict or None
        ``--tiles``: ``names``, ``n``, and ``status`` (done, skipped, failed).
    sub_tiles : dict or None
        A split image: cores, margin, counts, seconds per task and stage.
    stars : dict or None
        The detections that are stars (:func:`blendflag.shear.star_cut.stars_summary`):
        ``n`` (over every image; None when they could not be identified),
        ``identified_by`` (``truth``, ``stellar locus`` or None), ``kept``
        (``shear.keep_stars``: else they are left out of every selection) and
        ``note``.
    psf_check : dict or None
        The PSF model against the catalogue's stars
        (:class:`blendflag.psf.star_check.PSFCheck`: ``n_stars``, ``size_ratio``
        and its error, ``de1``, ``de2``, ``tolerance``, ``passed``); None
        without a catalogue, or without stars on its stellar locus.
    shear_cuts : dict or None
        The shear catalogue's cuts (:func:`blendflag.shear.cuts.shear_cut_masks`):
        ``applied``, ``s2n_min``, ``t_ratio_min``, ``in_response``,
        ``size_cut``, and over every image ``kept_noshear`` of ``measured``.
    bootstrap : dict or None
        How the errors were drawn (:func:`bootstrap_summary`): ``unit`` (what
        one resampled unit is), ``draws`` and ``seed``.
    """

    selections: list
    engine: str
    step: float
    true_shear: list | None
    shear_pairs: bool
    n_objects: int
    n_measured: int
    noise_fields: str | None = None
    shape: str | None = None
    neighbour_masking: str | None = None
    n_in_complete_pairs: int | None = None
    input: dict | None = None
    truth: dict | None = None
    flaggers: dict | None = None
    original_images_flagged: bool | None = None
    timings_s: dict = field(default_factory=dict)
    workers: int | None = None
    tiles: dict | None = None
    sub_tiles: dict | None = None
    stars: dict | None = None
    psf_check: dict | None = None
    shear_cuts: dict | None = None
    bootstrap: dict | None = None

    def document(self, argv=None) -> dict:
        """The JSON document: every attribute, and what produced it (``provenance``).

        Parameters
        ----------
        argv : list of str or None
            The command line that ran the comparison. [default: ``sys.argv``]
        """
        from blendflag._runtime.provenance import provenance

        document = asdict(self)
        document["timings_s"] = {k: round(v, 2) for k, v in self.timings_s.items()}
        return {"provenance": provenance(argv), **document}


@dataclass
class CompareResult:
    """Everything `compare` produces.

    Attributes
    ----------
    summary : CompareSummary
        What was measured (:attr:`json` is its document).
    contexts : list of blendflag.pipeline.stages.Context
        The pipeline's context of each image after the run (+g first).
    """

    summary: CompareSummary | None
    contexts: list

    @property
    def json(self) -> dict:
        """The JSON document (see :class:`CompareSummary`)."""
        return self.summary.document()

    @property
    def context(self):
        """The first image's context (the +g field of a pair)."""
        return self.contexts[0]

    @property
    def unit_sums(self) -> dict:
        """``{selection: [UnitSums per image]}``: what ``--tiles`` stores."""
        names = self.contexts[0].results["unit_sums"]
        return {n: [c.results["unit_sums"][n] for c in self.contexts] for n in names}

    @property
    def metacal(self):
        """The shear engine's result on the first image."""
        return self.contexts[0].results["shear"]


def run_compare(
    pm,
    config,
    data,
    flaggers,
    engine_cls,
    *,
    seed: int = 0,
    workers: int = 1,
    scheduler: str | None = None,
    quiet: bool = True,
    n_bootstrap: int | None = None,
    flag_original: bool = True,
    masked_selection: bool = True,
    psf_check: str = "warn",
) -> CompareResult:
    """Detect, flag, measure and compare the selections: the pipeline's stages, in order.

    Parameters
    ----------
    pm : pluggy.PluginManager
    config : blendflag.config.PipelineConfig
    data : FieldInput or list of FieldInput
        One image, or a ±g pair (signs +1 and -1): each runs through the
        pipeline, and the selections are paired unit by unit.
    flaggers : list of blendflag.flagging.flaggers.Flagger
    engine_cls : type
        The shear engine class (its ``name`` is what the pipeline runs).
    seed : int
        Seed of the noise-correction fields and the bootstrap.
    workers : int
        Processes for the shear measurement. [default: 1]
    scheduler : str or None
        Dask scheduler address for the shear measurement.
    quiet : bool
        No progress bar. [default: True]
    n_bootstrap : int or None
        Bootstrap resamplings; None takes the config's.
    flag_original : bool
        Also run the flaggers on the original stamps (the pipeline's
        ``flag_blends`` stage: the ``BLEND_<NAME>`` columns of the annotated
        catalogue). The selections use only the flags on the metacal images,
        so a run that writes no catalogue can skip them. [default: True]
    masked_selection : bool
        Also report ``all_masked``: every object measured again with the other
        sources' pixels filled with noise (skipped when ``shear.neighbours``
        already masks, or for an image engine). [default: True]
    psf_check : str
        The PSF model against the stars of the first image's catalogue, before
        measuring (:mod:`blendflag.psf.star_check`): ``warn`` (one warning
        when it fails), ``strict`` (an error), ``record`` (only the JSON's
        ``psf_check``), ``off``. [default: "warn"]

    Raises
    ------
    blendflag.errors.BlendflagError
        ``psf_check="strict"`` and the PSF model does not match the stars.
    """
    inputs = list(data) if isinstance(data, (list, tuple)) else [data]
    start = time.perf_counter()
    for flagger in flaggers:  # the depth of the truth's blend definition (simulations)
        flagger.default_reference_noise(inputs[0].reference_noise)
    first = inputs[0]  # m is measured against the shear of the +g image
    true_shear = (
        None if first.true_shear is None else tuple(first.sign * g for g in first.true_shear)
    )
    checked = input_psf_check(first, psf_check)
    settings = {
        "pm": pm,
        "config": config,
        "flagger_objects": list(flaggers),
        "flag_original": flag_original,
        "shear_engine": engine_cls.name,
        "true_shear": true_shear,
        "seed": seed,
        "workers": workers,
        "scheduler": scheduler,
        "quiet": quiet,
        "n_bootstrap": n_bootstrap,
        "masked_selection": masked_selection,
    }
    contexts = [_run_image(item, settings) for item in inputs]
    result = CompareResult(summary=None, contexts=contexts)
    n_boot = config.shear.n_bootstrap if n_bootstrap is None else n_bootstrap
    entries = _paired_entries(result, true_shear, np.random.default_rng(seed + 1), n_boot)
    timings = {}
    for context in contexts:
        for key, value in context.timings.items():
            timings[key] = timings.get(key, 0.0) + value
    timings["total"] = time.perf_counter() - start
    result.summary = _summary(contexts, inputs, flaggers, entries, timings)
    result.summary.psf_check = checked
    result.summary.bootstrap = bootstrap_summary(
        [c.results.get("bootstrap_unit") for c in contexts],
        result.summary.shear_pairs,
        n_boot,
        seed + 1,
    )
    return result


def input_psf_check(item, mode: str = "warn") -> dict | None:
    """The PSF of one image against its catalogue's stellar-locus stars (``psf_check``).

    Parameters
    ----------
    item : FieldInput
        Its catalogue, image, weight, PSF (or PSF model) and pixel scale.
    mode : str
        ``warn``, ``strict``, ``record`` or ``off`` (see :func:`run_compare`).

    Returns
    -------
    dict or None
        :meth:`blendflag.psf.star_check.PSFCheck.document`; None without a
        catalogue, without stars on its locus, or ``off``.
    """
    if mode == "off" or item.catalogue is None:
        return None
    from blendflag.psf.model import ImagePSF
    from blendflag.psf.star_check import check_psf_at_locus, report_check

    model = item.psf_model if item.psf_model is not None else ImagePSF(item.psf)
    check = check_psf_at_locus(
        item.image, model, item.catalogue.table, item.weight, item.pixel_scale
    )
    if mode in ("warn", "strict"):
        report_check(check, strict=mode == "strict")
    return check


def _run_image(item, settings: dict):
    """Run the pipeline's stages on one image; return its context.

    ``settings`` holds the run's keyword arguments of :class:`Context` shared
    by every image (plugin manager, config, flaggers, engine, seed, ...).
    """
    context = Context(
        image=item.image,
        weight=item.weight,
        psf=item.psf,
        psf_model=getattr(item, "psf_model", None),
        image_header=item.header,
        catalogue=item.catalogue,
        table=item.catalogue.table if item.catalogue is not None else None,
        pixel_scale=item.pixel_scale,
        noise_sigma=item.noise_sigma if item.noise_sigma else None,
        truth=item.truth,
        shear_sign=item.sign,
        **{
            **settings,
            "flagger_objects": list(settings["flagger_objects"]),
            "seed": field_seed(settings["seed"], getattr(item, "field", None)),
        },
    )
    context.rng = np.random.default_rng(context.seed)
    context.flaggers = [f.name for f in settings["flagger_objects"]]
    context.segmentation = getattr(item, "segmentation", None)
    for key in ("object_keys", "segment_ids", "light_models", "frame"):  # a split image's
        if getattr(item, key, None) is not None:
            context.results[key] = getattr(item, key)
    if getattr(item, "stars", None) is not None:  # a split image's: the whole catalogue's
        context.results["stars_given"] = item.stars
    run_pipeline(context)
    return context


def _paired_entries(result, true_shear, rng, n_bootstrap: int) -> list[dict]:
    """Every selection's statistics, the images paired unit by unit, with the flaggers' counts."""
    from blendflag.shear.paired import compare_statistics, unit_description
    from blendflag.shear.selections import add_fraction_removed

    entries = compare_statistics(
        result.unit_sums, result.metacal.step, true_shear, rng, n_bootstrap,
        units=unit_description(result.metacal, result.contexts[0].config.shear.bootstrap_cell),
    )  # fmt: skip
    counts = {}
    for context in result.contexts:
        for name, (flagged, measured) in context.results.get("flag_counts", {}).items():
            old = counts.get(name, (0, 0))
            counts[name] = (old[0] + flagged, old[1] + measured)
    add_fraction_removed(entries, counts)
    return entries


def _truth_info(contexts, inputs) -> dict | None:
    """The truth's blend counts per image and its depth (None without a truth table)."""
    from blendflag.truth import truth_summary

    if inputs[0].truth is None:
        return None
    per_image = []
    for context, item in zip(contexts, inputs, strict=True):
        blend_flags = {
            name: flags["noshear"]
            for name, flags in (context.results.get("metacal_flags") or {}).items()
        }
        # an image engine's flags are on its own noshear detections
        match = (context.results.get("version_truth_match") or {}).get(
            "noshear", context.results["truth_match"]
        )
        per_image.append(truth_summary(match, item.truth, blend_flags))
    info = per_image[0] if len(per_image) == 1 else {"plus": per_image[0], "minus": per_image[1]}
    info["matching"] = (
        "each metacal version's own detections, at their positions before that version's shear"
        if contexts[0].results["shear"].sum_layout == "versions"
        else "the detections of the original image"
    )
    info["depth"] = {
        "used": contexts[0].config.shear.truth_depth,
        "field_noise": inputs[0].truth.meta.get("FLDNOISE"),
        "reference_noise": inputs[0].truth.meta.get("ISONOISE"),
    }
    return info


def _summary(contexts, inputs, flaggers, entries, timings) -> CompareSummary:
    """The summary of one direct comparison (see :class:`CompareSummary`)."""
    from blendflag.shear.selections import PAIRED_SELECTION
    from blendflag.shear.star_cut import stars_summary

    first = contexts[0]
    result = first.results["shear"]
    complete = [
        int(c.results["selection_masks"][PAIRED_SELECTION]["noshear"].sum())
        for c in contexts
        if PAIRED_SELECTION in c.results.get("selection_masks", {})
    ]
    return CompareSummary(
        selections=entries,
        engine=result.engine,
        step=result.step,
        true_shear=_plus_shear(inputs[0]),
        shear_pairs=sorted(item.sign for item in inputs) == [-1, 1],
        n_objects=sum(len(c.table) for c in contexts),
        n_measured=sum(int(c.results["shear"].good.sum()) for c in contexts),
        noise_fields=result.meta.get("noise_fields"),
        shape=result.meta.get("shape"),
        neighbour_masking=first.results.get("neighbour_masking"),
        n_in_complete_pairs=sum(complete) if complete else None,
        input=inputs[0].description,
        truth=_truth_info(contexts, inputs),
        flaggers={f.name: {k: v for k, v, _ in f.provenance()} for f in flaggers},
        original_images_flagged=bool(first.flag_original),
        timings_s=timings,
        workers=first.workers,
        stars=stars_summary([c.results.get("stars") for c in contexts]),
        shear_cuts=cuts_summary([c.results.get("shear_cuts") for c in contexts]),
    )


def field_seed(seed: int, field: str | None) -> int:
    """The seed of one ±g pair's correction fields: from the run's ``seed`` and the pair's key.

    Every pair of a run gets its own noise-correction fields (one draw reused
    in every tile would put the same noise pattern on row i of every image,
    an additive offset no bootstrap sees), and the +g and -g images of a pair,
    which share the key, the same ones. None keeps ``seed``.
    """
    if field is None:
        return int(seed)
    import hashlib

    digest = hashlib.sha256(f"{int(seed)}:{field}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def bootstrap_summary(units: list, shear_pairs: bool, draws: int, seed: int) -> dict:
    """The JSON's ``bootstrap``: what a unit is, how many draws, their seed.

    Parameters
    ----------
    units : list of str or None
        Each image's (or tile's) unit in words (``results["bootstrap_unit"]``).
    shear_pairs : bool
        The +g and -g images' units of one position are drawn together.
    draws : int
        Bootstrap resamplings (0: no errors).
    seed : int
        Seed of the draws' generator.
    """
    known = list(dict.fromkeys(u for u in units if u))
    unit = "; ".join(known) if known else "unknown (files written before units were recorded)"
    if shear_pairs:
        unit += ", on the +g and -g images of a pair together (same position)"
    return {"unit": unit, "draws": int(draws), "seed": int(seed)}


def cuts_summary(parts: list) -> dict | None:
    """The images' shear-cut summaries as one: the first's settings, the counts summed."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    out = dict(parts[0])
    for key in ("kept_noshear", "measured"):
        if key in out:
            out[key] = sum(int(p.get(key, 0)) for p in parts)
    return out


def _plus_shear(item) -> list | None:
    """The shear of the +g image (the reference of m), from any image of a pair."""
    if item.true_shear is None:
        return None
    return [item.sign * g for g in item.true_shear]
