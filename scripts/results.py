"""Run the evaluations quoted in the README and print them as Markdown tables.

Usage::

    python scripts/results.py --out docs/results [--methods vgg16,sextractor] [--n 4000]
    python scripts/results.py --out docs/results --only survey --workdir held_out

Each table row comes from one ``blendflag-shear evaluate`` command, printed
above the table; its JSON and PNG are written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

STUDY = {  # the original study (Farrens et al.), GREAT3-like, column-normalised
    "vgg16": (0.963, 0.977),
    "oneclass": (0.794, 0.861),
    "siamese": (0.672, 0.856),
    "sextractor": (0.565, 0.755),
}
STUDY_CFIS = {"vgg16": (0.824, 0.890), "sextractor": (0.453, 0.869)}


SURVEYS = ("cfis_survey", "euclid_survey", "lsst_y10")


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def evaluate(
    out: Path,
    tag: str,
    dataset: str,
    n: int,
    seed: int,
    methods: str,
    noise: str | None = None,
    metacal: bool = False,
) -> dict:
    js, png = out / f"{tag}.json", out / f"{tag}.png"
    cmd = [
        "blendflag-shear",
        "evaluate",
        "--dataset",
        dataset,
        "--n",
        str(n),
        "--seed",
        str(seed),
        "--methods",
        methods,
        "--json",
        str(js),
        "--plot",
        str(png),
        "--quiet",
    ]
    if noise:
        cmd += ["--noise", noise]
    if metacal:
        cmd += ["--metacal"]
    run(cmd)
    return json.loads(js.read_text())


def table(title: str, results: dict, study: dict | None = None) -> str:
    lines = [
        f"**{title}** (n = {results['n']})",
        "",
        "| method | blend recall | non-blend recall | accuracy | blend recall < 10 px "
        "| stamps/s | study (blend / non-blend) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in results["methods"].items():
        ref = (study or {}).get(name)
        lines.append(
            f"| {name} | {m['confusion'][0][0]:.3f} | {m['confusion'][1][1]:.3f} | "
            f"{m['accuracy']:.3f} | {m['blend_recall_under_10px']:.3f} | "
            f"{m.get('stamps_per_s') or 0:.0f} | "
            f"{f'{ref[0]:.3f} / {ref[1]:.3f}' if ref else '-'} |"
        )
    return "\n".join(lines)


def made_by() -> str:
    """The first line of a tables file: the command, its time and the code's commit."""
    from blendflag._runtime.provenance import provenance

    p = provenance()
    dirty = " (with uncommitted changes)" if p["dirty"] else ""
    return f"Made by `{p['command']}` on {p['utc_time']}, commit {p['commit']}{dirty}."


def held_out(workdir: Path, dataset: str, n: int, seed: int, blend_fraction=None) -> Path:
    """A held-out stamps file of survey-sky stamps, simulated once into ``workdir``."""
    tag = f"_b{seed}" if blend_fraction else f"_s{seed}"
    path = workdir / f"held_{dataset}{tag}.fits"
    if not path.exists():
        cmd = ["blendflag-shear", "simulate", "--dataset", dataset, "--n", str(n)]
        cmd += ["--seed", str(seed), "--quiet", "--out", str(path)]
        if blend_fraction:
            cmd += ["--blend-fraction", str(blend_fraction)]
        run(cmd)
    return path


def evaluate_file(out: Path, tag: str, data: Path, methods: str) -> dict:
    js = out / f"{tag}.json"
    cmd = ["blendflag-shear", "evaluate", "--data", str(data), "--methods", methods]
    run([*cmd, "--json", str(js), "--plot", str(out / f"{tag}.png"), "--quiet"])
    return json.loads(js.read_text())


