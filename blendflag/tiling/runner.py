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

from pathlib import Path

import numpy as np

from blendflag.errors import BlendflagError
from blendflag.shear.paired import SumsFile
from blendflag.tiling.tasks import compare_tile
from blendflag.tiling.tile_list import Tile, tile_hash

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
    settings,
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
    [default: :func:`blendflag.tiling.tile_list.tile_hash`]; ``settings`` is
    the run's :class:`blendflag.tiling.settings.RunSettings`.
    """
    from blendflag._runtime.progress import progress
    from blendflag.io.paths import check_tile_outputs

    check_tile_outputs(tiles, out_dir, (".fits", ".sums.npz"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo, skipped = [], []
    for tile in tiles:
        h = hash_of(tile, settings)
        if SumsFile.stored_hash(out / f"{tile.name}.sums.npz") == h:
            skipped.append({"tile": tile.name, "status": "skipped"})
        else:
            todo.append((tile, h))
    jobs = [(tile, settings, str(out), h) for tile, h in todo]
    bar = progress(total=len(todo), desc="tiles", quiet=quiet, unit="tile")
    try:
        if workers <= 1 and not scheduler and not force_cluster:
            results = [_counted(bar, task(*job)) for job in jobs]
        elif jobs:
            results = _run_on_dask(task, jobs, workers, scheduler, on_message, bar)
        else:
            results = []
    finally:
        bar.close()
    done = [r for r in results if r["status"] == "done"]
    failed = [r for r in results if r["status"] == "failed"]
    return {"done": done, "skipped": skipped, "failed": failed}


def _counted(bar, result):
    bar.update(1)
    return result


def _dask_client(workers: int, scheduler: str | None):
    """``(client, cluster)``: the scheduler's client, or a local cluster's (then closed by us)."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise BlendflagError(
            "running tiles in parallel needs Dask: pip install 'dask[distributed]'"
        ) from None
    if not scheduler:
        return _local_cluster(workers)
    try:
        return Client(scheduler, timeout=30), None
    except (OSError, TimeoutError, ValueError) as exc:
        raise BlendflagError(f"cannot connect to the Dask scheduler {scheduler}: {exc}") from None


def _run_on_dask(task, jobs: list, workers: int, scheduler, on_message, bar) -> list:
    """Each job a Dask task; the summaries in the order they finish."""
    from dask.distributed import as_completed

    client, cluster = _dask_client(workers, scheduler)
    try:
        if client.dashboard_link and on_message:
            on_message(f"Dask dashboard: {client.dashboard_link}")
        futures = [client.submit(task, *job, pure=False) for job in jobs]
        return [_counted(bar, future.result()) for future in as_completed(futures)]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def combine_tiles(tiles: list[Tile], out_dir, seed: int = 0, n_bootstrap: int = 200):
    """Combined statistics of all finished tiles, from their per-unit sums.

    Units are keyed by (field, unit): the +g and -g tiles of one simulated
    field (``SHRSIGN``, same preset and seed) pair unit by unit, as ``compare``
    pairs them directly. Sums are stacked in tile-name order and bootstrapped
    with ``seed``, so the result does not depend on how (or in how many
    pieces) the tiles were run.

    Returns
    -------
    blendflag.pipeline.compare.CompareSummary
        ``tiles`` holds the names of the tiles combined and their number;
        ``stars`` and ``psf_check`` those of every tile together
        (:func:`blendflag.psf.star_check.combine_checks`).
    """
    from blendflag.pipeline.compare import CompareSummary, bootstrap_summary
    from blendflag.psf.star_check import combine_checks
    from blendflag.shear.star_cut import stars_summary

    out = Path(out_dir)
    stored, fields = {}, {}
    for tile in sorted(tiles, key=lambda t: t.name):
        path = out / f"{tile.name}.sums.npz"
        if path.exists():
            offset = fields.setdefault(_field_of(path), len(fields)) << 32
            stored[tile.name] = SumsFile.load(path, offset)
    if not stored:
        raise BlendflagError("no tile has finished: nothing to combine")
    files = list(stored.values())
    layouts = {f.layout for f in files}
    engines = sorted({f.engine for f in files})
    if len(layouts) > 1:
        raise BlendflagError(
            "the tiles were measured by engines of different kinds "
            f"({', '.join(engines)}): rerun them with one --engine"
        )
    shears = {
        None if f.true_shear is None else tuple(f.sign * g for g in f.true_shear) for f in files
    }
    true_shear = shears.pop() if len(shears) == 1 else None
    n_objects = sum(f.selections[next(iter(f.selections))].n_good for f in files)
    return CompareSummary(
        selections=_combined_entries(files, true_shear, seed, n_bootstrap),
        engine=",".join(engines),
        step=files[-1].step,
        true_shear=list(true_shear) if true_shear is not None else None,
        shear_pairs={f.sign for f in files} == {1, -1},
        n_objects=n_objects,
        n_measured=n_objects,
        noise_fields=_joined(f.noise_fields for f in files),
        shape=_joined(f.shape for f in files),
        neighbour_masking=_joined(f.neighbour_masking for f in files),
        tiles={"names": list(stored), "n": len(stored)},
        stars=stars_summary([f.stars for f in files]),
        psf_check=combine_checks([f.psf_check for f in files]),
        bootstrap=bootstrap_summary(
            [f.units for f in files], {f.sign for f in files} == {1, -1}, n_bootstrap, seed + 1
        ),
    )


def _plus_shear(stored) -> tuple | None:
    """The +g image's shear from a stored file of either sign (None: not known)."""
    if stored.true_shear is None:
        return None
    return tuple(stored.sign * g for g in stored.true_shear)


def _field_of(path) -> str:
    """The field key of a sums file (its +g and -g tiles share it)."""
    with np.load(path, allow_pickle=False) as data:
        return str(data["field"])


def _joined(values) -> str | None:
    """Distinct non-empty values joined by commas (None when there is none)."""
    return ",".join(sorted(set(values) - {""})) or None


def _combined_entries(files: list, true_shear, seed: int, n_bootstrap: int) -> list[dict]:
    """Every selection's statistics over the stored files, with the flaggers' counts."""
    from blendflag.shear.paired import ENGINE_UNIT_WORDS, SKY_CELLS, compare_statistics
    from blendflag.shear.selections import add_fraction_removed

    selections: dict[str, list] = {}
    counts: dict[str, tuple] = {}
    for stored in files:
        for name, sums in stored.selections.items():
            selections.setdefault(name, []).append(sums)
        for name, (flagged, measured) in stored.flag_counts.items():
            old = counts.get(name, (0, 0))
            counts[name] = (old[0] + flagged, old[1] + measured)
    engine_cells = any(f.units.startswith(ENGINE_UNIT_WORDS) for f in files)
    entries = compare_statistics(
        selections, files[-1].step, true_shear, np.random.default_rng(seed + 1), n_bootstrap,
        units=None if engine_cells else SKY_CELLS,
    )  # fmt: skip
    add_fraction_removed(entries, counts)
    return entries
