"""Two sets of network weights on the same labelled stamps, with paired errors.

Usage::

    blendflag-shear simulate --dataset cfis_survey --n 4000 --seed 7 --out held_cfis.fits
    python scripts/weights_ab.py --data held_cfis.fits --a OLD.npz --b NEW.npz \
        --json docs/results/vgg16_ab_cfis.json

Both weights (or one file twice with different flagger options,
``--a-options`` / ``--b-options``) flag every stamp of ``--data`` (a ``simulate`` file: the study's
pairs or survey field stamps) through the ``--method`` flagger, each at its own
stored threshold. Per set: binary accuracy, blend and non-blend recall, the
share of single galaxies called blends above 0.4" half-light radius (field
stamps), the count accuracy (weights with a count head) and, free of any
threshold, the area under the ROC curve (AUC). The differences
B - A have bootstrap errors over stamps, resampled jointly for both sets (the
same stamps in every draw), so the error is that of the difference itself.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag._runtime.quiet_imports import install_for_script

install_for_script()

#: Half-light radius (arcsec) above which single galaxies are "large".
LARGE_HLR = 0.4


def predictions(stamps, truth, dataset, method: str, weights: str, options=None) -> dict:
    """Per-stamp flags and counts of ``method`` with ``weights`` on ``read_stamps``' output.

    ``options`` are further flagger options (e.g. ``{"count_rule": "argmax"}``).
    """
    from blendflag.config import load_pipeline_config
    from blendflag.flagging.evaluation import truth_reference_noise
    from blendflag.flagging.flaggers import make_flaggers
    from blendflag.plugins import get_plugin_manager
    from blendflag.simulate.galaxies import label_reference_noise

    pm = get_plugin_manager()
    config = load_pipeline_config(None)
    overrides = {method: {"weights": weights, **(options or {})}}
    (flagger,) = make_flaggers(pm, [method], config, overrides)
    reference = label_reference_noise(dataset) if dataset else truth_reference_noise(truth)
    flagger.default_reference_noise(reference)
    result = flagger.flag_stamps(stamps)
    return {
        "flag": np.asarray(result.flag, bool),
        "probability": np.asarray(result.probability, float),
        "n_sources": result.n_sources,
        "truth": truth,
    }


def auc(label: np.ndarray, probability: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties at mean ranks); None without both classes."""
    from scipy.stats import rankdata

    n_blend = int(label.sum())
    n_other = len(label) - n_blend
    if n_blend == 0 or n_other == 0:
        return None
    ranks = rankdata(probability)
    return float((ranks[label].sum() - n_blend * (n_blend + 1) / 2) / (n_blend * n_other))


def paired_auc(a: dict, b: dict, draws) -> dict:
    """AUC of A and B (threshold-free) and B - A with its paired bootstrap error."""
    label = np.asarray(a["truth"]["LABEL"]) > 0
    row = {"a": auc(label, a["probability"]), "b": auc(label, b["probability"])}
    if row["a"] is None or row["b"] is None:
        return row
    diffs = [auc(label[i], b["probability"][i]) - auc(label[i], a["probability"][i]) for i in draws]
    row["b_minus_a"] = row["b"] - row["a"]
    row["b_minus_a_err"] = float(np.nanstd(np.asarray(diffs, dtype=float)))
    return row


