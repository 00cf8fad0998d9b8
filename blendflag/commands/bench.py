"""``blendflag-shear bench``: objects per second of every stage on this machine."""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag.commands.common import check_output_path, guard_outputs, load_config, write_json
from blendflag.errors import BlendflagError
from blendflag.flagging.flaggers import make_flaggers
from blendflag.plugins import get_flaggers


def register(cli) -> None:
    parser = cli.add_command(
        "bench",
        func=run,
        help="throughput of simulation, detection, each flagger and each shear engine",
        description="Measure objects per second of each stage on this machine (the figures "
        "quoted in the README come from this command).",
    )
    parser.add_argument("--json", metavar="PATH", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="small samples (a smoke test)")
    parser.add_argument(
        "--only",
        metavar="PARTS",
        help="comma-separated subset of: simulation,detection,flaggers,shear,tile "
        "(tile: compare on a 2000x2000 CFIS-like image split into 4 sub-tiles, 2 workers)",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="also run the same 8-tile compare job on 1 and 2 Dask workers",
    )


PARTS = ("simulation", "detection", "flaggers", "shear", "tile")


def _timed(func, *args, **kwargs):
    start = time.perf_counter()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - start


def bench_detection(pm, config, n_galaxies: int) -> list[dict]:
    """Every registered detector that is available here, on a simulated CFIS-like field."""
    from dataclasses import replace

    from blendflag.commands.detect import detect
    from blendflag.plugins import get_detectors
    from blendflag.simulate.field import simulate_field

    field = simulate_field("cfis", n_galaxies=n_galaxies, shear=(0.0, 0.0), seed=11)
    rows = []
    detectors = get_detectors(pm)
    backends = [n for n in sorted(detectors) if detectors[n].available(config.detect)]
    for backend in backends:
        cfg = replace(config.detect, backend=backend)
        table, seconds = _timed(detect, pm, field.image, field.weight, cfg)
        rows.append(
            {
                "stage": f"detect ({backend})",
                "objects": len(table),
                "seconds": seconds,
                "objects_per_s": len(table) / seconds,
                "image": f"{field.image.shape[1]}x{field.image.shape[0]}",
            }
        )
    return rows


def bench_flaggers(pm, config, n: int) -> list[dict]:
    """Each registered flagger on the same simulated GREAT3-like stamps."""
    from blendflag.simulate.stamps import simulate_stamps

    stamps, _ = simulate_stamps("great3", n, seed=12)
    rows = []
    for name in sorted(get_flaggers(pm)):
        try:
            (flagger,) = make_flaggers(pm, [name], config)
        except Exception as exc:  # noqa: BLE001 - e.g. no weights: report, go on
            rows.append({"stage": f"flag ({name})", "error": str(exc)})
            continue
        # warm-up: model load, and tracing at the full batch shape (a 64-stamp
        # warm-up left the first 256-stamp batch's tracing inside the timing)
        flagger.flag_stamps(stamps[:512])
        _, seconds = _timed(flagger.flag_stamps, stamps)
        row = {
            "stage": f"flag ({name})",
            "objects": n,
            "seconds": seconds,
            "objects_per_s": n / seconds,
        }
        if getattr(flagger, "precision", None):
            row["precision"] = flagger.precision
        rows.append(row)
    return rows


def selected_parts(only: str | None) -> tuple[str, ...]:
    """The parts of the bench to run: all of :data:`PARTS`, or those named in ``--only``.

    Raises
    ------
    BlendflagError
        ``only`` names no part, or one that is not in :data:`PARTS`.
    """
    parts = PARTS if only is None else tuple(p.strip() for p in only.split(","))
    if not any(parts):
        raise BlendflagError(f"--only names no part; choose from {', '.join(PARTS)}")
    parts = tuple(p for p in parts if p)
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise BlendflagError(f"unknown bench part {sorted(unknown)[0]!r} ({', '.join(PARTS)})")
    return parts


