"""A third-party blendflag plugin used by the tests.

It inserts a stage ``count_neighbours`` between ``flag_blends`` and
``measure_shear``, adds the column ``N_NEIGHBOURS`` and a header card recording
the stage order it saw, and adds a sub-command ``neighbours``.
"""

import numpy as np

from blendflag import hookimpl
from blendflag.io.annotation import Annotation
from blendflag.pipeline.stages import Stage

RADIUS = 10.0  # pixels


def count_neighbours(context):
    x = np.asarray(context.table["X_IMAGE"], dtype=float)
    y = np.asarray(context.table["Y_IMAGE"], dtype=float)
    d2 = (x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2
    context.results["n_neighbours"] = (d2 < RADIUS**2).sum(axis=1) - 1
    context.results["neighbours_saw"] = list(context.results["stage_order"])


@hookimpl
def blendflag_pipeline_stages(stages):
    stages.insert_before("measure_shear", Stage("count_neighbours", count_neighbours))


@hookimpl
def blendflag_annotate_catalogue(table, context):
    if "n_neighbours" not in context.results:
        return None
    return Annotation(
        columns={"N_NEIGHBOURS": context.results["n_neighbours"].astype(np.int16)},
        cards=[("NB_SAW", ",".join(context.results["neighbours_saw"]), "stages run before")],
    )


@hookimpl
def blendflag_register_commands(cli):
    def run(args, pm):
        print(f"neighbour radius {RADIUS} px")
        return 0

    cli.add_command("neighbours", help="print the neighbour radius", func=run)
