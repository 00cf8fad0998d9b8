"""Running chunks of work in parallel: in this process, in spawned processes, or on Dask.

GalSim and numpy in worker processes must run one thread each and be started
with ``spawn`` (measured here: forking after GalSim has drawn deadlocked,
and two multi-threaded processes ran slower than one). ``run_chunks`` does
both; with a Dask scheduler address the same chunks become Dask tasks.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from blendflag.errors import BlendflagError

#: Below this many items, ``workers=None`` runs serially.
SERIAL_BELOW = 2000

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _init_worker() -> None:
    for var in _THREAD_VARS:
        os.environ[var] = "1"


@contextlib.contextmanager
def _single_thread_env():
    """Spawned workers inherit ``OMP_NUM_THREADS=1`` (read when numpy/GalSim load).

    Also hides a ``__main__.__file__`` that is not a file (``python - < script``),
    which ``spawn`` would otherwise try to re-run in every worker.
    """
    import sys

    saved = {var: os.environ.get(var) for var in _THREAD_VARS}
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    hide = (
        main_file is not None
        and getattr(main, "__spec__", None) is None
        and not os.path.isfile(main_file)
    )
    try:
        for var in _THREAD_VARS:
            os.environ[var] = "1"
        if hide:
            del main.__file__
        yield
    finally:
        if hide:
            main.__file__ = main_file
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def idle_cores() -> int:
    """Cores not busy with other work: ``cpu_count`` minus the 1-minute load (at least 1)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not on Windows
        return cores
    return max(1, min(cores, round(cores - load)))


def _resolve_workers(workers, n: int) -> int:
    if workers is None:
        # Spawning a worker costs ~1 s (numpy + GalSim imports): worth it for
        # large sets only, and only with cores that other jobs leave free.
        return 1 if n < SERIAL_BELOW else idle_cores()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise BlendflagError(f"workers must be a positive integer, got {workers!r}")
    return int(workers)


def run_chunks(
    func, tasks, workers: int, on_done=None, keep: bool = True, scheduler: str | None = None
) -> list:
    """Run ``func(*task)`` for each task, in order, serially or in spawned processes.

    Parameters
    ----------
    func : callable
        A module-level function (picklable).
    tasks : list of tuple
    workers : int
        1 runs in this process; more starts a ``spawn`` process pool whose
        workers see ``OMP_NUM_THREADS=1``.
    on_done : callable or None
        Called with each result as it completes (progress bars, reductions).
    keep : bool
        Return the results in task order; False returns ``[]`` and leaves
        them to ``on_done`` (which then sees them in completion order). [default: True]
    scheduler : str or None
        Address of a running Dask scheduler (``tcp://host:8786``): the tasks
        run on its workers instead. [default: None]
    """
    if scheduler:
        return _run_on_dask(func, tasks, scheduler, on_done, keep)
    if workers <= 1 or len(tasks) <= 1:
        return _run_serially(func, tasks, on_done, keep)
    return _run_in_processes(func, tasks, workers, on_done, keep)


def _run_serially(func, tasks, on_done, keep: bool) -> list:
    """``run_chunks`` in this process, one task after the other."""
    results = []
    for task in tasks:
        result = func(*task)
        if on_done is not None:
            on_done(result)
        if keep:
            results.append(result)
    return results


def _run_in_processes(func, tasks, workers: int, on_done, keep: bool) -> list:
    """``run_chunks`` in a pool of at most ``workers`` spawned single-threaded processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    results = [None] * len(tasks)
    with (
        _single_thread_env(),
        ProcessPoolExecutor(
            max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker
        ) as pool,
    ):
        pending = {pool.submit(func, *task): i for i, task in enumerate(tasks)}
        try:
            for fut in as_completed(list(pending)):
                index = pending.pop(fut)  # drop our reference: results can be large
                result = fut.result()
                if on_done is not None:
                    on_done(result)
                if keep:
                    results[index] = result
                del fut, result
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return results if keep else []


def _run_on_dask(func, tasks, scheduler: str, on_done, keep: bool) -> list:
    """``run_chunks`` on an existing Dask cluster."""
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise BlendflagError("--scheduler needs Dask: pip install 'blendflag[dask]'") from None
    try:
        client = Client(scheduler, timeout=30)
    except (OSError, TimeoutError, ValueError) as exc:
        raise BlendflagError(f"cannot connect to the Dask scheduler {scheduler}: {exc}") from None
    with client:
        futures = [client.submit(func, *task, pure=False) for task in tasks]
        index = {f.key: i for i, f in enumerate(futures)}
        results = [None] * len(tasks)
        for fut in as_completed(futures):
            result = fut.result()
            if on_done is not None:
                on_done(result)
            if keep:
                results[index[fut.key]] = result
    return results if keep else []