def bench_parts(pm, config, parts: tuple[str, ...], quick: bool) -> list[dict]:
    """One row per stage of the selected ``parts``: objects (or stamps) per second.

    ``quick`` takes small samples (a smoke test); the rows' ``seconds`` are
    wall-clock seconds.
    """
    rows = []
    if "simulation" in parts:
        from blendflag.simulate.stamps import bench_simulation

        sim = bench_simulation(n=400 if quick else 4000)
        rows.append({"stage": "simulate (two-galaxy stamps)", **sim})
    if "detection" in parts:
        rows += bench_detection(pm, config, 300 if quick else 3000)
    if "flaggers" in parts:
        rows += bench_flaggers(pm, config, 256 if quick else 2048)
    if "shear" in parts:
        from blendflag.shear.bench import bench_shear_engines

        rows += bench_shear_engines(pm, n=20 if quick else 200, rng=np.random.default_rng(13))
    if "tile" in parts:
        from blendflag.commands.compare import _default_flaggers
        from blendflag.tiling.bench import bench_split_tile

        names = _default_flaggers(pm, config)
        rows += bench_split_tile(pm, config, names, size=400 if quick else 2000)
    return rows


def run(args, pm) -> int:
    config = load_config(args)
    guard_outputs(args, (), ("json",))
    if args.json:
        check_output_path(args.json)
    parts = selected_parts(args.only)
    quick = args.quick
    rows = bench_parts(pm, config, parts, quick)
    from blendflag._runtime.machine import cpu_description

    result = {
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu": cpu_description(),
        "rows": rows,
    }
    if args.scaling:
        result["scaling"] = bench_scaling(pm, config, n_tiles=8, n_galaxies=100 if quick else 400)
    result["provenance"] = provenance(getattr(args, "command_line", None))
    if args.json:
        write_json(result, args.json)
    print_summary(result)
    return 0


def print_summary(result: dict) -> None:
    """Print the CPU, each stage's objects per second and the Dask scaling (seconds) of a bench."""
    cpu = result["cpu"]
    print(
        f"CPU: {cpu['model'] or 'unknown'}; native bfloat16: "
        f"{'yes' if cpu['bf16'] else 'no (networks run in float32)'}"
    )
    print(f"{'stage':<44} {'objects/s':>10}   (cores: {result['cores']})")
    for row in result["rows"]:
        rate = row.get("objects_per_s") or row.get("stamps_per_s")
        text = f"{rate:10.1f}" if rate is not None else f"  {row.get('error', '')}"
        print(f"{row['stage']:<44} {text}")
    if "scaling" in result:
        sc = result["scaling"]
        for w, sec in sc["seconds"].items():
            print(f"8 tiles on {w} Dask worker(s): {sec:.1f} s")
        print(f"speed-up with 2 workers: {sc['speedup']:.2f}x")


def bench_scaling(pm, config, n_tiles: int = 8, n_galaxies: int = 400) -> dict:
    """The same tile job on 1 and 2 local Dask workers.

    The job is ``compare`` with the first flagger of ``flag.flaggers`` and the
    config's shear engine (``shear.engine``).
    """
    import tempfile
    from pathlib import Path

    from blendflag.plugins import get_shear_engines, select_engine
    from blendflag.simulate.field import simulate_field
    from blendflag.simulate.field_io import write_field
    from blendflag.tiling.runner import run_tiles
    from blendflag.tiling.settings import RunSettings
    from blendflag.tiling.tile_list import read_tiles

    engine = select_engine(get_shear_engines(pm), config.shear.engine).name
    settings = RunSettings.for_run(pm, config, config.flag.flaggers[:1], engine, 0, bootstrap=20)
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="blendflag-scaling-") as tmp:
        root = Path(tmp)
        (root / "tiles").mkdir()
        for i in range(n_tiles):
            field = simulate_field(
                "cfis", n_galaxies, shear=(0.02, 0.0), seed=100 + i, noise=3.0, rotated_pairs=True
            )
            write_field(field, root / "tiles" / f"t{i}")
        tiles = read_tiles(str(root / "tiles" / "*" / "image.fits"))
        for workers in (1, 2):
            start = time.perf_counter()
            status = run_tiles(
                tiles,
                settings,
                root / f"out{workers}",
                workers=workers,
                scheduler=None,
                quiet=True,
                on_message=None,
                force_cluster=True,
            )
            seconds[workers] = time.perf_counter() - start
            if status["failed"]:
                raise BlendflagError(f"scaling bench: {status['failed'][0]['reason']}")
    return {
        "n_tiles": n_tiles,
        "n_galaxies_per_tile": n_galaxies,
        "seconds": seconds,
        "speedup": seconds[1] / seconds[2],
    }
