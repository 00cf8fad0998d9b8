"""A test plugin that kills a run: it raises KeyboardInterrupt (as a kill would stop
the process) in the pipeline of the tile whose image path contains $BLENDFLAG_CRASH_ON."""

import os

from blendflag import hookimpl
from blendflag.pipeline.stages import Stage


def crash(context):
    marker = os.environ.get("BLENDFLAG_CRASH_ON")
    if marker and marker in str(context.image_header.get("CRASHID", "")):
        raise KeyboardInterrupt(f"killed on tile {marker}")


@hookimpl
def blendflag_pipeline_stages(stages):
    stages.insert_after("detect", Stage("crash_test", crash))
