"""The science run: every selection's m, at 1x and 3x a preset's density, deep and survey noise.

For each configuration (density x noise) the script simulates ``--tiles``
±g pairs of fields of ``--dataset`` (the CFIS-like study preset by default;
a survey preset such as ``des_y5`` draws its sky from number counts, and a
density factor scales its counts) with 90-degree rotated pairs (``simulate-field
--shear-pairs``: the same galaxies and pixel noise sheared by +g and -g, seeds
``--seed``, ``--seed + 1``, ...), runs ``compare --tiles`` on them (one Dask
task per tile, resumable: a rerun skips finished tiles and fields), and writes

- ``OUT/<config>/compare.json``: the combined comparison of that configuration;
- ``DOCS.md``: the table m, sigma_m, dm_vs_all, dm_vs_truth and the
  fraction kept of every selection in every configuration;
- ``DOCS.png`` (the stem's figure): m per selection and configuration, with the
  requirement band |m| < 2e-3 and bootstrap error bars.

Example (the run of docs/archive/science_run.md; give each run's page its own stem)::

    python scripts/science_run.py --tiles 4 --n-galaxies 3000 --workers 2 \\
        --out science --docs docs/science_run_example

A killed run resumes where it stopped with the same command.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from blendflag._runtime.quiet_imports import install_for_script

install_for_script()  # no TensorFlow start-up lines, as in blendflag-shear

SHEAR = (0.02, 0.0)
DEEP_NOISE = 2.0  # ADU: compare's default field


def configurations(preset, densities, noises):
    """``[(name, density, noise, factor)]`` over the grid (densities: multiples of the preset's)."""
    from blendflag.pipeline.field_input import drawn_density

    out = []
    for factor in densities:
        for label, noise in noises:
            density = factor * drawn_density(preset)
            out.append((f"density{factor:g}x_{label}", density, noise, factor))
    return out


def simulate_tiles(
    root: Path,
    density,
    noise,
    seeds,
    n_galaxies,
    margin,
    dataset="cfis",
    workers=1,
    counts_changes=None,
):
    """±g fields of ``dataset`` for each seed under ``root/seed<k>/{plus,minus}``.

    Finished fields are skipped, once their ``config.yaml`` shows the same
    preset (else ``BlendflagError``: a work directory of other fields, such as
    one simulated before a default changed, is never reused silently).
    ``n_galaxies`` None takes `compare`'s default field for the preset;
    ``workers`` processes draw the galaxies; ``counts_changes`` changes
    ``galaxy.counts`` settings of a counts preset (e.g.
    ``{"shear_group_link": 15}``).
    """
    from blendflag.pipeline.field_input import default_n_galaxies, simulated_preset
    from blendflag.simulate.field import simulate_field
    from blendflag.simulate.field_io import write_field

    preset = simulated_preset(dataset, density)
    if counts_changes:
        from blendflag.simulate.presets import with_counts

        preset = with_counts(preset, **counts_changes)
    n_galaxies = default_n_galaxies(preset) if n_galaxies is None else n_galaxies
    for seed in seeds:
        for sign, sub in ((1, "plus"), (-1, "minus")):
            target = root / f"seed{seed}" / sub
            if (target / "truth.fits").is_file():
                _check_same_preset(target, preset)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            field = simulate_field(
                preset,
                n_galaxies,
                shear=(sign * SHEAR[0], sign * SHEAR[1]),
                seed=seed,
                rotated_pairs=True,
                noise=noise,
                margin=margin,
                workers=workers,
            )
            field.sign = sign
            write_field(field, target)


def _check_same_preset(target: Path, preset) -> None:
    """Refuse a finished field whose ``config.yaml`` is not ``preset``'s."""
    from blendflag.config import to_yaml
    from blendflag.errors import BlendflagError

    stored = target / "config.yaml"
    if not stored.is_file() or stored.read_text() != to_yaml(preset):
        raise BlendflagError(
            f"{target} holds a field of another configuration; "
            "use another work directory or remove it"
        )


def run_configuration(
    root: Path,
    workers: int,
    seed: int,
    bootstrap: int,
    engine_name: str | None = None,
    seeds=None,
    config_path=None,
    flaggers=None,
    tiles_name=None,
) -> dict:
    """``compare --tiles`` over the configuration's fields; the combined JSON.

    ``engine_name`` None takes the config's engine (``auto``) and the tiles go
    to ``root/tiles``; a named engine's tiles go to ``root/tiles_<name>``, so
    several engines measure the same fields side by side. ``seeds`` keeps
    only those fields (``seed<k>`` directories); None takes every field there.
    ``flaggers`` names the flaggers; None takes the config's that are valid
    on metacal images. ``tiles_name`` names the tiles' directory instead
    (e.g. a diagnostic pipeline config's measurement of the same fields).
    """
    from blendflag.config import load_pipeline_config
    from blendflag.flagging.flaggers import make_flaggers
    from blendflag.plugins import get_flaggers, get_plugin_manager, get_shear_engines, select_engine
    from blendflag.tiling.runner import combine_tiles, run_tiles
    from blendflag.tiling.settings import RunSettings
    from blendflag.tiling.tile_list import read_tiles

    pm = get_plugin_manager()
    config = load_pipeline_config(config_path)
    classes = get_flaggers(pm)
    names = (
        [n for n in config.flag.flaggers if getattr(classes.get(n), "metacal_safe", False)]
        if flaggers is None
        else list(flaggers)
    )
    make_flaggers(pm, names, config)  # fail early
    engine = select_engine(
        get_shear_engines(pm), engine_name or config.shear.engine, paired=True
    ).name
    tiles = read_tiles(str(root / "seed*" / "*" / "image.fits"))
    if seeds is not None:  # only this run's fields, not every field in the directory
        wanted = {f"seed{k}" for k in seeds}
        tiles = [t for t in tiles if Path(t.image).parent.parent.name in wanted]
    settings = RunSettings.for_run(pm, config, names, engine, seed, bootstrap=bootstrap)
    out = root / (tiles_name or ("tiles" if engine_name is None else f"tiles_{engine_name}"))
    status = run_tiles(tiles, settings, out, workers=workers, quiet=True, on_message=None)
    if status["failed"]:
        raise SystemExit(f"{len(status['failed'])} tiles failed: {status['failed'][0]}")
    summary = combine_tiles(tiles, out, seed=seed, n_bootstrap=bootstrap)
    summary.tiles["status"] = {k: len(v) for k, v in status.items()}
    return summary.document()


def _pm(value, error, digits=4):
    if value is None:
        return "-"
    return (
        f"{value:+.{digits}f} ± {error:.{digits}f}" if error is not None else f"{value:+.{digits}f}"
    )


def write_table(
    results: dict,
    path: Path,
    command: str,
    minutes: float,
    units: str = "rotated pair x sign",
    fields: str = "CFIS-like fields",
) -> None:
    """The markdown table of every selection in every configuration (``units``: bootstrap's)."""
    lines = [
        "# Science run: blend cuts and the shear at two densities and two depths",
        "",
        f"Command: `{command}` ({minutes:.0f} minutes on this machine).",
        "",
        f"{fields} with 90-degree rotated pairs and ±g pairs (the same galaxies",
        "and pixel noise sheared by +0.02 and -0.02); m = (g1(+) - g1(-)) / 2g - 1.",
        f"Errors: bootstrap over {units}; the differences `dm_vs_all`",
        "(against `all`) and `dm_vs_truth` (against `no_true_blends`, the detections",
        "whose true galaxy overlaps no other at the field's own noise; under",
        "metadetection its rotated partner must overlap no other either) use the",
        "same draws, so their errors are those of the difference.",
        "",
        "| configuration | selection | N | kept | m | c1 | c2 | dm_vs_all | dm_vs_truth |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, data in results.items():
        for s in data["selections"]:
            lines.append(
                f"| {name} | {s['name']} | {s['n']} | {s['fraction_kept']:.3f} | "
                f"{_pm(s['m'], s['m_err'])} | {_pm(s['c1'], s['c1_err'], 5)} | "
                f"{_pm(s['c2'], s['c2_err'], 5)} | {_pm(s['dm_vs_all'], s['dm_vs_all_err'])} | "
                f"{_pm(s['dm_vs_truth'], s['dm_vs_truth_err'])} |"
            )
    lines += ["", f"![m per selection]({path.with_suffix('.png').name})", ""]
    path.write_text("\n".join(lines))


def plot(results: dict, path: Path, units: str = "rotated pair x sign") -> None:
    """m per selection (rows) and configuration (colours), with the requirement band.

    ``units`` names the bootstrap units in the axis label (metadetection: cells x sign).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s["name"] for s in next(iter(results.values()))["selections"]]
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.6 * len(names)), layout="constrained")
    ax.axvspan(-2e-3, 2e-3, color="0.85", label="|m| < 2e-3")
    for k, (config, data) in enumerate(results.items()):
        by = {s["name"]: s for s in data["selections"]}
        y = np.arange(len(names))[::-1] - 0.12 * k
        m = [by[n]["m"] if by[n]["m"] is not None else np.nan for n in names]
        e = [by[n]["m_err"] or 0 for n in names]
        ax.errorbar(m, y, xerr=e, fmt="o", capsize=3, color=f"C{k}", label=config)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(np.arange(len(names))[::-1], names)
    ax.set_xlabel(f"multiplicative bias m (±g pairs; 1-sigma bootstrap over {units})")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiles",
        default="4",
        help="±g fields per configuration, or one count per density (e.g. 8,12) [4]",
    )
    parser.add_argument(
        "--dataset", default="cfis", help="preset of the fields [cfis, the study's CFIS-like]"
    )
    parser.add_argument(
        "--n-galaxies",
        type=int,
        default=3000,
        help="galaxies per field; 0: compare's default field for the preset [3000]",
    )
    parser.add_argument(
        "--flaggers",
        default=None,
        help="comma-separated flaggers [the config's that run on metacal images]",
    )
    parser.add_argument("--densities", default="1,3", help="multiples of the preset's [1,3]")
    parser.add_argument("--noises", default="deep,survey", help="deep (2 ADU), survey (preset's)")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers [2]")
    parser.add_argument("--seed", type=int, default=100, help="first field seed [100]")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--out", default="science", help="work directory [science]")
    parser.add_argument("--docs", required=True, help="table and figure stem (docs/science_run_x)")
    parser.add_argument(
        "--engine", default=None, help="shear engine (default: the config's); own tiles directory"
    )
    parser.add_argument("--config", default=None, help="pipeline config (YAML) [the packaged one]")
    args = parser.parse_args(argv)

    from blendflag.simulate.presets import load_dataset

    preset = load_dataset(args.dataset)
    levels = {"deep": DEEP_NOISE, "survey": preset.default_noise}
    noises = [(label, levels[label]) for label in args.noises.split(",")]
    densities = [float(d) for d in args.densities.split(",")]
    counts = [int(t) for t in args.tiles.split(",")]
    flaggers = None if args.flaggers is None else args.flaggers.split(",")
    if len(counts) not in (1, len(densities)):
        parser.error("--tiles: one count, or one per density")
    tiles_of = dict(zip(densities, counts * (len(densities) // len(counts)), strict=True))
    start = time.perf_counter()
    results = {}
    for name, density, noise, factor in configurations(preset, densities, noises):
        root = Path(args.out) / name
        seeds = range(args.seed, args.seed + tiles_of[factor])
        simulate_tiles(
            root, density, noise, seeds, args.n_galaxies or None, 26, args.dataset, args.workers
        )
        results[name] = run_configuration(
            root, args.workers, args.seed, args.bootstrap, args.engine, seeds, args.config, flaggers
        )
        results[name].update(density=density, noise_sigma=noise)
        stem = "compare" if args.engine is None else f"compare_{args.engine}"
        (root / f"{stem}.json").write_text(json.dumps(results[name], indent=2))
        print(
            name, {s["name"]: (s["m"], s["m_err"]) for s in results[name]["selections"]}, flush=True
        )
    minutes = (time.perf_counter() - start) / 60
    docs = Path(args.docs)
    docs.parent.mkdir(parents=True, exist_ok=True)
    command = "python scripts/science_run.py " + " ".join(argv or sys.argv[1:])
    units = "cells x sign" if _image_engine(results) else "rotated pair x sign"
    fields = "CFIS-like fields" if args.dataset == "cfis" else f"`{args.dataset}` fields"
    write_table(results, Path(f"{docs}.md"), command, minutes, units, fields)
    plot(results, Path(f"{docs}.png"), units)
    return 0


def _image_engine(results: dict) -> bool:
    """Whether the results' engine measures whole images (its bootstrap units are cells)."""
    from blendflag.plugins import get_plugin_manager, get_shear_engines

    engines = get_shear_engines(get_plugin_manager())
    names = {r.get("engine") for r in results.values()}
    return any(n in engines and not engines[n].needs_stamps for n in names)


if __name__ == "__main__":
    raise SystemExit(main())
