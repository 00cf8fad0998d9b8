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

from dataclasses import asdict
from pathlib import Path

import numpy as np

from blendflag.errors import BlendflagError
from blendflag.tiling.tasks import compare_tile
from blendflag.tiling.tile_list import Tile, stored_hash, tile_hash

# ---------------------------------------------------------------------------
# Many tiles
# ---------------------------------------------------------------------------


def _local_cluster(workers: int):
    from dask.distributed import Client, LocalCluster

    from blendflag._runtime.parallel import _single_thread_env

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
    hash_of=tile_hash,
) -> dict:
    """Run every unfinished tile; return ``{"done", "skipped", "failed"}`` summaries.

    ``workers == 1`` without a scheduler runs the tiles in this process, in order.
    ``task`` is :func:`compare_tile` or :func:`flag_tile`; ``force_cluster``
    uses a Dask cluster even for one worker (for fair scaling measurements).
    ``hash_of(tile, settings)`` is the hash that marks a tile done
    [default: :func:`blendflag.tiling.tile_list.tile_hash`].
    """
    from blendflag._runtime.progress import progress
    from blendflag.io.paths import check_tile_outputs

    check_tile_outputs(tiles, out_dir, (".fits", ".sums.npz"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo, skipped = [], []
    for tile in tiles:
        h = hash_of(tile, settings)
        if stored_hash(out / f"{tile.name}.sums.npz") == h:
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

    Units are keyed by (field, unit): the +g and -g tiles of one simulated
    field (``SHRSIGN``, same preset and seed) pair unit by unit, as ``compare``
    pairs them directly. Sums are stacked in tile-name order and bootstrapped
    with ``seed``, so the result does not depend on how (or in how many
    pieces) the tiles were run.
    """
    from blendflag.shear.paired import UnitSums, compare_statistics
    from blendflag.shear.selections import add_fraction_removed

    out = Path(out_dir)
    selections: dict[str, list] = {}
    counts: dict[str, tuple] = {}
    fields: dict[str, int] = {}
    shears, engines, layouts, signs, step = set(), set(), set(), set(), 0.01
    described = {"shape": set(), "neighbour_masking": set()}
    used, n_objects = [], 0
    for tile in sorted(tiles, key=lambda t: t.name):
        path = out / f"{tile.name}.sums.npz"
        if not path.exists():
            continue
        with np.load(path, allow_pickle=False) as data:
            if "keys0" not in data.files:
                raise BlendflagError(
                    f"{path.name} was written by an older blendflag: delete it and rerun the tile"
                )
            sign = int(data["sign"])
            offset = fields.setdefault(str(data["field"]), len(fields)) << 32
            for k, name in enumerate(str(n) for n in data["names"]):
                selections.setdefault(name, []).append(
                    UnitSums(
                        data[f"keys{k}"] + offset,
                        data[f"sums{k}"],
                        int(data[f"ngood{k}"]),
                        sign,
                        str(data["layout"]),
                    )
                )
                flagged, measured = (int(v) for v in data[f"flagged{k}"])
                if measured >= 0:
                    old = counts.get(name, (0, 0))
                    counts[name] = (old[0] + flagged, old[1] + measured)
            shear = tuple(sign * float(v) for v in data["true_shear"])
            shears.add(None if np.isnan(shear[0]) else shear)
            engines.add(str(data["engine"]))
            for key in ("shape", "neighbour_masking"):  # tiles written before these: none
                described[key].add(str(data[key]) if key in data.files else "")
            layouts.add(str(data["layout"]))
            signs.add(sign)
            step = float(data["step"])
            n_objects += int(data["ngood0"])
        used.append(tile.name)
    if not used:
        raise BlendflagError("no tile has finished: nothing to combine")
    if len(layouts) > 1:
        raise BlendflagError(
            "the tiles were measured by engines of different kinds "
            f"({', '.join(sorted(engines))}): rerun them with one --engine"
        )
    true_shear = shears.pop() if len(shears) == 1 else None
    entries = compare_statistics(
        selections, step, true_shear, np.random.default_rng(seed + 1), n_bootstrap
    )
    add_fraction_removed(entries, counts)
    return {
        "engine": ",".join(sorted(engines)),
        **{key: ",".join(sorted(v - {""})) or None for key, v in described.items()},
        "true_shear": list(true_shear) if true_shear is not None else None,
        "shear_pairs": signs == {1, -1},
        "selections": entries,
        "tiles": used,
        "n_tiles": len(used),
        "n_objects": n_objects,
        "n_measured": n_objects,
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
    """The settings that define a tile's result (hashed for resuming).

    They include the engine's resolved settings (its defaults with the
    config's ``shear.options`` applied), so a tile measured before an
    engine's default changed is measured again, not resumed.
    """
    import blendflag

    return {
        "config": asdict(config),
        "flaggers": list(flaggers),
        "engine": engine,
        "engine_settings": _engine_settings(config, engine),
        "seed": int(seed),
        "weights": weights,
        "pixel_scale": pixel_scale,
        "bootstrap": bootstrap,
        "version": blendflag.__version__,
    }


def _engine_settings(config, engine: str) -> dict | None:
    """The named engine's resolved ``settings`` for ``config.shear`` (None: none known)."""
    from blendflag.plugins import get_plugin_manager, get_shear_engines

    cls = get_shear_engines(get_plugin_manager()).get(engine)
    return getattr(cls(config.shear), "settings", None) if cls is not None else None
