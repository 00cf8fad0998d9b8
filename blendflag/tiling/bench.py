"""Objects per second of each stage of ``compare`` on one image split into sub-tiles.

``blendflag-shear bench --only tile`` simulates a CFIS-like image at the
CFIS density (about 500 galaxies per 1000 x 1000 pixels), detects its
catalogue, and runs :func:`blendflag.tiling.split_image.run_split_compare` on it
with 2 x 2 sub-tiles: the rates of detection, of the preparation (checks,
median noise, the segmentation map for neighbour masking) and of every
pipeline stage inside the sub-tiles (per worker process), and the whole
run's objects per second of wall time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

#: Galaxies per pixel of a CFIS tile (50,000 on 10,000 x 10,000 pixels).
CFIS_DENSITY_PER_PIXEL = 5e-4


def bench_split_tile(pm, config, names, size: int = 2000, workers: int = 2, seed: int = 17):
    """Rows of ``bench`` for a ``size`` x ``size`` image split into four sub-tiles.

    Parameters
    ----------
    pm : pluggy.PluginManager
    config : blendflag.config.PipelineConfig
    names : list of str
        Flaggers of the comparison.
    size : int
        Image side, pixels (galaxies: :data:`CFIS_DENSITY_PER_PIXEL` x size^2).
        [default: 2000]
    workers : int
        Processes running the sub-tiles (a local Dask cluster when > 1). [default: 2]
    seed : int
        Seed of the simulation.

    Returns
    -------
    list of dict
        ``stage``, ``objects``, ``seconds``, ``objects_per_s`` (and ``image``).
    """
    from blendflag.flagging.detectors import pop_segmentation
    from blendflag.io.catalog import write_ldac
    from blendflag.plugins import get_shear_engines, select_engine
    from blendflag.simulate.field import simulate_field
    from blendflag.simulate.field_io import write_field
    from blendflag.tiling.split_image import SplitImage, run_split_compare

    n_galaxies = max(20, round(CFIS_DENSITY_PER_PIXEL * size * size))
    image = f"{size}x{size}"
    field = simulate_field("cfis", n_galaxies, shear=(0.02, 0.0), seed=seed, size=size)
    engine = select_engine(get_shear_engines(pm), config.shear.engine)
    rows = []
    with tempfile.TemporaryDirectory(prefix="blendflag-bench-tile-") as tmp:
        root = Path(tmp)
        write_field(field, root / "f")
        start = time.perf_counter()
        table = pm.hook.blendflag_detect(
            image=field.image, weight=field.weight, config=config.detect
        )
        seconds = time.perf_counter() - start
        pop_segmentation(table, field.image.shape)
        write_ldac(table, root / "f" / "cat.ldac")
        n = len(table)
        rows.append(_row("tile: detect", n, seconds, image))
        files = [
            root / "f" / name for name in ("image.fits", "psf.fits", "cat.ldac", "weight.fits")
        ]
        split = SplitImage(*map(str, files), core=(size + 1) // 2, true_shear=(0.02, 0.0))
        summary = run_split_compare(
            pm,
            config,
            list(names),
            engine,
            split,
            work_dir=root / "work",
            workers=workers,
            quiet=True,
            n_bootstrap=20,
            on_message=None,
        )
    timings = summary.timings_s
    rows.append(_row("tile: prepare (checks, segmentation)", n, timings["prepare"], image))
    for stage, seconds in summary.sub_tiles["stage_seconds"].items():
        if stage != "total" and seconds >= 0.01:
            rows.append(_row(f"tile: {stage} (per process)", n, seconds, image))
    rows.append(_row(f"tile: compare, {workers} workers (wall)", n, timings["total"], image))
    return rows


def _row(stage: str, n: int, seconds: float, image: str) -> dict:
    return {
        "stage": stage,
        "objects": n,
        "seconds": round(float(seconds), 3),
        "objects_per_s": n / seconds if seconds > 0 else None,
        "image": image,
    }