def per_stamp_scores(run: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{metric: (numerator per stamp, denominator per stamp)}``: ratios of sums."""
    truth = run["truth"]
    label = np.asarray(truth["LABEL"]) > 0
    flag = run["flag"]
    one = np.ones(len(label))
    scores = {
        "accuracy": ((flag == label).astype(float), one),
        "blend_recall": ((flag & label).astype(float), label.astype(float)),
        "nonblend_recall": ((~flag & ~label).astype(float), (~label).astype(float)),
    }
    if "HLR1" in truth.colnames:
        large = ~label & (np.asarray(truth["HLR1"], float) > LARGE_HLR)
        scores["singles_called_blends_hlr_gt_0.4"] = ((flag & large).astype(float), large * 1.0)
    if run["n_sources"] is not None and "COUNT_CLASS" in truth.colnames:
        from blendflag.simulate.field_stamps import count_class

        hit = count_class(run["n_sources"]) == np.asarray(truth["COUNT_CLASS"])
        scores["count_accuracy"] = (hit.astype(float), one)
    return scores


def paired_table(a: dict, b: dict, n_boot: int, rng) -> dict:
    """Each metric of A and B and B - A with its paired bootstrap error (over stamps)."""
    sa, sb = per_stamp_scores(a), per_stamp_scores(b)
    n = len(a["flag"])
    draws = [rng.integers(0, n, n) for _ in range(n_boot)]
    out = {}
    for name in sorted(set(sa) | set(sb)):
        row = {}
        for tag, scores in (("a", sa), ("b", sb)):
            if name in scores:
                num, den = scores[name]
                row[tag] = float(num.sum() / den.sum()) if den.sum() else None
        if name in sa and name in sb and row["a"] is not None and row["b"] is not None:
            (na, da), (nb, db) = sa[name], sb[name]
            diffs = [nb[i].sum() / db[i].sum() - na[i].sum() / da[i].sum() for i in draws]
            row["b_minus_a"] = row["b"] - row["a"]
            row["b_minus_a_err"] = float(np.nanstd(diffs))
        out[name] = row
    out["auc"] = paired_auc(a, b, draws)
    return out


def parse_options(text: str | None) -> dict:
    """``"count_rule=argmax,views=2"`` -> ``{"count_rule": "argmax", "views": 2}`` (YAML values).

    Raises
    ------
    BlendflagError
        An item without ``=``.
    """
    import yaml

    from blendflag.errors import BlendflagError

    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BlendflagError(f"flagger options: {item!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a `simulate` stamps file")
    parser.add_argument("--a", required=True, help="weights A (e.g. the shipped file)")
    parser.add_argument("--b", required=True, help="weights B")
    parser.add_argument("--method", default="vgg16", help="flagger [default: vgg16]")
    parser.add_argument("--a-options", help="flagger options of A, KEY=VALUE,... (e.g. views=2)")
    parser.add_argument("--b-options", help="flagger options of B, KEY=VALUE,...")
    parser.add_argument("--bootstrap", type=int, default=1000, help="[default: 1000]")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed [default: 0]")
    parser.add_argument("--json", help="write the table here")
    args = parser.parse_args(argv)
    from blendflag.commands.common import write_json
    from blendflag.simulate.stamps import read_stamps

    options_a, options_b = parse_options(args.a_options), parse_options(args.b_options)
    stamps = read_stamps(args.data)  # once: the same stamps for both weights
    a = predictions(*stamps, args.method, args.a, options_a)
    b = predictions(*stamps, args.method, args.b, options_b)
    table = paired_table(a, b, args.bootstrap, np.random.default_rng(args.seed))
    for name, row in table.items():
        text = "  ".join(
            f"{k} {v:+.4f}" if k.startswith("b_minus") else f"{k} {v:.4f}"
            for k, v in row.items()
            if v is not None
        )
        print(f"{name:36s} {text}")
    if args.json:
        document = {
            "provenance": provenance(),
            "data": args.data,
            "n": len(a["flag"]),
            "method": args.method,
            "a": args.a,
            "b": args.b,
            "a_options": options_a,
            "b_options": options_b,
            "bootstrap": {"unit": "stamp", "draws": args.bootstrap, "seed": args.seed},
            "metrics": table,
        }
        write_json(document, args.json)
    return 0


if __name__ == "__main__":
    from blendflag.errors import BlendflagError

    try:
        sys.exit(main())
    except BlendflagError as exc:  # bad stamps file, weights file or method: one line
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
