"""The literature check: standard metacal and metadetection on DES-Y5- and LSST-Y10-like skies.

Sheldon et al. 2020 (ApJ 902, 138, section 6, blended simulations with
WeakLensingDeblending galaxies) measured the multiplicative bias of shear
catalogues with S/N > 10:

- metacalibration with detection once on the unsheared image (the project's
  per-object route, ``metacal``): m = -0.036 ± 0.005 at DES-Y5 depth,
  -0.035 ± 0.002 at LSST-Y10 depth, -0.082 ± 0.005 at twice LSST's density;
- metadetection: +0.00025 ± 0.00088 (DES-Y5) and +0.00047 ± 0.00043 (LSST,
  twice the density).

For each configuration (``--configs``: preset and density factor; the
factor scales the preset's number counts, :func:`simulated_preset`) the
script simulates ``--tiles`` ±g pairs of fields of `compare`'s default size
at the preset's own noise (``scripts/science_run.py``'s ``simulate_tiles``,
seeds ``--seed``, ``--seed + 1``, ...), measures the same fields with each
engine of ``--engines`` (``compare --tiles``: one task per tile, resumable:
a rerun skips finished fields and tiles; errors are bootstrap over cells x
sign, the ratio of the summed tiles) and writes

- ``DOCS.md``: m of every selection per configuration and engine, the
  literature's value beside ``all``, and the issue's verdicts: the
  per-object ``all`` within a factor 1.5 of the literature's m, and
  metadetection's |m| < max(2e-3, 3 sigma_m) with sigma_m <= 4e-3;
- ``DOCS.png``: m of ``all`` per configuration and engine against the
  literature's;
- ``--json`` (default ``DOCS.json``): every combined comparison, the
  verdicts and a ``provenance`` block.

Usage (the work directory keeps the fields and tiles between runs)::

    python scripts/literature_check.py --tiles 64 --out literature \\
        --docs docs/literature_check --json docs/results/literature_check.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag._runtime.quiet_imports import install_for_script

sys.path.insert(0, str(Path(__file__).resolve().parent))
from science_run import SHEAR as FIELD_SHEAR  # the sibling script's steps and shear
from science_run import run_configuration, simulate_tiles

install_for_script()  # no TensorFlow start-up lines, as in blendflag-shear

#: Sheldon et al. 2020, ApJ 902, 138 (section 6): m and its error per configuration and engine.
LITERATURE = {
    ("des_y5", 1.0): {"metacal": (-0.036, 0.005), "metadetect": (0.00025, 0.00088)},
    ("lsst_y10", 1.0): {"metacal": (-0.035, 0.002)},
    ("lsst_y10", 2.0): {"metacal": (-0.082, 0.005), "metadetect": (0.00047, 0.00043)},
}
#: The issue's tolerances: the per-object m within this factor of the literature's,
#: and metadetection's requirement band and largest error.
FACTOR = 1.5
MD_BAND, MD_MAX_ERR = 2e-3, 4e-3
#: Rows of the table, when present.
SELECTIONS = ("all", "all_paired", "all_masked", "no_true_blends", "no_sextractor_blends")


def parse_configs(text: str) -> list[tuple[str, float]]:
    """``"des_y5:1,lsst_y10:2"`` -> ``[("des_y5", 1.0), ("lsst_y10", 2.0)]``.

    Raises
    ------
    ValueError
        An item without ``:``, or a factor that is not a positive number.
    """
    out = []
    for item in text.split(","):
        name, sep, factor = item.strip().partition(":")
        if not sep or not name:
            raise ValueError(f"--configs: {item!r} is not PRESET:FACTOR")
        value = float(factor)
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"--configs: the factor of {item!r} must be a positive number")
        out.append((name, value))
    return out


def parse_tiles(text: str, n_configs: int) -> list[int]:
    """Fields per configuration: one count for all, or one per configuration.

    Raises
    ------
    ValueError
        Not positive integers, or neither one count nor ``n_configs``.
    """
    try:
        counts = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"--tiles: {text!r} is not a list of integers") from None
    if any(c < 1 for c in counts):
        raise ValueError("--tiles: counts must be positive integers")
    if len(counts) == 1:
        return counts * n_configs
    if len(counts) != n_configs:
        raise ValueError(f"--tiles: one count, or one per configuration ({n_configs})")
    return counts


def stem_path(stem, suffix: str) -> Path:
    """``stem`` with ``suffix`` appended: a stem's dots (``..._lsst_y10_0.28x``) stay in its name.

    ``Path.with_suffix`` would replace ``.28x`` and write ``..._lsst_y10_0.md``.
    """
    return Path(f"{stem}{suffix}")


def config_name(dataset: str, factor: float) -> str:
    """Directory and row name of a configuration, e.g. ``des_y5_1x``."""
    return f"{dataset}_{factor:g}x"


def verdict(engine: str, m: float | None, err: float | None, literature) -> dict:
    """The issue's test of ``all`` for ``engine`` (see the module docstring).

    Returns
    -------
    dict
        ``met`` (bool or None: no literature value or no m), ``rule`` (text)
        and, for the per-object route, ``pull``: (m - m_lit) / the two errors
        in quadrature.
    """
    if m is None or err is None:
        return {"met": None, "rule": "no measurement"}
    if engine == "metadetect":
        return {
            "met": bool(abs(m) < max(MD_BAND, 3 * err) and err <= MD_MAX_ERR),
            "rule": f"|m| < max({MD_BAND:g}, 3 sigma_m) and sigma_m <= {MD_MAX_ERR:g}",
        }
    if literature is None:
        return {"met": None, "rule": "no literature value"}
    lit, lit_err = literature
    low, high = sorted((lit * FACTOR, lit / FACTOR))
    return {
        "met": bool(low <= m <= high),
        "rule": f"m within a factor {FACTOR:g} of {lit:+.3f}: [{low:+.3f}, {high:+.3f}]",
        "pull": (m - lit) / float(np.hypot(err, lit_err)),
    }


def _selection(doc: dict, name: str) -> dict | None:
    return next((s for s in doc["selections"] if s["name"] == name), None)


def summarise(results: dict) -> dict:
    """``{config: {engine: verdict}}`` of ``all`` against :data:`LITERATURE`."""
    out = {}
    for (dataset, factor), engines in results.items():
        row = {}
        for engine, doc in engines.items():
            s = _selection(doc, "all") or {}
            lit = LITERATURE.get((dataset, factor), {}).get(engine)
            row[engine] = verdict(engine, s.get("m"), s.get("m_err"), lit)
            row[engine]["literature"] = lit
        out[config_name(dataset, factor)] = row
    return out


def _pm(value, error, digits=4) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f} ± {error:.{digits}f}" if error is not None else f"{value:+.4f}"


def _met(v: dict) -> str:
    return {True: "met", False: "**missed**", None: "-"}[v.get("met")]


def _shear_words(link) -> str:
    """How the fields sheared positions, in words (``link``: ``--shear-group-link``)."""
    if link is None or np.isinf(link):
        return (
            "every position sheared about its half's centre, the noise permuted to "
            "follow the scene (`blendflag.simulate.scene_noise`)"
        )
    return f"positions sheared in groups linked at {link:g} px, on static noise"


def write_markdown(
    results, verdicts, path: Path, command: str, minutes: float, tiles, noise_factor=1.0, link=None
) -> None:
    """The page: one table per configuration, the verdicts, the command.

    ``noise_factor`` and ``link`` (``shear_group_link``, pixels) describe diagnostic fields.
    """
    noise = "its own noise" if noise_factor == 1 else f"{noise_factor:g} x its own noise"
    lines = [
        "# The literature check: standard metacal and metadetection on survey skies",
        "",
        f"Command: `{command}` ({minutes:.0f} minutes of this run on this machine;",
        "finished fields and tiles of earlier runs are reused).",
        "",
        "Fields: `compare`'s default ±g pairs (g = ±0.02, the same galaxies and pixel",
        f"noise draws, 90-degree rotated pairs) of each preset at {noise}; a density",
        f"factor scales the preset's number counts; {_shear_words(link)}.",
        "Selections carry the shear",
        "catalogue's cuts (S/N >= 10, T/T_PSF >= 1.2, in R). m = (g1(+) - g1(-)) / 2g - 1",
        "from the summed tiles; errors: bootstrap over cells x sign; `dm_vs_truth`",
        "against `no_true_blends` with the same draws. Literature: Sheldon et al.",
        "2020, ApJ 902, 138 (section 6).",
        "",
    ]
    for (dataset, factor), engines in results.items():
        name = config_name(dataset, factor)
        lines += [f"## `{dataset}`, {factor:g}x its density ({tiles[name]} ±g fields)", ""]
        lines += [
            "| engine | selection | N | kept | m | c1 | dm_vs_truth | literature m | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for engine, doc in engines.items():
            v = verdicts[name][engine]
            for sel in SELECTIONS:
                s = _selection(doc, sel)
                if s is None:
                    continue
                lit = _pm(*v["literature"], digits=5) if sel == "all" and v["literature"] else ""
                lines.append(
                    f"| {engine} | {sel} | {s['n']} | {s['fraction_kept']:.3f} | "
                    f"{_pm(s['m'], s['m_err'])} | {_pm(s['c1'], s['c1_err'], 5)} | "
                    f"{_pm(s['dm_vs_truth'], s['dm_vs_truth_err'])} | {lit} | "
                    f"{_met(v) if sel == 'all' else ''} |"
                )
        lines.append("")
        split = engines.get("metacal", {}).get("s2n_split")
        if split:
            lines += [
                "Per-object m by noshear S/N (every measured object of the bin, no cut and",
                "no R_S; bootstrap over the ±g fields):",
                "",
                "| S/N | N | R11 | m |",
                "|---|---|---|---|",
            ]
            for b in split:
                top = "inf" if b["s2n_max"] is None else f"{b['s2n_max']:g}"
                lines.append(
                    f"| {b['s2n_min']:g}-{top} | {b['n']} | {b['R11']:.3f} | "
                    f"{_pm(b['m'], b['m_err'])} |"
                )
            lines.append("")
        for engine in engines:
            v = verdicts[name][engine]
            pull = f"; (m - m_lit) / sigma = {v['pull']:+.1f}" if "pull" in v else ""
            lines.append(f"- {engine}: {v['rule']}: {_met(v)}{pull}")
        lines.append("")
    lines += [f"![m of all per configuration]({path.with_suffix('.png').name})", ""]
    lines += [
        "m of `all` per configuration and engine, and of per-object `all_masked`",
        "(triangles), with 1-sigma bootstrap errors, against the literature's (open",
        "squares, their errors); grey: |m| < 2e-3.",
        "",
    ]
    from blendflag.io.atomic import atomic_output

    with atomic_output(path) as tmp:
        Path(tmp).write_text("\n".join(lines))


def plot(results: dict, path: Path) -> None:
    """m of ``all`` (and per-object ``all_masked``) per configuration and engine, beside the
    literature's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 1.5 + 0.9 * len(results)), layout="constrained")
    ax.axvspan(-MD_BAND, MD_BAND, color="0.85", label="|m| < 2e-3")
    rows = (
        ("metacal", "all", "o", "C0"),
        ("metacal", "all_masked", "^", "C2"),
        ("metadetect", "all", "o", "C1"),
    )
    seen = set()
    for k, ((dataset, factor), engines) in enumerate(results.items()):
        for j, (engine, name, fmt, colour) in enumerate(rows):
            s = _selection(engines[engine], name) if engine in engines else None
            if s is None or s["m"] is None:
                continue
            label = f"{engine} {name} (this work)"
            ax.errorbar(s["m"], -k - 0.2 * (j - 1), xerr=s["m_err"], fmt=fmt, color=colour,
                        capsize=3, label=None if label in seen else label)  # fmt: skip
            seen.add(label)
        for engine, colour in (("metacal", "C0"), ("metadetect", "C1")):
            lit = LITERATURE.get((dataset, factor), {}).get(engine)
            if lit is not None:
                label = f"{engine}, Sheldon et al. 2020"
                ax.errorbar(lit[0], -k + 0.3, xerr=lit[1], fmt="s", mfc="none", color=colour,
                            capsize=3, label=None if label in seen else label)  # fmt: skip
                seen.add(label)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(-np.arange(len(results)), [f"{d} {f:g}x" for d, f in results])
    ax.set_xlabel("multiplicative bias m (±g pairs; 1-sigma bootstrap over cells x sign)")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    from blendflag.io.atomic import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


