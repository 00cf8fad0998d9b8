"""How much a selection made on the truth of a sheared field biases m, on true shapes.

The ``no_true_blends`` reference keeps galaxies whose footprint (where their
own noiseless, PSF-convolved image exceeds the isophote) touches no other's.
Those footprints are drawn on the sheared field, so the selection responds to
the field's shear, and a metacal version's shear does not move it: R cannot
correct it. This script measures that bias with no shape measurement at all:
on the ±g fields of ``scripts/science_run.py`` (``OUT/<config>/seed*/{plus,minus}``)
it takes every galaxy's true sheared shape (intrinsic shape, then the field's
shear) and forms m = (<g1>(+) - <g1>(-)) / 2g - 1 over

- ``all``: every galaxy;
- ``lonely``: the galaxies whose footprint overlaps no other (the selection
  metadetection's ``no_true_blends`` made before commit 3327feb, 2026-12-03);
- ``lonely_pairs``: those whose 90-degree rotated partner is lonely too
  (:func:`blendflag.truth.lonely_pairs`, what it makes now).

Errors: bootstrap over fields (``--bootstrap`` draws, seed ``--seed``), the same
draws for every selection, so ``dm_vs_all`` has the error of the difference.

Example::

    python scripts/truth_selection_bias.py science/density3x_deep
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def sheared_g1(e1, e2, g1, g2=0.0):
    """g1 of each intrinsic shape (reduced shear) after the lensing shear (g1, g2)."""
    import galsim

    lens = galsim.Shear(g1=g1, g2=g2)
    return np.array([(lens + galsim.Shear(g1=a, g2=b)).g1 for a, b in zip(e1, e2, strict=True)])


def field_sums(directory: Path, shear: float):
    """Per sign: (sum of true g1, count) for every selection of one ±g field."""
    from astropy.table import Table

    from blendflag.truth import lonely_pairs

    out = {}
    for sign, sub in ((1, "plus"), (-1, "minus")):
        truth = Table.read(directory / sub / "truth.fits")
        galaxy = np.asarray(truth["PAIR_ID"]) >= 0
        e = sheared_g1(truth["E1_INTRINSIC"], truth["E2_INTRINSIC"], sign * shear)
        lonely = np.asarray(truth["OVERLAPS_FIELD"]) < 0
        masks = {
            "all": galaxy,
            "lonely": galaxy & lonely,
            "lonely_pairs": galaxy & lonely_pairs(lonely, truth),
        }
        out[sign] = {name: (e[m].sum(), m.sum()) for name, m in masks.items()}
    return out


def m_of(sums, fields, name, shear):
    """m of one selection over the given field indices."""
    plus = np.sum([sums[k][1][name] for k in fields], axis=0)
    minus = np.sum([sums[k][-1][name] for k in fields], axis=0)
    return (plus[0] / plus[1] - minus[0] / minus[1]) / (2 * shear) - 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="a configuration's directory of seed*/{plus,minus} fields")
    parser.add_argument("--shear", type=float, default=0.02, help="|g1| of the fields [0.02]")
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    dirs = sorted(p.parent.parent for p in Path(args.root).glob("seed*/minus/truth.fits"))
    if not dirs:
        print(f"error: no ±g fields under {args.root}", file=sys.stderr)
        return 2
    try:
        sums = [field_sums(d, args.shear) for d in dirs]
    except (OSError, KeyError, ValueError) as exc:  # a missing or foreign truth table
        print(f"error: reading the fields' truth: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    draws = [rng.integers(0, len(sums), len(sums)) for _ in range(args.bootstrap)]
    every = range(len(sums))
    base = np.array([m_of(sums, b, "all", args.shear) for b in draws])
    print(f"{len(sums)} ±g fields under {args.root}; m on true sheared shapes")
    for name in ("all", "lonely", "lonely_pairs"):
        m = m_of(sums, every, name, args.shear)
        boot = np.array([m_of(sums, b, name, args.shear) for b in draws])
        dm = m - m_of(sums, every, "all", args.shear)
        print(
            f"{name:13s} m = {m:+.4f} ± {boot.std():.4f}   "
            f"dm_vs_all = {dm:+.4f} ± {(boot - base).std():.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
