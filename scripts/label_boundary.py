"""Where the VGG16 flagger's errors sit relative to the blend label's boundary.

Usage::

    python scripts/label_boundary.py --dataset great3 --n 4000 --seed 9 \
        [--noise SIGMA] [--weights FILE] [--views N] [--json OUT.json]

The blend label (``blendflag.simulate.stamp_maker``) asks whether the two sources' *own*
footprints (each noiseless source above the isophote, 1 sigma of the preset's
reference noise) share a pixel. What an image shows, even without noise, is
the isophote of the *sum*: two sources whose own footprints miss each other can
still be joined by their summed light in the gap. This script redraws every
pair's noiseless sources (:func:`blendflag.simulate.stamp_maker.render_components`),
segments the noiseless sum at the isophote with sep (no deblending), and
counts the separated pairs whose summed isophote joins both centres. It then
reports the share of stamps the VGG16 flagger calls blends in each group:
blends by separation, singles, separated pairs joined or not joined in the
summed light.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag._runtime.quiet_imports import install_for_script

install_for_script()  # no TensorFlow start-up lines, as in blendflag-shear


def joined_in_sum(dataset, truth) -> np.ndarray:
    """True where a pair's noiseless summed light above ISOPHOTE joins both centres.

    Parameters
    ----------
    dataset : str
        The preset the stamps were simulated with.
    truth : astropy.table.Table
        The stamps' truth table (``simulate_stamps``).

    Returns
    -------
    numpy.ndarray
        bool per stamp; False for singles.
    """
    import sep

    from blendflag.simulate.stamp_maker import render_components

    out = np.zeros(len(truth), dtype=bool)
    for i in np.flatnonzero(np.asarray(truth["N_SOURCES"]) > 1):
        row = truth[i]
        central, companion = render_components(dataset, row)
        image = np.ascontiguousarray(central + companion, dtype=np.float64)
        _, seg = sep.extract(
            image,
            float(row["ISOPHOTE"]),
            minarea=1,
            filter_kernel=None,
            deblend_cont=1.0,
            clean=False,
            segmentation_map=True,
        )
        ny, nx = seg.shape
        (x1, y1), (x2, y2) = [
            (int(np.rint(row[f"X{k}"] - 1)), int(np.rint(row[f"Y{k}"] - 1))) for k in (1, 2)
        ]
        if 0 <= x2 < nx and 0 <= y2 < ny:
            out[i] = seg[y1, x1] > 0 and seg[y1, x1] == seg[y2, x2]
    return out


def groups(truth, joined) -> dict:
    """Boolean masks of the six groups of stamps reported, by name."""
    kind = np.char.strip(np.asarray(truth["KIND"]).astype(str))
    sep_px = np.asarray(truth["SEPARATION"])
    blend = kind == "blend"
    return {
        "blends closer than 3 px": blend & (sep_px < 3),
        "blends 3-5 px apart": blend & (sep_px >= 3) & (sep_px < 5),
        "blends 5 px or more apart": blend & (sep_px >= 5),
        "singles": kind == "single",
        "separated pairs joined in the summed light": (kind == "separated") & joined,
        "separated pairs not joined": (kind == "separated") & ~joined,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="great3")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--noise", type=float, default=None, help="ADU [default: preset's]")
    parser.add_argument("--weights", default=None, help="VGG16 weights [default: shipped]")
    parser.add_argument(
        "--views",
        type=int,
        choices=(1, 2, 4, 8),
        default=1,
        help="views averaged per stamp (the flagger option) [default: 1]",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from blendflag.simulate.presets import load_dataset
    from blendflag.simulate.stamps import simulate_stamps
    from blendflag_plugins.vgg16 import VGG16Flagger

    stamps, truth = simulate_stamps(args.dataset, args.n, seed=args.seed, noise=args.noise)
    joined = joined_in_sum(args.dataset, truth)
    options = {"reference_noise": load_dataset(args.dataset).default_noise, "views": args.views}
    if args.weights:
        options["weights"] = args.weights
    flagger = VGG16Flagger(options)
    flag = flagger.flag_stamps(stamps).flag
    label = np.asarray(truth["LABEL"]) == 1
    rows = []
    print(
        f"{args.dataset}, n = {args.n}, seed {args.seed}, noise "
        f"{args.noise or load_dataset(args.dataset).default_noise} ADU, VGG16 threshold "
        f"{flagger.threshold:.2f}, {args.views} view(s)\n"
    )
    print("| stamps | label | n | share of the stamps | called blends by VGG16 |")
    print("|---|---|---|---|---|")
    for name, sel in groups(truth, joined).items():
        is_blend = bool(label[sel].all()) if sel.any() else False
        row = {
            "group": name,
            "label": "blend" if is_blend else "not blend",
            "n": int(sel.sum()),
            "share": float(sel.mean()),
            "called_blend": float(flag[sel].mean()) if sel.any() else None,
        }
        rows.append(row)
        called = "-" if row["called_blend"] is None else f"{row['called_blend']:.3f}"
        print(f"| {name} | {row['label']} | {row['n']} | {row['share']:.3f} | {called} |")
    result = {
        "dataset": args.dataset,
        "n": args.n,
        "seed": args.seed,
        "noise": args.noise,
        "threshold": flagger.threshold,
        "views": args.views,
        "groups": rows,
        "blend_recall": float(flag[label].mean()),
        "nonblend_recall": float((~flag[~label]).mean()),
        "provenance": provenance(),
    }
    print(
        f"\nblend recall {result['blend_recall']:.3f}, non-blend recall "
        f"{result['nonblend_recall']:.3f}"
    )
    if args.json:
        from blendflag.commands.common import write_json

        write_json(result, args.json)
    return 0


if __name__ == "__main__":
    from blendflag.errors import BlendflagError

    try:
        sys.exit(main())
    except BlendflagError as exc:  # bad weights file, dataset, noise: one line
        print(f"label_boundary: {exc}", file=sys.stderr)
        sys.exit(2)
