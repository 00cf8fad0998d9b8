"""What one tile runs in a worker: the comparison or the flagging of that tile.

Each task takes a :class:`blendflag.tiling.tile_list.Tile`, the run's
:class:`blendflag.tiling.settings.RunSettings` (hashed for resuming), the output
directory and the tile's hash; it writes ``OUT_DIR/<tile>.fits`` and
``OUT_DIR/<tile>.sums.npz`` (a :class:`blendflag.shear.paired.SumsFile`)
atomically and returns a summary. It never raises: a failing tile is reported and the others go on.
"""

from __future__ import annotations

import functools
import time
import traceback
from pathlib import Path

import numpy as np

from blendflag.errors import BlendflagError
from blendflag.tiling.tile_list import Tile


def _tile_task(run):
    """Make ``run(tile, settings, out_dir, hash) -> {"n": ...}`` a task that never raises.

    The task returns ``{"tile", "status": "done", "n", "seconds"}``, or
    ``{"tile", "status": "failed", "reason", "seconds"}`` for a bad input
    (``BlendflagError``) or any other failure, so one bad tile never stops
    the others.
    """

    @functools.wraps(run)
    def task(tile: Tile, settings, out_dir: str, tile_hash_value: str) -> dict:
        import os

        from blendflag._runtime import quiet_imports

        # a Dask worker is a fresh process: TensorFlow's start-up notes stay quiet there too
        quiet_imports.install(verbose=os.environ.get("BLENDFLAG_DEBUG", "") not in ("", "0"))
        start = time.perf_counter()
        try:
            summary = {"tile": tile.name, "status": "done"}
            summary.update(run(tile, settings, out_dir, tile_hash_value))
        except BlendflagError as exc:
            summary = {"tile": tile.name, "status": "failed", "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one bad tile never stops the others
            last = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{Path(last.filename).name}:{last.lineno}"
            summary = {
                "tile": tile.name,
                "status": "failed",
                "reason": f"{type(exc).__name__}: {exc} ({where})",
            }
        summary["seconds"] = time.perf_counter() - start
        return summary

    return task


def task_tools(settings) -> tuple:
    """``(pm, config, flaggers, engine_cls)`` of a tile task's settings (built in the worker)."""
    from blendflag.config import PipelineConfig, from_mapping
    from blendflag.flagging.flaggers import flagger_overrides, make_flaggers
    from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine

    pm = get_plugin_manager()
    config = from_mapping(PipelineConfig, settings.config)
    names = list(settings.flaggers)
    flaggers = make_flaggers(
        pm, names, config, flagger_overrides(pm, names, weights=settings.weights)
    )
    engine_cls = select_engine(get_shear_engines(pm), settings.engine)
    return pm, config, flaggers, engine_cls


def tile_field_info(tile: Tile, settings) -> dict:
    """A tile's truth, shear, sign and field key: its headers, then its list-file tokens.

    A list file's ``pair=`` and ``sign=`` name the tile's ±g pair (the field
    key ``pair:<name>``) and its sign; ``--true-shear`` (``settings.true_shear``,
    the +g image's) gives the shear of a tile whose headers carry none, times
    its sign.

    Raises
    ------
    blendflag.errors.BlendflagError
        The tile's header shear disagrees with ``--true-shear``.
    """
    from blendflag.io.images import image_identity
    from blendflag.simulate.field_io import read_field_info

    info = read_field_info(tile.image, tile.truth, name=image_identity(tile.image))
    if tile.pair is not None:
        info["field"], info["sign"] = f"pair:{tile.pair}", int(tile.sign)
    given = settings.true_shear
    if given is not None:
        own = tuple(info["sign"] * float(g) for g in given)
        if info["shear"] is not None and not np.allclose(info["shear"], own):
            raise BlendflagError(
                f"tile {tile.name}: its header's shear {list(info['shear'])} is not "
                f"--true-shear times its sign ({list(own)})"
            )
        info["shear"] = own
    return info


@_tile_task
def compare_tile(tile: Tile, settings, out_dir: str, tile_hash_value: str) -> dict:
    """Run the comparison on one tile and write its catalogue and sums.

    Returns a summary ``{"tile", "status": "done"|"failed", ...}``; never raises.
    """
    from blendflag.io.catalog import write_output_catalogue
    from blendflag.pipeline.compare import run_compare
    from blendflag.pipeline.field_input import file_input

    pm, config, flaggers, engine_cls = task_tools(settings)
    data = file_input(
        tile.image,
        tile.psf,
        tile.catalogue,
        tile.weight,
        settings.pixel_scale,
        recentre_psf=bool(settings.recentre_psf),
    )
    info = tile_field_info(tile, settings)
    data.truth, data.true_shear, data.sign = info["truth"], info["shear"], info["sign"]
    data.field = info["field"]  # the seed of its correction fields: the pair's own
    data.noise_sigma = info["noise"]  # the image's NOISE card, truth or not
    if info["truth"] is not None:  # a simulation: its label depth
        data.reference_noise = info["reference_noise"]
    result = run_compare(
        pm,
        config,
        data,
        flaggers,
        engine_cls,
        seed=settings.seed,
        workers=1,
        quiet=True,
        n_bootstrap=settings.bootstrap,
        psf_check="record",  # in the sums: the command reports the combined check once
    )
    out = Path(out_dir)
    ctx = result.context
    write_output_catalogue(
        ctx.catalogue, ctx.table, ctx.annotation, out / f"{tile.name}.fits", ctx.image_header
    )
    write_tile_sums(out / f"{tile.name}.sums.npz", result, info, tile_hash_value)
    return {"n": result.summary.n_objects}


def write_tile_sums(path, result, info: dict, tile_hash_value: str, keys=None) -> None:
    """Write one tile's per-unit sums of every selection (``<tile>.sums.npz``), atomically.

    Parameters
    ----------
    path : path-like
    result : blendflag.pipeline.compare.CompareResult
    info : dict
        ``shear`` (g1, g2 or None), ``sign`` and ``field``
        (see :func:`blendflag.simulate.field_io.read_field_info`).
    tile_hash_value : str
        The hash that marks the tile done (:func:`blendflag.tiling.tile_list.tile_hash`).
    keys : numpy.ndarray or None
        The unit ids to store instead of the result's own: ``keys[k]`` for
        the result's unit ``k`` (a sub-tile's rows in the whole catalogue).
    """
    from blendflag.shear.paired import SumsFile

    metacal = result.metacal
    SumsFile(
        selections={name: sums for name, (sums,) in result.unit_sums.items()},
        flag_counts=result.context.results.get("flag_counts", {}),
        hash=tile_hash_value,
        sign=int(info["sign"]),
        field=str(info["field"]),
        true_shear=tuple(info["shear"]) if info["shear"] else None,
        step=metacal.step,
        engine=metacal.engine,
        layout=metacal.sum_layout,
        shape=metacal.meta.get("shape") or "",
        neighbour_masking=result.context.results.get("neighbour_masking") or "",
        noise_fields=metacal.meta.get("noise_fields") or "",
        units=result.context.results.get("bootstrap_unit") or "",
        stars=result.context.results.get("stars"),
        psf_check=result.summary.psf_check,
    ).save(path, keys)


@_tile_task
def flag_tile(tile: Tile, settings, out_dir: str, tile_hash_value: str) -> dict:
    """Flag one tile's catalogue (``flag --tiles``); writes ``OUT_DIR/<tile>.fits``."""
    from blendflag.config import PipelineConfig, from_mapping
    from blendflag.flagging.flaggers import flagger_overrides, make_flaggers
    from blendflag.io.atomic import atomic_output
    from blendflag.io.catalog import write_annotated
    from blendflag.pipeline.stages import flag_catalogue_file
    from blendflag.plugins import get_plugin_manager

    if not tile.catalogue:
        raise BlendflagError("no catalogue for this tile (catalogue= or catalogue.fits)")
    pm = get_plugin_manager()
    config = from_mapping(PipelineConfig, settings.config)
    names = list(settings.flaggers)
    flaggers = make_flaggers(
        pm,
        names,
        config,
        flagger_overrides(
            pm,
            names,
            weights=settings.weights,
            threshold=settings.threshold,
            views=settings.views,
        ),
    )
    context = flag_catalogue_file(pm, config, flaggers, tile.catalogue, tile.image, tile.weight)
    catalogue = context.catalogue
    out = Path(out_dir)
    write_annotated(catalogue, context.annotation, out / f"{tile.name}.fits")
    with atomic_output(out / f"{tile.name}.sums.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, hash=np.array(tile_hash_value))  # marks the flagged tile done
    return {"n": len(context.table)}
