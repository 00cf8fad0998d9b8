"""The VGG16 cut chosen for the shear: m of ``no_vgg16_blends`` against the threshold.

Usage::

    python scripts/vgg16_threshold_scan.py --dataset cfis_survey --seeds 101-110 \
        --workdir scan_cfis --json docs/results/vgg16_threshold_cfis.json \
        --plot docs/vgg16_threshold_cfis.png

Each seed's ±g pair of ``compare``'s default field of ``--dataset`` (training
fields: keep these seeds apart from the evaluation seeds, 1 and 2) goes once
through ``run_compare`` with the ``vgg16`` flagger; its blend probabilities on
every metacal version's images are kept (the flagging plugin's
``metacal_probabilities``), and for each threshold of ``--thresholds`` the
selection ``no_vgg16_blends`` is cut again from them and measured, with its
selection response, on the same objects. Every seed's per-unit sums are saved
in ``--workdir`` (one file per seed, written atomically), so an interrupted
run resumes where it stopped. The fields' units are joined on one table
(field x cell x sign), and every threshold's m, its paired difference to the
truth's ``no_true_blends`` and to ``all``, and the fraction of ``all``'s
objects kept have bootstrap errors over those units.

The chosen threshold is the one whose ``dm_vs_truth`` is smallest in size
among those keeping at least ``--min-kept`` of ``all``'s objects; every row
also has its m minus m at the weights' own threshold (scanned too) with the
paired error, and the JSON says how many of those errors the chosen one
stands from it (``chosen_sigma_from_weights_threshold``): below 2, the scan
cannot tell the two apart and the weights' threshold stays.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag._runtime.quiet_imports import install_for_script

install_for_script()

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
REFERENCES = ("all", "no_true_blends")
FLAGGER = "vgg16"


def seed_list(text: str) -> list[int]:
    """``"101-110"`` or ``"1,2,5"`` as a list of seeds."""
    from blendflag.errors import BlendflagError

    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-"))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BlendflagError(f"--seeds takes 'A-B' or 'A,B,C', got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise BlendflagError(f"--seeds needs non-negative seeds, got {text!r}")
    return seeds


def threshold_name(t: float) -> str:
    return f"t{t:.3f}"


def run_seed(dataset: str, seed: int, thresholds, weights, workers: int) -> dict:
    """Per selection name, the (+g, -g) unit sums of one seed's ±g fields."""
    from blendflag.config import load_pipeline_config
    from blendflag.flagging.flaggers import make_flaggers
    from blendflag.pipeline.compare import run_compare
    from blendflag.pipeline.field_input import simulated_inputs
    from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine
    from blendflag.shear.selections import measure_selections, selection_name

    pm = get_plugin_manager()
    config = load_pipeline_config(None)
    engine = select_engine(get_shear_engines(pm), config.shear.engine, paired=True)
    overrides = {FLAGGER: {"weights": str(weights)}} if weights else None
    (flagger,) = make_flaggers(pm, [FLAGGER], config, overrides)
    thresholds = sorted({*thresholds, round(float(flagger.threshold), 3)})
    stamp = max(config.flag.stamp_size, config.shear.stamp_size)
    inputs = simulated_inputs(dataset, seed=seed, workers=workers, stamp_size=stamp)
    result = run_compare(
        pm,
        config,
        inputs,
        [flagger],
        engine,
        seed=seed,
        workers=workers,
        flag_original=False,
        masked_selection=False,
        psf_check="off",
        n_bootstrap=0,
    )
    sums = {name: [c.results["unit_sums"][name] for c in result.contexts] for name in REFERENCES}
    for t in thresholds:
        for context in result.contexts:
            probs = context.results["metacal_probabilities"][FLAGGER]
            context.results["metacal_flags"] = {FLAGGER: {v: p >= t for v, p in probs.items()}}
            context.n_bootstrap = 0
            measure_selections(context)
        sums[threshold_name(t)] = [
            c.results["unit_sums"][selection_name(FLAGGER)] for c in result.contexts
        ]
    return {
        "sums": sums,
        "step": result.metacal.step,
        "true_shear": result.summary.true_shear,
        "threshold": flagger.threshold,
    }


