"""Throughput of every available shear engine on the same stamps."""

from __future__ import annotations

import time

import numpy as np

from blendflag.config import ShearConfig


def bench_shear_engines(
    pm=None,
    n: int = 100,
    rng: np.random.Generator | None = None,
    names=None,
    noise_sigma: float = 10.0,
) -> list[dict]:
    """Throughput of every available shear engine on the same stamps.

    Parameters
    ----------
    pm : pluggy.PluginManager or None
        Where to find engines. [default: a fresh manager]
    n : int
        Stamps per engine (rounded up to an even number). [default: 100]
    rng : numpy.random.Generator or None
        [default: seeded with 0]
    names : list of str or None
        Engines to time. [default: every available one]
    noise_sigma : float
        Pixel noise (ADU) of the bench stamps, so the noise correction runs
        as in production (flux 1e4 ADU: S/N about 60). [default: 10]

    Returns
    -------
    list of dict
        Per available engine, single process: ``{"stage": "shear engine
        NAME", "name", "n", "seconds", "objects_per_s", "ms_per_object",
        "n_flagged"}``; an engine that raises gets ``objects_per_s`` None and
        ``"error"``.
    """
    from blendflag.plugins import get_plugin_manager, get_shear_engines
    from blendflag.shear.testdata import isolated_galaxy_pairs

    rng = rng if rng is not None else np.random.default_rng(0)
    pm = pm if pm is not None else get_plugin_manager()
    engines = get_shear_engines(pm)
    chosen = names if names is not None else sorted(engines)
    data = isolated_galaxy_pairs((n + 1) // 2, rng, noise_sigma=noise_sigma)
    count = len(data.stamps)
    rows = []
    for name in chosen:
        cls = engines[name]
        if not cls.available() or not cls.needs_stamps:
            continue  # an image engine is timed per image, not on these stamps
        row = {"stage": f"shear engine {name}", "name": name, "n": count}
        engine = cls(ShearConfig())
        try:
            # warm up (imports, JIT compilation) outside the timing
            engine.measure(data.stamps[:2], data.psf, data.pixel_scale, data.noise_sigma, rng)
            start = time.perf_counter()
            result = engine.measure(data.stamps, data.psf, data.pixel_scale, data.noise_sigma, rng)
            seconds = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            row.update(objects_per_s=None, error=f"{type(exc).__name__}: {exc}")
            rows.append(row)
            continue
        row.update(
            seconds=seconds,
            objects_per_s=count / seconds if seconds > 0 else None,
            ms_per_object=1e3 * seconds / count,
            n_flagged=int((~result.good).sum()),
        )
        rows.append(row)
    return rows
