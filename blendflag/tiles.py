"""Many tiles: one Dask task per tile, resumable, combined from per-tile sums.

Tiles
-----
``--tiles`` takes either a glob of images (``'run/*/image.fits'``), whose
siblings ``psf.fits``, ``weight.fits``, ``catalogue.fits`` and ``truth.fits``
in the same directory are used when present (the layout ``simulate-field``
writes), or a text file with one tile per line of ``key=path`` tokens::

    image=t1/img.fits psf=t1/psf.fits catalogue=t1/cat.fits weight=t1/wht.fits
    # comments and blank lines are ignored

Each tile is one task: it writes ``OUT_DIR/<tile>.fits`` (the annotated
catalogue) and ``OUT_DIR/<tile>.sums.npz`` (the per-unit sums of every
selection and a hash of the inputs and settings), both atomically. A rerun of
the same command skips tiles whose sums file carries the same hash, so a killed
run loses nothing and the combined statistics, reduced from the per-tile sums
in tile-name order, are identical whether the run was interrupted or not.

Execution
---------
``workers`` starts a local Dask cluster of single-threaded worker processes
(``OMP_NUM_THREADS=1``); ``scheduler`` connects to an existing one, e.g. a
dask-jobqueue SLURM cluster. A network flagger's model is loaded once per
worker process, not per tile. A failing tile is reported with its reason and
never stops the others.
"""

from __future__ import annotations

import glob
import hashlib
import json
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from blendflag.errors import BlendflagError

SIBLINGS = {
    "psf": "psf.fits",
    "weight": "weight.fits",
    "catalogue": "catalogue.fits",
    "truth": "truth.fits",
}
KEYS = ("image", "psf", "catalogue", "weight", "truth")


@dataclass(frozen=True)
class Tile:
    """One tile's files (paths as strings; None when absent)."""

    name: str
    image: str
    psf: str | None = None
    catalogue: str | None = None
    weight: str | None = None
    truth: str | None = None