#: S/N bins (noshear S/N, lower edges) of the per-object diagnostic split.
S2N_EDGES = (10.0, 20.0, np.inf)


def s2n_split(
    root: Path, seeds, rng, n_boot: int = 200, tiles: str = "tiles_metacal"
) -> list[dict]:
    """Per-object m of ``all`` in bins of noshear S/N, from the tiles' catalogues.

    A diagnostic: every measured object of the bin on its noshear S/N only (no
    selection response), m = (g(+) - g(-)) / 2g - 1 with g = sum e1 / sum R11
    per sign, and a bootstrap over the ±g fields (the unit: one field's two
    images). ``tiles``: the directory under ``root`` of the run measured
    (:func:`tiles_name`: a pipeline config's own).
    """
    per_field = field_catalogues(root, seeds, tiles)
    out = []
    for lo, hi in itertools.pairwise(S2N_EDGES):
        sums = bin_sums(per_field, lo, hi)  # field, sign, (n, sum e1, sum R11)
        total = sums.sum(axis=0)
        picks = (rng.integers(0, len(sums), len(sums)) for _ in range(n_boot))
        draws = [m_from_sums(sums[k].sum(axis=0)) for k in picks]
        out.append(
            {
                "s2n_min": lo,
                "s2n_max": None if np.isinf(hi) else hi,
                "n": int(total[:, 0].sum()),
                "R11": float(total[:, 2].sum() / total[:, 0].sum()),
                "m": float(m_from_sums(total)),
                "m_err": float(np.std(draws)),
            }
        )
    return out


