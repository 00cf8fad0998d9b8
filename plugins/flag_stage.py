"""The blend-flagging step, inserted into the catalogue pipeline as a plugin.

It adds the stage ``flag_blends`` after ``cutout`` (before ``measure_shear``),
runs every requested flagger, and writes per flagger the columns
``BLEND_<NAME>`` (bool) and, when the flagger has one, ``P_BLEND_<NAME>``
(float32), plus provenance header cards.
"""

from __future__ import annotations

import numpy as np

import blendflag
from blendflag import hookimpl
from blendflag.catalog import Annotation
from blendflag.errors import PluginError
from blendflag.pipeline import Stage


def stage_flag_blends(context) -> None:
    """Run each flagger of ``context.flagger_objects`` over the catalogue."""
    results = context.results.setdefault("flags", {})
    n = len(context.table)
    for flagger in context.flagger_objects:
        result = flagger.flag_catalogue(context)
        if len(result.flag) != n:
            raise PluginError(
                f"flagger {flagger.name} returned {len(result.flag)} flags for {n} objects"
            )
        results[flagger.name] = result


@hookimpl
def blendflag_pipeline_stages(stages):
    stages.insert_after("cutout", Stage("flag_blends", stage_flag_blends))


@hookimpl
def blendflag_annotate_catalogue(table, context):
    flags = context.results.get("flags")
    if not flags:
        return None
    annotation = Annotation(cards=[("BF_VERS", blendflag.__version__, "blendflag version")])
    for flagger in context.flagger_objects:
        result = flags[flagger.name]
        annotation.columns[flagger.column] = np.asarray(result.flag, dtype=bool)
        if result.probability is not None:
            annotation.columns[flagger.probability_column] = np.asarray(
                result.probability, dtype=np.float32
            )
        annotation.cards.extend(flagger.provenance())
    return annotation