def save_seed(path: Path, run: dict) -> None:
    """Write one seed's sums (``.npz``) atomically."""
    from blendflag.io.atomic import atomic_output

    arrays = {"step": run["step"], "true_shear": np.asarray(run["true_shear"])}
    arrays["weights_threshold"] = run["threshold"]
    for name, parts in run["sums"].items():
        for k, part in enumerate(parts):
            arrays[f"{name}|{k}|keys"] = part.keys
            arrays[f"{name}|{k}|sums"] = part.sums
            arrays[f"{name}|{k}|meta"] = np.array([part.n_good, part.sign])
            arrays[f"{name}|{k}|layout"] = np.array(part.layout)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_seed(path: Path, offset: int) -> dict:
    """One seed's sums, unit keys moved by ``offset`` (fields on one table)."""
    from blendflag.shear.paired import UnitSums

    sums: dict = {}
    with np.load(path) as data:
        for key in data.files:
            if not key.endswith("|keys"):
                continue
            name, k, _ = key.split("|")
            n_good, sign = (int(v) for v in data[f"{name}|{k}|meta"])
            part = UnitSums(
                data[key] + offset,
                data[f"{name}|{k}|sums"],
                n_good,
                sign,
                str(data[f"{name}|{k}|layout"]),
            )
            sums.setdefault(name, []).append(part)
        step = float(data["step"])
        true_shear = tuple(float(v) for v in data["true_shear"])
        weights_threshold = float(data["weights_threshold"])
    return {"sums": sums, "step": step, "true_shear": true_shear, "threshold": weights_threshold}


def scanned_thresholds(runs: list[dict]) -> list[float]:
    """The thresholds every seed was measured at (from the saved selection names)."""
    common = set.intersection(*({n for n in run["sums"] if n.startswith("t")} for run in runs))
    return sorted(float(n[1:]) for n in common)


def curve(runs: list[dict], thresholds, n_boot: int, seed: int, reference=None) -> list[dict]:
    """The compare_statistics entry of every reference and threshold, on one table of units.

    With ``reference`` (a threshold), that threshold's selection takes the
    place of the truth reference, so each entry's ``dm_vs_truth`` is its m
    minus m at ``reference``, with the paired error of that difference (the
    same bootstrap draws: the same ``seed``).
    """
    from blendflag.shear.paired import compare_statistics

    names = {name: name for name in REFERENCES}
    names.update({threshold_name(t): threshold_name(t) for t in thresholds})
    if reference is not None:
        names = {name: name for name in names if name != "no_true_blends"}
        names["no_true_blends"] = threshold_name(reference)
    joined = {key: [p for run in runs for p in run["sums"][name]] for key, name in names.items()}
    return compare_statistics(
        joined, runs[0]["step"], runs[0]["true_shear"], np.random.default_rng(seed), n_boot
    )


def against_weights_threshold(runs, thresholds, n_boot: int, seed: int) -> dict:
    """Per threshold, m minus m at the weights' own threshold, with its paired error."""
    own = round(runs[0]["threshold"], 3)
    entries = curve(runs, thresholds, n_boot, seed, reference=own)
    return {
        e["name"]: {"dm": e["dm_vs_truth"], "dm_err": e["dm_vs_truth_err"]}
        for e in entries
        if e["name"].startswith("t")
    }


def choose(entries: list[dict], thresholds, min_kept: float, versus_own=None) -> dict:
    """The threshold with the smallest |dm_vs_truth| among those keeping >= ``min_kept`` of all.

    ``versus_own`` (from :func:`against_weights_threshold`) adds to each row
    its m minus m at the weights' own threshold, with the paired error.
    """
    by_name = {e["name"]: e for e in entries}
    n_all = by_name["all"]["n"]
    rows = []
    for t in thresholds:
        e = by_name[threshold_name(t)]
        rows.append(
            {
                "threshold": t,
                "kept": e["n"] / n_all if n_all else None,
                "m": e["m"],
                "m_err": e["m_err"],
                "dm_vs_truth": e["dm_vs_truth"],
                "dm_vs_truth_err": e["dm_vs_truth_err"],
                "dm_vs_all": e["dm_vs_all"],
                "dm_vs_all_err": e["dm_vs_all_err"],
                "R11_S": e["R11_S"],
                **_versus_own(versus_own, threshold_name(t)),
            }
        )
    allowed = [r for r in rows if r["kept"] is not None and r["kept"] >= min_kept]
    allowed = [r for r in allowed if r["dm_vs_truth"] is not None]
    best = min(allowed, key=lambda r: abs(r["dm_vs_truth"])) if allowed else None
    return {"rows": rows, "chosen": best}


def _versus_own(versus_own, name: str) -> dict:
    if not versus_own or name not in versus_own:
        return {}
    row = versus_own[name]
    return {"dm_vs_weights_threshold": row["dm"], "dm_vs_weights_threshold_err": row["dm_err"]}


def significance(chosen: dict | None) -> float | None:
    """How many paired errors the chosen threshold's m stands from the weights' own threshold's."""
    if not chosen or not chosen.get("dm_vs_weights_threshold_err"):
        return None
    return abs(chosen["dm_vs_weights_threshold"]) / chosen["dm_vs_weights_threshold_err"]