def field_catalogues(root: Path, seeds, tiles: str = "tiles_metacal") -> dict:
    """``{field: {"plus"|"minus": (S/N, e1, R11) of the measured objects}}`` of the tiles.

    ``tiles``: the directory under ``root`` holding the per-object metacal tiles.
    """
    from astropy.io import fits

    from blendflag.config import load_pipeline_config
    from blendflag.tiling.tile_list import read_tiles

    step = load_pipeline_config(None).shear.step  # the runs' (packaged) metacal step
    wanted = {f"seed{k}" for k in seeds}
    out = {}
    for tile in read_tiles(str(root / "seed*" / "*" / "image.fits")):
        seed, sign = Path(tile.image).parent.parent.name, Path(tile.image).parent.name
        if seed in wanted:
            t = fits.getdata(root / tiles / f"{tile.name}.fits", "LDAC_OBJECTS")
            ok = t["MCAL_FLAGS"] == 0
            r11 = (t["G1_1P"] - t["G1_1M"]) / (2 * step)
            out.setdefault(seed, {})[sign] = (t["S2N_NOSHEAR"][ok], t["G1_NOSHEAR"][ok], r11[ok])
    return out


def bin_sums(per_field: dict, lo: float, hi: float) -> np.ndarray:
    """``(fields, 2, 3)``: per field and sign (+, -) the objects, sum e1 and sum R11 in the bin."""
    sums = np.zeros((len(per_field), 2, 3))
    for i, seed in enumerate(sorted(per_field)):
        for j, sign in enumerate(("plus", "minus")):
            s2n, e1, r11 = per_field[seed][sign]
            b = (s2n >= lo) & (s2n < hi)
            sums[i, j] = (b.sum(), e1[b].sum(), r11[b].sum())
    return sums


