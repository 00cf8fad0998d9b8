"""What one tile runs in a worker: the comparison or the flagging of that tile.

Each task takes a :class:`blendflag.tiling.tile_list.Tile`, the run's settings (a plain
dict, hashed for resuming), the output directory and the tile's hash; it writes
``OUT_DIR/<tile>.fits`` and ``OUT_DIR/<tile>.sums.npz`` atomically and returns a
summary. It never raises: a failing tile is reported and the others go on.
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
    def task(tile: Tile, settings: dict, out_dir: str, tile_hash_value: str) -> dict:
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


def simulated_tile(tile: Tile) -> dict:
    """What a simulated tile's files say about it (``simulate-field`` writes them).

    Returns
    -------
    dict
        ``truth`` (Table with its header's depths in ``meta``, or None),
        ``shear`` (the applied g1, g2, or None), ``sign`` (``SHRSIGN``: -1 for
        the -g twin of a ±g pair, else +1), ``noise`` (``NOISE``, ADU),
        ``reference_noise`` (``REFNOISE``: the depth of the flaggers' blend
        label, ADU) and ``field`` (the key pairing the +g and -g tiles: preset,
        seed and number of galaxies; the tile's name for real data).
    """
    from astropy.io import fits

    info = {
        "truth": None,
        "shear": None,
        "sign": 1,
        "noise": None,
        "reference_noise": None,
        "field": tile.name,
    }
    image_header = fits.getheader(tile.image)
    headers = [image_header]
    if tile.truth:
        from astropy.table import Table

        with fits.open(tile.truth) as hdul:
            table = Table(hdul[1].data)
            for key in ("ISONOISE", "FLDNOISE"):
                if key in hdul[1].header:
                    table.meta[key] = float(hdul[1].header[key])
            headers.append(hdul[0].header)
        info["truth"] = table
    for h in headers:
        if "SHEAR1" in h and info["shear"] is None:
            info["shear"] = (float(h["SHEAR1"]), float(h.get("SHEAR2", 0.0)))
        if "SHRSIGN" in h:
            info["sign"] = int(h["SHRSIGN"])
        if "NOISE" in h and info["noise"] is None:
            info["noise"] = float(h["NOISE"])
        if "REFNOISE" in h and info["reference_noise"] is None:
            info["reference_noise"] = float(h["REFNOISE"])
        if "SEED" in h and "DATASET" in h:
            info["field"] = f"{h['DATASET']}:{h['SEED']}:{h.get('NGAL', '')}"
    return info


def task_tools(settings: dict) -> tuple:
    """``(pm, config, flaggers, engine_cls)`` of a tile task's settings (built in the worker)."""
    from blendflag.config import PipelineConfig, from_mapping
    from blendflag.flagging.flaggers import flagger_overrides, make_flaggers
    from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine

    pm = get_plugin_manager()
    config = from_mapping(PipelineConfig, settings["config"])
    names = settings["flaggers"]
    flaggers = make_flaggers(
        pm, names, config, flagger_overrides(pm, names, weights=settings.get("weights"))
    )
    engine_cls = select_engine(get_shear_engines(pm), settings["engine"])
    return pm, config, flaggers, engine_cls


@_tile_task
def compare_tile(tile: Tile, settings: dict, out_dir: str, tile_hash_value: str) -> dict:
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
        settings.get("pixel_scale"),
        recentre_psf=bool(settings.get("recentre_psf")),
    )
    info = simulated_tile(tile)
    data.truth, data.true_shear, data.sign = info["truth"], info["shear"], info["sign"]
    if info["truth"] is not None:  # a simulation: its known noise and label depth
        data.noise_sigma, data.reference_noise = info["noise"], info["reference_noise"]
    result = run_compare(
        pm,
        config,
        data,
        flaggers,
        engine_cls,
        seed=settings["seed"],
        workers=1,
        quiet=True,
        n_bootstrap=settings.get("bootstrap"),
    )
    out = Path(out_dir)
    ctx = result.context
    write_output_catalogue(
        ctx.catalogue, ctx.table, ctx.annotation, out / f"{tile.name}.fits", ctx.image_header
    )
    write_tile_sums(out / f"{tile.name}.sums.npz", result, info, tile_hash_value)
    return {"n": result.json["n_objects"]}


def write_tile_sums(path, result, info: dict, tile_hash_value: str, keys=None) -> None:
    """Write one tile's per-unit sums of every selection (``<tile>.sums.npz``), atomically.

    Parameters
    ----------
    path : path-like
    result : blendflag.pipeline.compare.CompareResult
    info : dict
        ``shear`` (g1, g2 or None), ``sign`` and ``field`` (see :func:`simulated_tile`).
    tile_hash_value : str
        The hash that marks the tile done (:func:`blendflag.tiling.tile_list.tile_hash`).
    keys : numpy.ndarray or None
        The unit ids to store instead of the result's own: ``keys[k]`` for
        the result's unit ``k`` (a sub-tile's rows in the whole catalogue).
    """
    from blendflag.io.atomic import atomic_output

    counts = result.context.results.get("flag_counts", {})
    arrays = {
        "hash": np.array(tile_hash_value),
        "names": np.array(list(result.unit_sums)),
        "true_shear": np.array(info["shear"] if info["shear"] else [np.nan, np.nan]),
        "sign": np.array(info["sign"]),
        "field": np.array(info["field"]),
        "step": np.array(result.metacal.step),
        "engine": np.array(result.metacal.engine),
        "layout": np.array(result.metacal.sum_layout),
        "shape": np.array(result.metacal.meta.get("shape") or ""),
        "neighbour_masking": np.array(result.context.results.get("neighbour_masking") or ""),
    }
    for k, (name, (sums,)) in enumerate(result.unit_sums.items()):
        arrays[f"keys{k}"] = sums.keys if keys is None else np.asarray(keys)[sums.keys]
        arrays[f"sums{k}"] = sums.sums
        arrays[f"ngood{k}"] = np.array(sums.n_good)
        arrays[f"flagged{k}"] = np.array(counts.get(name, (-1, -1)))
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


@_tile_task
def flag_tile(tile: Tile, settings: dict, out_dir: str, tile_hash_value: str) -> dict:
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
    config = from_mapping(PipelineConfig, settings["config"])
    names = settings["flaggers"]
    flaggers = make_flaggers(
        pm,
        names,
        config,
        flagger_overrides(
            pm,
            names,
            weights=settings.get("weights"),
            threshold=settings.get("threshold"),
            views=settings.get("views"),
        ),
    )
    context = flag_catalogue_file(pm, config, flaggers, tile.catalogue, tile.image, tile.weight)
    catalogue = context.catalogue
    out = Path(out_dir)
    write_annotated(catalogue, context.annotation, out / f"{tile.name}.fits")
    with atomic_output(out / f"{tile.name}.sums.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, hash=np.array(tile_hash_value))
    return {"n": len(context.table)}
