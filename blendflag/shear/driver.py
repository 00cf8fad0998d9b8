"""Chunked measurement: stamps in chunks, serially, in spawned processes or on Dask.

The noise-correction fields of chunk k come from the run's seed and k, so a
result does not depend on the number of workers.
"""

from __future__ import annotations

import numpy as np

from blendflag.shear.results import METACAL_VERSIONS, MetacalResult, flag_unstable

MEASURE_CHUNK = 256


def _measure_chunk(
    engine_cls,
    config,
    stamps,
    psf,
    pixel_scale,
    noise,
    seed,
    return_images,
    noise_fields=None,
    expected_stamps=0,
    extras=None,
):
    """One task of :func:`measure_parallel` (module level: picklable)."""
    engine = engine_cls(config)
    engine.expected_stamps = int(expected_stamps)
    kwargs = {"noise_fields": noise_fields} if noise_fields is not None else {}
    kwargs.update(extras or {})
    return engine.measure(
        stamps,
        psf,
        pixel_scale,
        noise,
        np.random.default_rng(seed),
        return_images=return_images,
        **kwargs,
    )


def measure_parallel(
    engine_cls,
    config,
    stamps,
    psf,
    pixel_scale,
    noise_sigma,
    seed: int,
    workers: int = 1,
    return_images: bool = False,
    progress=None,
    scheduler: str | None = None,
    noise_fields=None,
    extras=None,
) -> MetacalResult:
    """Measure ``stamps`` in chunks, serially, in spawned processes or on Dask.

    The noise-correction fields of chunk k come from ``seed`` and k, so the
    result does not depend on ``workers``.

    Parameters
    ----------
    engine_cls : type
        A :class:`ShearEngine` subclass.
    config : blendflag.config.ShearConfig
    stamps : numpy.ndarray
        ``(n, S, S)`` stamps (ADU).
    psf : numpy.ndarray
        PSF image at the stamps' pixel scale, or ``(n, P, P)``: one per stamp.
    pixel_scale : float
        Arcsec per pixel.
    noise_sigma : float or numpy.ndarray
        Noise sigma per stamp (ADU).
    seed : int
        Seed of the noise-correction fields.
    workers : int
        Processes (1: in this process). [default: 1]
    return_images : bool
        Keep the five metacal images of every stamp.
    progress : callable or None
        Called with the number of objects of each finished chunk.
    scheduler : str or None
        A Dask scheduler address; chunks become Dask tasks.
    noise_fields : numpy.ndarray or None
        ``(n, S, S)`` noise-correction fields (see :meth:`ShearEngine.measure`).
    extras : dict or None
        More per-object arrays (first axis ``n``) handed to the engine's
        ``measure`` as keywords, chunk by chunk: ``offsets`` for an engine
        that :attr:`takes_offsets`, ``neighbour_models`` for one that
        :attr:`takes_neighbour_models`.

    Returns
    -------
    MetacalResult
        Rows in input order.
    """
    from astropy.table import vstack

    from blendflag._runtime.parallel import run_chunks

    n = len(stamps)
    noise = np.broadcast_to(np.asarray(noise_sigma, dtype=np.float64), (n,))
    seeds = np.random.SeedSequence(seed).generate_state(max(1, -(-n // MEASURE_CHUNK)))
    # stamps each process measures with one PSF (a Dask cluster of unknown size: 2)
    parts = max(1, 2 if scheduler else workers)
    per_process = n // parts if np.ndim(psf) == 2 else 0
    if n:  # the engine may fix a run-wide setting for its chunks (a config it returns)
        config = (
            engine_cls(config).before_measuring(
                stamps,
                psf,
                pixel_scale,
                noise,
                lambda func, jobs: run_chunks(func, jobs, workers, scheduler=scheduler),
                parts,
            )
            or config
        )
    tasks = [
        (
            engine_cls,
            config,
            stamps[i : i + MEASURE_CHUNK],
            psf if np.ndim(psf) == 2 else psf[i : i + MEASURE_CHUNK],
            pixel_scale,
            noise[i : i + MEASURE_CHUNK],
            int(seeds[k]),
            return_images,
            None if noise_fields is None else noise_fields[i : i + MEASURE_CHUNK],
            per_process,
            {k: v[i : i + MEASURE_CHUNK] for k, v in (extras or {}).items()},
        )
        for k, i in enumerate(range(0, n, MEASURE_CHUNK))
    ]
    done = (lambda r: progress(len(r))) if progress else None
    parts = run_chunks(_measure_chunk, tasks, workers, on_done=done, scheduler=scheduler)
    images = None
    if return_images:
        images = {v: np.concatenate([p.images[v] for p in parts]) for v in METACAL_VERSIONS}
    first = parts[0]
    table = vstack([p.table for p in parts], metadata_conflicts="silent")
    meta = dict(
        first.meta,
        chunks=len(parts),
        workers=workers,
        n_unstable=flag_unstable(table, first.step, config.max_version_spread),
    )
    return MetacalResult(
        table=table,
        images=images,
        engine=first.engine,
        step=first.step,
        meta=meta,
        flag_names=first.flag_names,
    )