def m_from_sums(total: np.ndarray) -> float:
    """m from the (+, -) sums ``(2, 3)``: g = sum e1 / sum R11 per sign."""
    g = total[:, 1] / total[:, 2]
    return float((g[0] - g[1]) / (2 * FIELD_SHEAR[0]) - 1)


def tiles_name(engine: str, config_path: str | None) -> str:
    """The directory of ``engine``'s tiles: ``tiles_<engine>``, plus ``_<config stem>`` if any.

    A diagnostic pipeline config measures the same fields into its own
    directory, beside the default measurement.
    """
    return f"tiles_{engine}" + ("" if config_path is None else f"_{Path(config_path).stem}")


def run(args, configs, counts) -> tuple[dict, dict]:
    """Simulate and measure every configuration (``counts``: its fields); ``(results, tiles)``."""
    from blendflag.pipeline.field_input import drawn_density
    from blendflag.simulate.presets import load_dataset

    results, tiles = {}, {}
    for (dataset, factor), n_fields in zip(configs, counts, strict=True):
        preset = load_dataset(dataset)
        suffix = "" if args.noise_factor == 1 else f"_noise{args.noise_factor:g}"
        changes = {}
        if args.shear_group_link is not None:
            suffix += f"_link{args.shear_group_link:g}"
            changes["shear_group_link"] = args.shear_group_link
        root = Path(args.out) / (config_name(dataset, factor) + suffix)
        seeds = range(args.seed, args.seed + n_fields)
        density = factor * drawn_density(preset)
        noise = args.noise_factor * preset.default_noise
        simulate_tiles(root, density, noise, seeds, None, 26, dataset, args.workers, changes)
        engines = {}
        for engine in args.engines.split(","):
            engines[engine] = run_configuration(
                root,
                args.workers,
                args.seed,
                args.bootstrap,
                engine,
                seeds,
                config_path=args.config,
                flaggers=args.flaggers.split(","),
                tiles_name=tiles_name(engine, args.config),
            )
            s = _selection(engines[engine], "all")
            print(config_name(dataset, factor), engine, _pm(s["m"], s["m_err"]), flush=True)
            if engine == "metacal":
                rng = np.random.default_rng(args.seed)
                engines[engine]["s2n_split"] = s2n_split(
                    root, seeds, rng, args.bootstrap, tiles_name(engine, args.config)
                )
        results[(dataset, factor)] = engines
        tiles[config_name(dataset, factor)] = n_fields
    return results, tiles


