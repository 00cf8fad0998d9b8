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
from dataclasses import dataclass

import numpy as np

from blendflag.pipeline.stages import Context, run_pipeline


@dataclass
class CompareResult:
    """Everything `compare` produces.

    Attributes
    ----------
    json : dict
        The JSON document (keys: see :func:`_compare_json`).
    contexts : list of blendflag.pipeline.stages.Context
        The pipeline's context of each image after the run (+g first).
    """

    json: dict
    contexts: list

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
    """
    from blendflag.shear.paired import compare_statistics
    from blendflag.shear.selections import add_fraction_removed

    inputs = list(data) if isinstance(data, (list, tuple)) else [data]
    start = time.perf_counter()
    for flagger in flaggers:  # the depth of the truth's blend definition (simulations)
        flagger.default_reference_noise(inputs[0].reference_noise)
    first = inputs[0]  # m is measured against the shear of the +g image
    true_shear = (
        None if first.true_shear is None else tuple(first.sign * g for g in first.true_shear)
    )
    contexts = []
    for item in inputs:
        context = Context(
            config=config,
            pm=pm,
            image=item.image,
            weight=item.weight,
            psf=item.psf,
            psf_model=getattr(item, "psf_model", None),
            image_header=item.header,
            catalogue=item.catalogue,
            table=item.catalogue.table if item.catalogue is not None else None,
            flagger_objects=list(flaggers),
            flag_original=flag_original,
            shear_engine=engine_cls.name,
            pixel_scale=item.pixel_scale,
            noise_sigma=item.noise_sigma if item.noise_sigma else None,
            truth=item.truth,
            true_shear=true_shear,
            shear_sign=item.sign,
            seed=seed,
            workers=workers,
            scheduler=scheduler,
            quiet=quiet,
            n_bootstrap=n_bootstrap,
            masked_selection=masked_selection,
            rng=np.random.default_rng(seed),
        )
        context.flaggers = [f.name for f in flaggers]
        context.segmentation = getattr(item, "segmentation", None)
        for key in ("object_keys", "segment_ids", "light_models"):  # a split image's
            if getattr(item, key, None) is not None:
                context.results[key] = getattr(item, key)
        run_pipeline(context)
        contexts.append(context)
    result = CompareResult(json={}, contexts=contexts)
    n_boot = config.shear.n_bootstrap if n_bootstrap is None else n_bootstrap
    entries = compare_statistics(
        result.unit_sums, result.metacal.step, true_shear, np.random.default_rng(seed + 1), n_boot
    )
    counts = {}
    for context in contexts:
        for name, (flagged, measured) in context.results.get("flag_counts", {}).items():
            old = counts.get(name, (0, 0))
            counts[name] = (old[0] + flagged, old[1] + measured)
    add_fraction_removed(entries, counts)
    timings = {}
    for context in contexts:
        for key, value in context.timings.items():
            timings[key] = timings.get(key, 0.0) + value
    timings["total"] = time.perf_counter() - start
    result.json = _compare_json(contexts, inputs, flaggers, entries, timings)
    return result


def _compare_json(contexts, inputs, flaggers, entries, timings) -> dict:
    """The JSON document of one comparison (the README's compare contract)."""
    from blendflag.truth import truth_summary

    first = contexts[0]
    result = first.results["shear"]
    truth_info = None
    if inputs[0].truth is not None:
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
        truth_info = (
            per_image[0] if len(per_image) == 1 else {"plus": per_image[0], "minus": per_image[1]}
        )
        truth_info["matching"] = (
            "each metacal version's own detections, at their positions before that version's shear"
            if result.sum_layout == "versions"
            else "the detections of the original image"
        )
        truth_info["depth"] = {
            "used": first.config.shear.truth_depth,
            "field_noise": inputs[0].truth.meta.get("FLDNOISE"),
            "reference_noise": inputs[0].truth.meta.get("ISONOISE"),
        }
    complete = [
        int(c.results["selection_masks"]["all"]["noshear"].sum())
        for c in contexts
        if c.results.get("pair_id") is not None
    ]
    return {
        "engine": result.engine,
        "noise_fields": result.meta.get("noise_fields"),
        "shape": result.meta.get("shape"),
        "neighbour_masking": first.results.get("neighbour_masking"),
        "true_shear": _plus_shear(inputs[0]),
        "shear_pairs": sorted(item.sign for item in inputs) == [-1, 1],
        "selections": entries,
        "n_objects": sum(len(c.table) for c in contexts),
        "n_measured": sum(int(c.results["shear"].good.sum()) for c in contexts),
        "n_in_complete_pairs": sum(complete) if complete else None,
        "step": result.step,
        "input": inputs[0].description,
        "truth": truth_info,
        "flaggers": {f.name: {k: v for k, v, _ in f.provenance()} for f in flaggers},
        "original_images_flagged": bool(first.flag_original),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "workers": first.workers,
    }


def _plus_shear(item) -> list | None:
    """The shear of the +g image (the reference of m), from any image of a pair."""
    if item.true_shear is None:
        return None
    return [item.sign * g for g in item.true_shear]
