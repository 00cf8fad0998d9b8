"""m of ``all``, of ``all`` without the one-shear detections and of ``common``, per measurement.

Usage::

    python scripts/plot_detection_splits.py \\
        --split "no deblending=docs/results/detection_split_lsst_y10_detect_no_deblend.json" \\
        --split "default=docs/results/detection_split_lsst_y10.json" \\
        --literature=-0.035,0.002 --out docs/results/detection_settings_lsst_y10.png

Each ``--split LABEL=PATH`` is a ``scripts/detection_split.py`` JSON (the
same fields measured with other settings, or other fields); the figure puts
them side by side in the order given, with their 1-sigma bootstrap errors
over fields, and the literature's m (``--literature=M,ERR``) as a band.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

#: The splits drawn, with their marker and label.
SERIES = (
    ("all", "o", "all (every measured object)"),
    ("all_but_one_sign", "s", "all without the one-shear detections"),
    ("common", "^", "common (measured under both shears)"),
)


def read_split(path: str) -> dict:
    """``{split: (m, m_err)}`` of one ``detection_split.py`` JSON."""
    document = json.loads(Path(path).read_text())
    return {row["split"]: (row["m"], row["m_err"]) for row in document["splits"]}


def parse_split(text: str) -> tuple[str, str]:
    """``LABEL=PATH`` -> ``(label, path)``."""
    label, sep, path = text.partition("=")
    if not (sep and label and path):
        raise ValueError(f"--split wants LABEL=PATH, not {text!r}")
    return label, path


def plot(splits: list[tuple[str, dict]], out: Path, literature=None) -> None:
    """The figure: one column per measurement, one marker per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from blendflag.plots import save_figure

    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(splits), 4.2))
    for k, (name, marker, label) in enumerate(SERIES):
        xs = [i + (k - 1) * 0.15 for i in range(len(splits))]
        values = [rows[name] for _, rows in splits]
        m = [float("nan") if v[0] is None else v[0] for v in values]
        err = [float("nan") if v[1] is None else v[1] for v in values]
        ax.errorbar(xs, m, yerr=err, fmt=marker, capsize=3, label=label)
    if literature is not None:
        m, err = literature
        ax.axhspan(m - err, m + err, color="0.8", label="Sheldon et al. 2020, standard metacal")
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xticks(range(len(splits)), [textwrap.fill(label, 18) for label, _ in splits])
    ax.set_ylabel("m (per-object metacal, cuts and R_S)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(fig, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", action="append", required=True, help="LABEL=PATH, repeated")
    parser.add_argument("--literature", default=None, help="M,ERR: a band at the literature's m")
    parser.add_argument("--out", required=True, help="the PNG")
    args = parser.parse_args(argv)
    try:
        literature = None
        if args.literature is not None:
            m, err = (float(v) for v in args.literature.split(","))
            literature = (m, err)
        splits = [(label, read_split(path)) for label, path in map(parse_split, args.split)]
        if not Path(args.out).parent.is_dir():
            raise ValueError(f"no directory for --out {args.out}")
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plot(splits, Path(args.out), literature)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
