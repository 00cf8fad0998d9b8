"""What one tile runs in a worker: the comparison or the flagging of that tile.

Each task takes a :class:`blendflag.tile_list.Tile`, the run's settings (a plain
dict, hashed for resuming), the output directory and the tile's hash; it writes
``OUT_DIR/<tile>.fits`` and ``OUT_DIR/<tile>.sums.npz`` atomically and returns a
summary. It never raises: a failing tile is reported and the others go on.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np

from blendflag.errors import BlendflagError
from blendflag.tile_list import Tile


def _truth_info(tile: Tile):
    """(truth table, true shear) of a simulated tile, or (None, None)."""
    if not tile.truth:
        return None, None
    from astropy.io import fits
    from astropy.table import Table

    with fits.open(tile.truth) as hdul:
        table = Table(hdul[1].data)
        header = hdul[0].header
    shear = None
    image_header = fits.getheader(tile.image)
    for h in (image_header, header):
        if "SHEAR1" in h:
            shear = (float(h["SHEAR1"]), float(h.get("SHEAR2", 0.0)))
            break
    return table, shear


def compare_tile(tile: Tile, settings: dict, out_dir: str, tile_hash_value: str) -> dict:
    """Run the comparison on one tile and write its catalogue and sums.

    Returns a summary ``{"tile", "status": "done"|"failed", ...}``; never raises.
    """
    start = time.perf_counter()
    try:
        from blendflag.atomic import atomic_output
        from blendflag.catalog import write_output_catalogue
        from blendflag.compare import run_compare
        from blendflag.config import PipelineConfig, from_mapping
        from blendflag.field_input import file_input
        from blendflag.flaggers import flagger_overrides, make_flaggers
        from blendflag.plugins import get_plugin_manager, get_shear_engines
        from blendflag.shear.engine import select_engine

        pm = get_plugin_manager()
        config = from_mapping(PipelineConfig, settings["config"])
        names = settings["flaggers"]
        flaggers = make_flaggers(
            pm, names, config, flagger_overrides(pm, names, weights=settings.get("weights"))
        )
        engine_cls = select_engine(get_shear_engines(pm), settings["engine"])
        data = file_input(
            tile.image, tile.psf, tile.catalogue, tile.weight, settings.get("pixel_scale")
        )
        truth, shear = _truth_info(tile)
        data.truth, data.true_shear = truth, shear
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
        arrays = {
            "hash": np.array(tile_hash_value),
            "names": np.array(list(result.sums)),
            "true_shear": np.array(shear if shear is not None else [np.nan, np.nan]),
            "step": np.array(result.metacal.step),
            "engine": np.array(result.metacal.engine),
            "layout": np.array(result.metacal.sum_layout),
        }
        for k, (unit_sums, n_good) in enumerate(result.sums.values()):
            arrays[f"sums{k}"] = unit_sums
            arrays[f"ngood{k}"] = np.array(n_good)
        with atomic_output(out / f"{tile.name}.sums.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return {
            "tile": tile.name,
            "status": "done",
            "n": result.json["n_objects"],
            "seconds": time.perf_counter() - start,
        }
    except BlendflagError as exc:
        return {
            "tile": tile.name,
            "status": "failed",
            "reason": str(exc),
            "seconds": time.perf_counter() - start,
        }
    except Exception as exc:  # noqa: BLE001 - one bad tile never stops the others
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return {
            "tile": tile.name,
            "status": "failed",
            "reason": f"{type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})",
            "seconds": time.perf_counter() - start,
        }


def flag_tile(tile: Tile, settings: dict, out_dir: str, tile_hash_value: str) -> dict:
    """Flag one tile's catalogue (``flag --tiles``); writes ``OUT_DIR/<tile>.fits``."""
    start = time.perf_counter()
    try:
        from blendflag.atomic import atomic_output
        from blendflag.catalog import read_catalogue, write_annotated
        from blendflag.config import PipelineConfig, from_mapping
        from blendflag.flaggers import flagger_overrides, make_flaggers
        from blendflag.images import load_image_and_weight
        from blendflag.pipeline import Context, run_pipeline, table_from_catalogue
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
        catalogue = read_catalogue(tile.catalogue)
        image, weight, header = load_image_and_weight(tile.image, tile.weight)
        context = Context(
            config=config,
            pm=pm,
            image=image,
            weight=weight,
            image_header=header,
            catalogue=catalogue,
            table=table_from_catalogue(catalogue),
        )
        context.flagger_objects = flaggers
        run_pipeline(context)
        out = Path(out_dir)
        write_annotated(catalogue, context.annotation, out / f"{tile.name}.fits")
        with atomic_output(out / f"{tile.name}.sums.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, hash=np.array(tile_hash_value))
        return {
            "tile": tile.name,
            "status": "done",
            "n": len(context.table),
            "seconds": time.perf_counter() - start,
        }
    except BlendflagError as exc:
        return {
            "tile": tile.name,
            "status": "failed",
            "reason": str(exc),
            "seconds": time.perf_counter() - start,
        }
    except Exception as exc:  # noqa: BLE001 - one bad tile never stops the others
        return {
            "tile": tile.name,
            "status": "failed",
            "reason": f"{type(exc).__name__}: {exc}",
            "seconds": time.perf_counter() - start,
        }
