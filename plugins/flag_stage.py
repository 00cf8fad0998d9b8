"""The blend-flagging step, inserted into the catalogue pipeline as a plugin.

It adds two stages:

``flag_blends`` (after ``cutout``)
    every requested flagger on the original stamps: the columns
    ``BLEND_<NAME>`` (bool) and, when the flagger has one, ``P_BLEND_<NAME>``
    (float32), plus provenance header cards;
``flag_metacal_blends`` (after ``measure_shear``)
    every flagger on the images of each metacal version (noshear, 1p, 1m, 2p,
    2m), so that removing its blends is a selection whose response
    metacalibration measures; the column ``MCAL_BLEND_<NAME>`` holds the flags
    on the noshear images.
"""

from __future__ import annotations

import time

import numpy as np

import blendflag
from blendflag import hookimpl
from blendflag.errors import PluginError
from blendflag.io.annotation import Annotation
from blendflag.pipeline.stages import Stage


def stage_flag_blends(context) -> None:
    """Run each flagger of ``context.flagger_objects`` over the catalogue."""
    if not context.flag_original:
        return
    from blendflag._runtime.progress import progress

    results = context.results.setdefault("flags", {})
    n = len(context.table)
    total = n * len(context.flagger_objects)
    with progress(total=total, desc="flag", quiet=context.quiet, unit="obj") as bar:
        for flagger in context.flagger_objects:
            result = flagger.flag_catalogue(context)
            if len(result.flag) != n:
                raise PluginError(
                    f"flagger {flagger.name} returned {len(result.flag)} flags for {n} objects"
                )
            results[flagger.name] = result
            bar.update(n)


def stage_flag_metacal_blends(context) -> None:
    """Run each flagger on every metacal version's images (the selections' flags).

    The reference depth of a flagger that has none is the original image's
    median noise, not the metacal images' own. The images are freed afterwards.
    """
    result = context.results.get("shear")
    if result is None or result.images is None or not context.flagger_objects:
        return
    sigma = result.meta.get("median_noise_sigma")
    flags = context.results.setdefault("metacal_flags", {})
    probabilities = context.results.setdefault("metacal_probabilities", {})
    for flagger in context.flagger_objects:
        flagger.default_reference_noise(sigma)
    from blendflag._runtime.progress import progress

    total = sum(len(images) for images in result.images.values()) * len(context.flagger_objects)
    with progress(
        total=total, desc="flag metacal images", quiet=context.quiet, unit="stamp"
    ) as bar:
        for flagger in context.flagger_objects:
            start = time.perf_counter()
            flags[flagger.name] = {}
            for v, images in result.images.items():
                answer = flagger.flag_stamps(images)
                flags[flagger.name][v] = np.asarray(answer.flag, dtype=bool)
                if answer.probability is not None:  # a threshold scan re-cuts these
                    probabilities.setdefault(flagger.name, {})[v] = answer.probability
                bar.update(len(images))
            context.timings[f"select ({flagger.name})"] = time.perf_counter() - start
    result.images = None  # free the 5 x n stamps


@hookimpl
def blendflag_pipeline_stages(stages):
    stages.insert_after("cutout", Stage("flag_blends", stage_flag_blends))
    stages.insert_after("measure_shear", Stage("flag_metacal_blends", stage_flag_metacal_blends))


@hookimpl
def blendflag_annotate_catalogue(table, context):
    flags = context.results.get("flags") or {}
    metacal_flags = context.results.get("metacal_flags") or {}
    if not flags and not metacal_flags:
        return None
    annotation = Annotation(cards=[("BF_VERS", blendflag.__version__, "blendflag version")])
    stamp_flags = context.stamp_flags
    if stamp_flags is not None and len(stamp_flags) == len(table):
        # 1: the stamp reaches past the image edge, 2: it holds masked pixels
        # (weight 0 / flag map), 4: non-finite pixels (blendflag.io.stamps)
        annotation.columns["STAMP_FLAGS"] = np.asarray(stamp_flags, dtype=np.int16)
    for name, per_version in metacal_flags.items():
        if len(per_version["noshear"]) != len(table):
            continue  # an image engine's own detections, not this catalogue's rows
        annotation.columns[f"MCAL_BLEND_{name.upper()}"] = np.asarray(per_version["noshear"])
    for flagger in context.flagger_objects:
        if flagger.name not in flags:
            annotation.cards.extend(flagger.provenance())
            continue
        result = flags[flagger.name]
        annotation.columns[flagger.column] = np.asarray(result.flag, dtype=bool)
        if result.probability is not None:
            annotation.columns[flagger.probability_column] = np.asarray(
                result.probability, dtype=np.float32
            )
        if result.n_sources is not None:
            annotation.columns[flagger.count_column] = np.asarray(result.n_sources, dtype=np.int16)
        annotation.cards.extend(flagger.provenance())
    return annotation
