"""Measure the multiplicative and additive shear bias of a metacal engine.

Isolated exponential galaxies in 90-degree rotated pairs (shape noise
cancels), sheared by a known g1, Moffat PSF with a small ellipticity along
g2 (so PSF leakage shows up in c), optional pixel noise. Prints and writes
the ``selection_statistics`` entry (m, c and bootstrap errors over pairs).

Example (about 3 minutes on 2 cores)::

    python scripts/metacal_accuracy.py --n-pairs 10000 --workers 2 --json m.json

Workers are started with ``spawn`` and ``OMP_NUM_THREADS=1`` (see blendflag.parallel).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy / GalSim, inherited by workers

import argparse
import json
import multiprocessing as mp
import time

import numpy as np


def _run_chunk(args):
    """Simulate and measure one chunk of pairs; return the table as arrays."""
    engine_name, step, fixnoise, n_pairs, seed, kwargs, first_pair = args
    from blendflag.config import ShearConfig
    from blendflag.plugins import get_plugin_manager, get_shear_engines
    from blendflag.shear.testdata import isolated_galaxy_pairs

    rng = np.random.default_rng(seed)
    data = isolated_galaxy_pairs(n_pairs, rng, **kwargs)
    engines = get_shear_engines(get_plugin_manager())
    engine = engines[engine_name](ShearConfig(step=step), fixnoise=fixnoise)
    start = time.perf_counter()
    result = engine.measure(data.stamps, data.psf, data.pixel_scale, data.noise_sigma, rng)
    seconds = time.perf_counter() - start
    cols = {c: np.asarray(result.table[c]) for c in result.table.colnames}
    return cols, data.pair_id + first_pair, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="metacal", help="shear engine name [metacal]")
    parser.add_argument("--n-pairs", type=int, default=2000, help="rotated pairs [2000]")
    parser.add_argument("--workers", type=int, default=1, help="processes [1]")
    parser.add_argument("--chunk", type=int, default=250, help="pairs per task [250]")
    parser.add_argument("--shear", type=float, default=0.02, help="true g1 [0.02]")
    parser.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="pixel noise sigma, ADU (galaxy flux 1e4 ADU); 0 = noiseless [0]",
    )
    parser.add_argument("--psf-g2", type=float, default=0.02, help="PSF ellipticity g2 [0.02]")
    parser.add_argument("--step", type=float, default=0.01, help="metacal step [0.01]")
    parser.add_argument(
        "--no-fixnoise",
        action="store_true",
        help="switch the noise correction off (to see the noise bias)",
    )
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--n-bootstrap", type=int, default=500)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)

    from blendflag.shear.statistics import selection_statistics

    kwargs = {
        "true_shear": (args.shear, 0.0),
        "noise_sigma": args.noise,
        "psf_shear": (0.0, args.psf_g2),
    }
    seeds = np.random.SeedSequence(args.seed)
    n_chunks = -(-args.n_pairs // args.chunk)
    tasks = []
    for k, child in enumerate(seeds.spawn(n_chunks)):
        n = min(args.chunk, args.n_pairs - k * args.chunk)
        first = k * args.chunk
        tasks.append((args.engine, args.step, not args.no_fixnoise, n, child, kwargs, first))
    start = time.perf_counter()
    if args.workers > 1:
        with mp.get_context("spawn").Pool(args.workers) as pool:
            parts = pool.map(_run_chunk, tasks, chunksize=1)
    else:
        parts = [_run_chunk(t) for t in tasks]
    wall = time.perf_counter() - start
    from astropy.table import Table

    table = Table({c: np.concatenate([p[0][c] for p in parts]) for c in parts[0][0]})
    pair_id = np.concatenate([p[1] for p in parts])
    cpu_seconds = sum(p[2] for p in parts)
    entry = selection_statistics(
        table,
        "all",
        None,
        step=args.step,
        true_shear=(args.shear, 0.0),
        rng=np.random.default_rng(args.seed + 1),
        n_bootstrap=args.n_bootstrap,
        pair_id=pair_id,
    )
    s2n = np.asarray(table["S2N_NOSHEAR"])
    out = {
        "engine": args.engine,
        "n_pairs": args.n_pairs,
        "noise_sigma": args.noise,
        "fixnoise": not args.no_fixnoise,
        "median_s2n": float(np.median(s2n[np.isfinite(s2n)])) if np.isfinite(s2n).any() else None,
        "true_shear": [args.shear, 0.0],
        "psf_g2": args.psf_g2,
        "n_flagged": int((np.asarray(table["MCAL_FLAGS"]) != 0).sum()),
        "ms_per_object_per_core": 1e3 * cpu_seconds / len(table),
        "wall_seconds": wall,
        "workers": args.workers,
        "selection": entry,
    }
    print(json.dumps(out, indent=2))
    print(
        f"m = {entry['m']:.2e} +/- {entry['m_err']:.1e}   "
        f"c = {entry['c']:.2e} +/- {entry['c_err']:.1e}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