def plot(document: dict, path: str) -> None:
    """dm_vs_truth and the fraction kept against the threshold, with errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = document["curve"]
    t = [r["threshold"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    ax1.errorbar(
        t,
        [r["dm_vs_truth"] for r in rows],
        yerr=[r["dm_vs_truth_err"] for r in rows],
        fmt="o-",
        label="no_vgg16_blends - no_true_blends",
    )
    refs = document["references"]
    d_all = refs["all"]["dm_vs_truth"]
    ax1.axhspan(
        d_all - refs["all"]["dm_vs_truth_err"],
        d_all + refs["all"]["dm_vs_truth_err"],
        color="0.85",
        label="all - no_true_blends",
    )
    ax1.axhline(0, color="k", lw=0.5)
    chosen = document["chosen"]
    if chosen:
        sigma = document.get("chosen_sigma_from_weights_threshold")
        label = "smallest |dm|" + (
            f", {sigma:.1f} paired errors from the weights'" if sigma else ""
        )
        ax1.axvline(chosen["threshold"], color="C3", ls="--", label=label)
        ax2.axvline(chosen["threshold"], color="C3", ls="--")
    own = document["weights_threshold"]
    ax1.axvline(own, color="C2", ls=":", label=f"weights' own threshold ({own:.2f})")
    ax2.axvline(own, color="C2", ls=":")
    ax1.set_ylabel("dm vs truth reference")
    ax1.legend(fontsize=8)
    ax2.plot(t, [r["kept"] for r in rows], "o-")
    ax2.axhline(document["min_kept"], color="0.5", ls=":")
    ax2.set_ylabel("fraction of all kept")
    ax2.set_xlabel("VGG16 threshold on P_BLEND")
    fig.suptitle(
        f"{document['dataset']}, seeds {document['seeds'][0]}-{document['seeds'][-1]}: "
        "errors are paired bootstraps over field cells",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cfis_survey", help="[default: cfis_survey]")
    parser.add_argument("--seeds", default="101-104", help="training seeds [default: 101-104]")
    parser.add_argument("--weights", help="VGG16 weights [default: the shipped file]")
    parser.add_argument("--workdir", required=True, help="per-seed sums (resumable)")
    parser.add_argument("--min-kept", type=float, default=0.7, help="[default: 0.7]")
    parser.add_argument("--workers", type=int, default=None, help="[default: every core]")
    parser.add_argument("--bootstrap", type=int, default=500, help="[default: 500]")
    parser.add_argument("--json", required=True)
    parser.add_argument("--plot")
    args = parser.parse_args(argv)
    from blendflag.commands.common import write_json

    workers = args.workers or os.cpu_count() or 1
    seeds = seed_list(args.seeds)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    runs = []
    for index, seed in enumerate(seeds):
        path = workdir / f"{args.dataset}_seed{seed}.npz"
        if not path.exists():
            save_seed(path, run_seed(args.dataset, seed, THRESHOLDS, args.weights, workers))
            print(f"seed {seed} done", flush=True)
        runs.append(load_seed(path, index << 40))
    thresholds = scanned_thresholds(runs)
    entries = curve(runs, thresholds, args.bootstrap, seeds[0])
    versus_own = against_weights_threshold(runs, thresholds, args.bootstrap, seeds[0])
    choice = choose(entries, thresholds, args.min_kept, versus_own)
    by_name = {e["name"]: e for e in entries}
    document = {
        "provenance": provenance(),
        "dataset": args.dataset,
        "seeds": seeds,
        "weights": args.weights or "shipped",
        "weights_threshold": runs[0]["threshold"],
        "min_kept": args.min_kept,
        "references": {name: by_name[name] for name in REFERENCES},
        "curve": choice["rows"],
        "chosen": choice["chosen"],
        "chosen_sigma_from_weights_threshold": significance(choice["chosen"]),
        "bootstrap": {
            "unit": "field x 100-px cell, +g and -g cells paired",
            "draws": args.bootstrap,
        },
    }
    write_json(document, args.json)
    if args.plot:
        plot(document, args.plot)
    for row in choice["rows"]:
        print(
            f"t={row['threshold']:.2f} kept {row['kept']:.3f} m {row['m']:+.4f} "
            f"+/- {row['m_err']:.4f} dm_vs_truth {row['dm_vs_truth']:+.4f} "
            f"+/- {row['dm_vs_truth_err']:.4f}"
        )
    ref = by_name["all"]
    print(f"all: m {ref['m']:+.4f} +/- {ref['m_err']:.4f}, dm_vs_truth {ref['dm_vs_truth']:+.4f}")
    print(f"chosen: {choice['chosen']}")
    return 0


if __name__ == "__main__":
    from blendflag.errors import BlendflagError

    try:
        sys.exit(main())
    except BlendflagError as exc:  # bad seeds, dataset or weights file: one line
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
