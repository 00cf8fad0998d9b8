"""Per-object metacalibration and metadetection side by side, for every selection.

Reads ``compare`` JSON files made on the same fields with different engines
(``blendflag-shear compare --engine ... --json``, or the science run's
``compare*.json``) and writes a markdown table and a figure: m with its
bootstrap error and the paired difference against ``all`` (same engine, same
draws) for every selection and engine. Rows of a selection an engine does not
have (e.g. ``all_masked`` for metadetection) are left empty.

Example::

    blendflag-shear compare --json metacal.json
    blendflag-shear compare --engine metadetect --json metadetect.json
    python scripts/engines_side_by_side.py metacal.json metadetect.json \\
        --out docs/results/engines_default

The engines' errors are each their own: the bootstrap units differ (rotated
pairs x sign for per-object metacal, cells x sign for metadetection), so the
difference between engines has no paired error here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _fmt(value, error, digits=4):
    if value is None:
        return "-"
    if error is None:
        return f"{value:+.{digits}f}"
    return f"{value:+.{digits}f} ± {error:.{digits}f}"


def load(paths: list[str]) -> dict:
    """``{label: json}``, labelled by engine (and the file name when engines repeat)."""
    runs = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        label = data.get("engine") or Path(path).stem
        if label in runs:
            label = f"{label} ({Path(path).stem})"
        runs[label] = data
    return runs


def selection_names(runs: dict) -> list[str]:
    """Every selection of any run, in first-seen order."""
    names = []
    for data in runs.values():
        for s in data["selections"]:
            if s["name"] not in names:
                names.append(s["name"])
    return names


def table(runs: dict) -> str:
    """Markdown: one row per selection and engine."""
    lines = [
        "| selection | engine | N | kept | m | c1 | dm_vs_all |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in selection_names(runs):
        for label, data in runs.items():
            by = {s["name"]: s for s in data["selections"]}
            if name not in by:
                continue
            s = by[name]
            lines.append(
                f"| {name} | {label} | {s.get('n')} | {s.get('fraction_kept', 1.0):.3f} | "
                f"{_fmt(s.get('m'), s.get('m_err'))} | {_fmt(s.get('c1'), s.get('c1_err'), 5)} | "
                f"{_fmt(s.get('dm_vs_all'), s.get('dm_vs_all_err'))} |"
            )
    return "\n".join(lines) + "\n"


def plot(runs: dict, path: Path) -> None:
    """m per selection, one colour per engine, with the |m| < 2e-3 band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = selection_names(runs)
    fig, (ax_m, ax_d) = plt.subplots(
        1, 2, figsize=(11, 1.6 + 0.55 * len(names)), sharey=True, layout="constrained"
    )
    for ax in (ax_m, ax_d):
        ax.axvspan(-2e-3, 2e-3, color="0.85", label="|m| < 2e-3")
        ax.axvline(0, color="k", lw=0.8)
        ax.grid(alpha=0.3)
    y0 = np.arange(len(names))[::-1]
    for k, (label, data) in enumerate(runs.items()):
        by = {s["name"]: s for s in data["selections"]}
        y = y0 - 0.15 * k
        for ax, key in ((ax_m, "m"), (ax_d, "dm_vs_all")):
            v = [
                by[n].get(key) if n in by and by[n].get(key) is not None else np.nan for n in names
            ]
            e = [by[n].get(f"{key}_err") or 0 if n in by else 0 for n in names]
            ax.errorbar(v, y, xerr=e, fmt="o", capsize=3, color=f"C{k}", label=label)
    ax_m.set_yticks(y0, names)
    ax_m.set_xlabel("m (±g pairs; 1-sigma bootstrap errors)")
    ax_d.set_xlabel("m - m(all), same engine (paired bootstrap errors)")
    ax_m.legend(fontsize=8, loc="best")
    fig.suptitle("Per-object metacalibration and metadetection on the same fields", fontsize=10)
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jsons", nargs="+", help="compare JSON files, one per engine")
    parser.add_argument("--out", required=True, help="stem of the .md table and .png figure")
    args = parser.parse_args(argv)
    runs = load(args.jsons)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.md").write_text(table(runs))
    plot(runs, Path(f"{out}.png"))
    print(table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