def survey_table(title: str, results: dict) -> str:
    """Binary recalls, count accuracies and singles called blends by half-light radius."""
    lines = [
        f"**{title}** (n = {results['n']})",
        "",
        "| method | blend recall | non-blend recall | accuracy | count accuracy (balanced) "
        '| singles called blends, HLR < 0.15" / 0.15-0.25" / 0.25-0.4" / > 0.4" |',
        "|---|---|---|---|---|---|",
    ]
    for name, m in results["methods"].items():
        count = m.get("count")
        counts = f"{count['accuracy']:.3f} ({count['balanced_accuracy']:.3f})" if count else "-"
        sizes = " / ".join(
            f"{b['flagged']:.3f}" if b["flagged"] is not None else "-"
            for b in m.get("false_blends_by_hlr", [])
        )
        lines.append(
            f"| {name} | {m['confusion'][0][0]:.3f} | {m['confusion'][1][1]:.3f} | "
            f"{m['accuracy']:.3f} | {counts} | {sizes or '-'} |"
        )
    return "\n".join(lines)


def survey_tables(out: Path, workdir: Path, n: int, seed: int, methods: str) -> list[str]:
    """Held-out survey-sky stamps: each sky's own blend share, and half blends."""
    workdir.mkdir(parents=True, exist_ok=True)
    md = []
    for ds in SURVEYS:
        sky = held_out(workdir, ds, n, seed)
        res = evaluate_file(out, f"{ds}_stamps", sky, methods)
        md.append(survey_table(f"{ds} field stamps, the sky's blend share (seed {seed})", res))
        half = held_out(workdir, ds, n // 2, seed + 1, 0.5)
        res = evaluate_file(out, f"{ds}_stamps_half", half, methods)
        md.append(survey_table(f"{ds} field stamps, half blends (seed {seed + 1})", res))
    return md


def noise_table(results: dict) -> str:
    names = list(results["methods"])
    levels = [b["noise"] for b in results["methods"][names[0]]["by_noise"]]
    lines = ["| noise sigma (ADU) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i, level in enumerate(levels):
        cells = [f"{results['methods'][n]['by_noise'][i]['accuracy']:.3f}" for n in names]
        lines.append(f"| {level:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--methods", default="vgg16,sextractor")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--only", help="comma-separated subset of: default,noise,four,metacal,survey"
    )
    parser.add_argument(
        "--workdir",
        default="held_out",
        help="survey: where the held-out stamps files are simulated once [default: held_out]",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = set((args.only or "default,noise").split(","))
    md = []
    if "default" in parts:
        for ds in ("great3", "euclid", "cfis"):
            res = evaluate(out, f"{ds}_default", ds, args.n, args.seed, args.methods)
            ref = STUDY if ds == "great3" else STUDY_CFIS if ds == "cfis" else None
            md.append(table(f"{ds}-like, preset default noise", res, ref))
    if "noise" in parts:
        for ds in ("great3", "cfis"):
            res = evaluate(out, f"{ds}_grid", ds, args.n, args.seed + 1, args.methods, "grid")
            md.append(
                f"**Accuracy versus noise, {ds}-like** (n = {res['n']}, noise grid)\n\n"
                + noise_table(res)
            )
    if "four" in parts:
        for ds in ("great3", "cfis"):
            res = evaluate(
                out, f"{ds}_four", ds, args.n, args.seed + 2, "vgg16,oneclass,siamese,sextractor"
            )
            md.append(
                table(f"four methods, {ds}-like", res, STUDY if ds == "great3" else STUDY_CFIS)
            )
            res = evaluate(
                out,
                f"{ds}_four_grid",
                ds,
                args.n,
                args.seed + 3,
                "vgg16,oneclass,siamese,sextractor",
                "grid",
            )
            md.append(f"**Accuracy versus noise, four methods, {ds}-like**\n\n" + noise_table(res))
    if "metacal" in parts:  # what compare's selections see: noshear metacal images
        for ds in ("great3", "cfis"):
            res = evaluate(
                out,
                f"{ds}_metacal",
                ds,
                args.n,
                args.seed + 4,
                "vgg16,siamese,sextractor",
                metacal=True,
            )
            md.append(table(f"metacal (noshear) images of {ds}-like stamps", res))
    if "survey" in parts:
        md += survey_tables(out, Path(args.workdir), args.n, args.seed, args.methods)
    print("\n\n".join(md))
    name = "tables_survey.md" if parts == {"survey"} else "tables.md"
    (out / name).write_text(made_by() + "\n\n" + "\n\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