def _config_record(path: str | None) -> dict | None:
    """The ``--config`` file's name and text, so that the JSON says what was measured."""
    if path is None:
        return None
    return {"path": str(path), "text": Path(path).read_text()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs",
        default="des_y5:1,lsst_y10:1,lsst_y10:2",
        help="PRESET:DENSITY_FACTOR, comma-separated [des_y5:1,lsst_y10:1,lsst_y10:2]",
    )
    parser.add_argument("--engines", default="metacal,metadetect", help="[metacal,metadetect]")
    parser.add_argument(
        "--tiles",
        default="8",
        help="±g fields per configuration, or one count per configuration [8]",
    )
    parser.add_argument("--flaggers", default="sextractor", help="[sextractor]")
    parser.add_argument("--workers", type=int, default=2, help="processes [2]")
    parser.add_argument("--seed", type=int, default=100, help="first field seed [100]")
    parser.add_argument(
        "--shear-group-link",
        type=float,
        default=None,
        help="galaxy.counts.shear_group_link of the fields, pixels (inf: a uniform shear of "
        "every position; a diagnostic, own directories) [the preset's]",
    )
    parser.add_argument(
        "--noise-factor",
        type=float,
        default=1.0,
        help="pixel noise in units of each preset's survey noise (a diagnostic; the fields go "
        "to their own directories) [1]",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="a pipeline config (e.g. detection settings, a diagnostic): the same fields "
        "measured into tiles_<engine>_<its stem> [the packaged defaults]",
    )
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--out", default="literature", help="work directory [literature]")
    parser.add_argument("--docs", required=True, help="stem of the page and figure")
    parser.add_argument("--json", default=None, help="the results' JSON [the stem's .json]")
    args = parser.parse_args(argv)
    from blendflag.errors import BlendflagError

    try:
        configs = parse_configs(args.configs)
        from blendflag.simulate.presets import load_dataset

        for dataset, _ in configs:
            load_dataset(dataset)
    except (ValueError, BlendflagError) as exc:  # a bad --configs or an unknown preset
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        counts = parse_tiles(args.tiles, len(configs))
        if not (np.isfinite(args.noise_factor) and args.noise_factor > 0):
            raise ValueError("--noise-factor must be a positive number")
        if args.shear_group_link is not None and not args.shear_group_link > 0:
            raise ValueError("--shear-group-link must be a positive number of pixels (or inf)")
        if args.config is not None:
            from blendflag.config import load_pipeline_config

            load_pipeline_config(args.config)  # a bad file fails before any field is drawn
    except (ValueError, BlendflagError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        results, tiles = run(args, configs, counts)
    except BlendflagError as exc:  # e.g. a work directory of other fields
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verdicts = summarise(results)
    docs = Path(args.docs)
    docs.parent.mkdir(parents=True, exist_ok=True)
    command = "python scripts/literature_check.py " + " ".join(argv or sys.argv[1:])
    write_markdown(
        results,
        verdicts,
        stem_path(docs, ".md"),
        command,
        (time.perf_counter() - start) / 60,
        tiles,
        args.noise_factor,
        args.shear_group_link,
    )
    plot(results, stem_path(docs, ".png"))
    from blendflag.commands.common import write_json

    write_json(
        {
            "provenance": provenance(),
            "literature": "Sheldon et al. 2020, ApJ 902, 138, section 6",
            "fields_per_configuration": tiles,
            "noise_factor": args.noise_factor,
            "shear_group_link": args.shear_group_link,
            "pipeline_config": _config_record(args.config),
            "verdicts": verdicts,
            "results": {config_name(*k): v for k, v in results.items()},
        },
        args.json or stem_path(docs, ".json"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
