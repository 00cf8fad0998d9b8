"""Measure the multiplicative and additive shear bias of a metacal engine.

Isolated exponential galaxies in 90-degree rotated pairs (shape noise
cancels), sheared by a known g1, Moffat PSF with a small ellipticity along
g2 (so PSF leakage shows up in c), optional pixel noise. By default each
chunk is drawn twice, sheared by +g and -g with the same galaxies and the same
pixel noise, and measured with the same noise-correction fields (keyed by
pair), so m = (g1(+) - g1(-)) / 2g - 1 cancels the noise as well
(``--single-sign`` measures +g only). Prints and writes the entry of
:func:`blendflag.shear.paired.compare_statistics` (m, c1, c2 and bootstrap
errors over rotated pair x sign).

Example (the isolated-galaxy target of the paired-shear issue)::

    python scripts/metacal_accuracy.py --n-pairs 4000 --noise 10 --workers 2 --json m.json

Workers are started with ``spawn`` and ``OMP_NUM_THREADS=1`` (see blendflag._runtime.parallel).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy / GalSim, inherited by workers

import argparse
import json
import multiprocessing as mp
import time

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag._runtime.quiet_imports import install_for_script

install_for_script()  # no TensorFlow start-up lines, as in blendflag-shear


def _run_chunk(args):
    """Simulate and measure one chunk of pairs at one sign; return the table as arrays."""
    engine_name, step, fixnoise, n_pairs, seed, kwargs, first_pair, sign, options = args
    from blendflag.config import ShearConfig
    from blendflag.plugins import get_plugin_manager, get_shear_engines
    from blendflag.shear.inputs import paired_noise_fields
    from blendflag.shear.testdata import isolated_galaxy_pairs

    rng = np.random.default_rng(seed)  # the same galaxies and noise at both signs
    g1, g2 = kwargs["true_shear"]
    data = isolated_galaxy_pairs(n_pairs, rng, **dict(kwargs, true_shear=(sign * g1, sign * g2)))
    engines = get_shear_engines(get_plugin_manager())
    config = ShearConfig(step=step, options={engine_name: options} if options else {})
    engine = engines[engine_name](config, fixnoise=fixnoise)
    keys = data.pair_id + first_pair
    rotated = np.tile([False, True], n_pairs)
    fields = paired_noise_fields(keys, rotated, data.noise_sigma, data.stamps.shape[-1], 17)
    start = time.perf_counter()
    # a perfect detection's position, for an engine that starts from it
    where = {"offsets": data.offsets} if getattr(engine, "takes_offsets", False) else {}
    result = engine.measure(
        data.stamps, data.psf, data.pixel_scale, data.noise_sigma, rng, noise_fields=fields, **where
    )
    seconds = time.perf_counter() - start
    cols = {c: np.asarray(result.table[c]) for c in result.table.colnames}
    return cols, data.pair_id + first_pair, seconds


def _argument_parser() -> argparse.ArgumentParser:
    """The command line: engine, pairs, workers, shear, noise (ADU), PSF g2, step, output."""
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
    parser.add_argument("--single-sign", action="store_true", help="+g only, no -g twin")
    parser.add_argument(
        "--cuts",
        action="store_true",
        help="apply the shear catalogue's cuts (shear.cuts of the packaged config: S/N and "
        "T/T_PSF on each metacal version, so R_S sees them) [off: every object]",
    )
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--n-bootstrap", type=int, default=500)
    parser.add_argument("--json", help="write the result here")
    parser.add_argument(
        "--options", help='the engine\'s settings as JSON, e.g. \'{"shape": "wmom"}\''
    )
    return parser


def _chunk_tasks(args, kwargs: dict, seeds, n_chunks: int, options) -> list[tuple]:
    """The arguments of :func:`_run_chunk`: every chunk of pairs at +g (and -g), in order.

    Each chunk has its own child of ``seeds`` (a ``numpy.random.SeedSequence``),
    shared by its two signs.
    """
    tasks = []
    for k, child in enumerate(seeds.spawn(n_chunks)):
        n = min(args.chunk, args.n_pairs - k * args.chunk)
        first = k * args.chunk
        for sign in (1,) if args.single_sign else (1, -1):
            tasks.append(
                (
                    args.engine,
                    args.step,
                    not args.no_fixnoise,
                    n,
                    child,
                    kwargs,
                    first,
                    sign,
                    options,
                )
            )
    return tasks


def _units_by_sign(parts: list, tasks: list, cuts=None) -> tuple[dict, object]:
    """The pair sums of each sign per selection, and the last sign's table of measurements.

    Parameters
    ----------
    parts : list
        :func:`_run_chunk`'s ``(columns, pair_id, seconds)`` per task.
    tasks : list of tuple
        The tasks, in the same order (their sign is their 8th item).
    cuts : blendflag.config.ShearCuts or None
        The shear catalogue's cuts, made on each version: selection ``cut``
        beside ``all`` (every object).

    Returns
    -------
    units : dict
        ``{selection: [UnitSums per sign, in order of first appearance]}``.
    table : astropy.table.Table
        The measurements at the last sign.
    """
    from astropy.table import Table, vstack

    from blendflag.shear.paired import UnitSums
    from blendflag.shear.results import selection_unit_sums

    by_sign = {}
    for (cols, pair_id, _), task in zip(parts, tasks, strict=True):
        by_sign.setdefault(task[7], []).append((Table(cols), pair_id))  # the sign
    from blendflag.shear.cuts import shear_cut_masks
    from blendflag.shear.results import good_shapes

    units = {"all": []} if cuts is None else {"all": [], "cut": []}
    for sign, chunks in by_sign.items():
        table = vstack([t for t, _ in chunks])
        pair_id = np.concatenate([p for _, p in chunks])
        for name in units:
            masks = None if name == "all" else shear_cut_masks(table, cuts, good_shapes(table))[0]
            sums, n_good = selection_unit_sums(table, masks, pair_id)
            units[name].append(UnitSums(np.unique(pair_id), sums, n_good, sign))
    return units, table


def main(argv=None) -> int:
    parser = _argument_parser()
    args = parser.parse_args(argv)

    kwargs = {
        "true_shear": (args.shear, 0.0),
        "noise_sigma": args.noise,
        "psf_shear": (0.0, args.psf_g2),
    }
    seeds = np.random.SeedSequence(args.seed)
    n_chunks = -(-args.n_pairs // args.chunk)
    try:
        options = json.loads(args.options) if args.options else None
    except json.JSONDecodeError as exc:
        parser.error(f"--options is not JSON: {exc}")  # one line, exit 2
    if options is not None and not isinstance(options, dict):
        parser.error('--options must be a JSON object, e.g. \'{"shape": "wmom"}\'')
    tasks = _chunk_tasks(args, kwargs, seeds, n_chunks, options)
    start = time.perf_counter()
    if args.workers > 1:
        with mp.get_context("spawn").Pool(args.workers) as pool:
            parts = pool.map(_run_chunk, tasks, chunksize=1)
    else:
        parts = [_run_chunk(t) for t in tasks]
    wall = time.perf_counter() - start
    from blendflag.shear.paired import compare_statistics

    cuts = None
    if args.cuts:
        from blendflag.config import load_pipeline_config

        cuts = load_pipeline_config(None).shear.cuts
    units, table = _units_by_sign(parts, tasks, cuts)
    cpu_seconds = sum(p[2] for p in parts)
    entries = compare_statistics(
        units,
        args.step,
        (args.shear, 0.0),
        np.random.default_rng(args.seed + 1),
        args.n_bootstrap,
    )
    s2n = np.asarray(table["S2N_NOSHEAR"])
    out = {
        "engine": args.engine,
        "engine_options": options or {},
        "n_pairs": args.n_pairs,
        "shear_pairs": not args.single_sign,
        "noise_sigma": args.noise,
        "fixnoise": not args.no_fixnoise,
        "shear_cuts": None
        if cuts is None
        else {"s2n_min": cuts.s2n_min, "t_ratio_min": cuts.t_ratio_min},
        "median_s2n": float(np.median(s2n[np.isfinite(s2n)])) if np.isfinite(s2n).any() else None,
        "true_shear": [args.shear, 0.0],
        "psf_g2": args.psf_g2,
        "n_flagged": int((np.asarray(table["MCAL_FLAGS"]) != 0).sum()),
        "ms_per_object_per_core": 1e3 * cpu_seconds / (len(table) * len(units)),
        "wall_seconds": wall,
        "workers": args.workers,
        "selection": entries[0],
        **({"cut": entries[1]} if len(entries) > 1 else {}),
    }
    entry = entries[-1]  # printed: the cut selection when there is one
    print(json.dumps(out, indent=2))
    print(
        f"m = {entry['m']:.2e} +/- {entry['m_err']:.1e}   "
        f"c1 = {entry['c1'] or float('nan'):.2e} +/- {entry['c1_err'] or float('nan'):.1e}   "
        f"c2 = {entry['c2']:.2e} +/- {entry['c2_err']:.1e}"
    )
    if args.json:
        from blendflag.commands.common import write_json

        out["provenance"] = provenance()
        write_json(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