def _unique_names(paths: list[Path]) -> list[str]:
    stems = [p.parent.name if p.stem in ("image", "img") else p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{i:05d}_{s}" for i, s in enumerate(stems)]


def read_tiles(spec: str) -> list[Tile]:
    """Tiles from a glob of images or a list file (see the module docstring).

    Raises
    ------
    BlendflagError
        Nothing matches, a line is malformed, or a named file is missing.
    """
    path = Path(spec)
    if path.is_file() and path.suffix.lower() not in (".fits", ".fit", ".fz"):
        return _read_list(path)
    images = sorted(Path(p) for p in glob.glob(spec))
    if not images:
        raise BlendflagError(f"no tile matches {spec!r}")
    tiles = []
    for name, image in zip(_unique_names(images), images, strict=True):
        extra = {
            k: str(image.parent / f) for k, f in SIBLINGS.items() if (image.parent / f).is_file()
        }
        tiles.append(Tile(name=name, image=str(image), **extra))
    return tiles


def _read_list(path: Path) -> list[Tile]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if not sep or key not in KEYS:
                raise BlendflagError(
                    f"{path.name} line {number}: expected key=path tokens "
                    f"with keys {', '.join(KEYS)}, got {token!r}"
                )
            resolved = Path(value) if Path(value).is_absolute() else path.parent / value
            if not resolved.is_file():
                raise BlendflagError(f"{path.name} line {number}: {key} file not found: {value}")
            fields[key] = str(resolved)
        if "image" not in fields:
            raise BlendflagError(f"{path.name} line {number}: no image=")
        rows.append(fields)
    if not rows:
        raise BlendflagError(f"{path.name} lists no tiles")
    names = _unique_names([Path(r["image"]) for r in rows])
    return [Tile(name=n, **r) for n, r in zip(names, rows, strict=True)]


def tile_hash(tile: Tile, settings: dict) -> str:
    """SHA-256 of the tile's input files' contents and the run's settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for key in KEYS:
        value = getattr(tile, key)
        digest.update(key.encode())
        if value:
            with open(value, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _stored_hash(sums_path: Path) -> str | None:
    try:
        with np.load(sums_path, allow_pickle=False) as data:
            return str(data["hash"])
    except (OSError, KeyError, ValueError, EOFError):
        return None


# ---------------------------------------------------------------------------
# One tile (runs in a worker)
# ---------------------------------------------------------------------------


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
        from blendflag.catalog import atomic_output, write_annotated, write_ldac
        from blendflag.compare import file_input, run_compare
        from blendflag.config import PipelineConfig, from_mapping
        from blendflag.flaggers import flagger_overrides, make_flaggers
        from blendflag.plugins import get_plugin_manager, get_shear_engines
        from blendflag.shear import select_engine

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
        cat_path = out / f"{tile.name}.fits"
        if ctx.catalogue is not None:
            write_annotated(ctx.catalogue, ctx.annotation, cat_path)
        else:
            table = ctx.table.copy()
            for name, values in ctx.annotation.columns.items():
                table[name] = values
            write_ldac(table, cat_path, image_header=ctx.image_header)
        arrays = {
            "hash": np.array(tile_hash_value),
            "names": np.array(list(result.sums)),
            "true_shear": np.array(shear if shear is not None else [np.nan, np.nan]),
            "step": np.array(result.metacal.step),
            "engine": np.array(result.metacal.engine),
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
        from blendflag.catalog import atomic_output, read_catalogue, write_annotated
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


# ---------------------------------------------------------------------------
# Many tiles
# ---------------------------------------------------------------------------


def _local_cluster(workers: int):
    from dask.distributed import Client, LocalCluster

    from blendflag.parallel import _single_thread_env

    with _single_thread_env():
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=40,
        )
    return Client(cluster), cluster


def run_tiles(
    tiles: list[Tile],
    settings: dict,
    out_dir,
    workers: int = 1,
    scheduler: str | None = None,
    quiet: bool = True,
    on_message=print,
    task=compare_tile,
    force_cluster: bool = False,
) -> dict:
    """Run every unfinished tile; return ``{"done", "skipped", "failed"}`` summaries.

    ``workers == 1`` without a scheduler runs the tiles in this process, in order.
    ``task`` is :func:`compare_tile` or :func:`flag_tile`; ``force_cluster``
    uses a Dask cluster even for one worker (for fair scaling measurements).
    """
    from blendflag.progress import progress

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo, skipped = [], []
    for tile in tiles:
        h = tile_hash(tile, settings)
        if _stored_hash(out / f"{tile.name}.sums.npz") == h:
            skipped.append({"tile": tile.name, "status": "skipped"})
        else:
            todo.append((tile, h))
    results = []
    bar = progress(total=len(todo), desc="tiles", quiet=quiet, unit="tile")
    try:
        if not todo:
            pass
        elif workers <= 1 and not scheduler and not force_cluster:
            for tile, h in todo:
                results.append(task(tile, settings, str(out), h))
                bar.update(1)
        else:
            try:
                from dask.distributed import Client, as_completed
            except ImportError:
                raise BlendflagError(
                    "running tiles in parallel needs Dask: pip install 'dask[distributed]'"
                ) from None
            if scheduler:
                try:
                    client, cluster = Client(scheduler, timeout=30), None
                except (OSError, TimeoutError, ValueError) as exc:
                    raise BlendflagError(
                        f"cannot connect to the Dask scheduler {scheduler}: {exc}"
                    ) from None
            else:
                client, cluster = _local_cluster(workers)
            try:
                if client.dashboard_link and on_message:
                    on_message(f"Dask dashboard: {client.dashboard_link}")
                futures = [
                    client.submit(task, tile, settings, str(out), h, pure=False) for tile, h in todo
                ]
                for fut in as_completed(futures):
                    results.append(fut.result())
                    bar.update(1)
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
    finally:
        bar.close()
    done = [r for r in results if r["status"] == "done"]
    failed = [r for r in results if r["status"] == "failed"]
    return {"done": done, "skipped": skipped, "failed": failed}


def combine_tiles(tiles: list[Tile], out_dir, seed: int = 0, n_bootstrap: int = 200) -> dict:
    """Combined statistics of all finished tiles, from their per-unit sums.

    Sums are stacked in tile-name order and bootstrapped with ``seed``, so the
    result does not depend on how (or in how many pieces) the tiles were run.
    """
    from blendflag.shear import statistics_from_sums

    out = Path(out_dir)
    per_name: dict[str, list] = {}
    n_good: dict[str, int] = {}
    shears, engines, step = set(), set(), 0.01
    used = []
    for tile in sorted(tiles, key=lambda t: t.name):
        path = out / f"{tile.name}.sums.npz"
        if not path.exists():
            continue
        with np.load(path, allow_pickle=False) as data:
            names = [str(n) for n in data["names"]]
            for k, name in enumerate(names):
                per_name.setdefault(name, []).append(data[f"sums{k}"])
                n_good[name] = n_good.get(name, 0) + int(data[f"ngood{k}"])
            shear = tuple(float(v) for v in data["true_shear"])
            shears.add(None if np.isnan(shear[0]) else shear)
            engines.add(str(data["engine"]))
            step = float(data["step"])
        used.append(tile.name)
    if not used:
        raise BlendflagError("no tile has finished: nothing to combine")
    true_shear = shears.pop() if len(shears) == 1 else None
    selections = [
        statistics_from_sums(
            name,
            np.concatenate(parts),
            n_good[name],
            step,
            true_shear,
            np.random.default_rng(seed + 1),
            n_bootstrap,
        )
        for name, parts in per_name.items()
    ]
    return {
        "engine": ",".join(sorted(engines)),
        "true_shear": list(true_shear) if true_shear is not None else None,
        "selections": selections,
        "tiles": used,
        "n_tiles": len(used),
        "n_objects": n_good.get("all", 0),
        "n_measured": n_good.get("all", 0),
    }


def settings_for(
    config,
    flaggers: list[str],
    engine: str,
    seed: int,
    weights=None,
    pixel_scale=None,
    bootstrap=None,
) -> dict:
    """The settings that define a tile's result (hashed for resuming)."""
    import blendflag

    return {
        "config": asdict(config),
        "flaggers": list(flaggers),
        "engine": engine,
        "seed": int(seed),
        "weights": weights,
        "pixel_scale": pixel_scale,
        "bootstrap": bootstrap,
        "version": blendflag.__version__,
    }
