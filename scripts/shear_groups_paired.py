"""What the fields' shear groups do to per-object m: two directories of the same fields, paired.

Usage::

    python scripts/shear_groups_paired.py --a WORK/lsst_y10_2x_noise0.25 \\
        --b WORK/lsst_y10_2x_noise0.25_linkinf --fields 8 --json out.json

``--a`` and ``--b`` are configuration directories of ``scripts/literature_check.py``
holding the same ±g fields (same seeds: the same galaxies and pixel noise)
simulated two ways, e.g. with the default shear groups and with a uniform
shear (``--shear-group-link inf``), both measured by per-object metacal. For
every measured object with noshear S/N >= 10, and in the S/N bins of
``literature_check.S2N_EDGES``, the script gives m of each (g = sum e1 /
sum R11 per sign, no cut and no R_S) and the difference B - A with a
bootstrap over the fields drawn jointly for both, so the error is that of
the difference.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from blendflag._runtime.provenance import provenance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from literature_check import S2N_EDGES, bin_sums, field_catalogues, m_from_sums


def paired_bins(per_a: dict, per_b: dict, rng, n_boot: int) -> list[dict]:
    """m of A and B and B - A per S/N bin (every S/N >= 10 first), fields resampled jointly."""
    fields = sorted(set(per_a) & set(per_b))
    per_a = {k: per_a[k] for k in fields}
    per_b = {k: per_b[k] for k in fields}
    draws = [rng.integers(0, len(fields), len(fields)) for _ in range(n_boot)]
    bins = [(S2N_EDGES[0], np.inf), *itertools.pairwise(S2N_EDGES)]
    out = []
    for lo, hi in bins:
        a, b = bin_sums(per_a, lo, hi), bin_sums(per_b, lo, hi)
        diff = [m_from_sums(b[k].sum(axis=0)) - m_from_sums(a[k].sum(axis=0)) for k in draws]
        row = {"s2n_min": lo, "s2n_max": None if np.isinf(hi) else hi, "fields": len(fields)}
        for tag, sums in (("a", a), ("b", b)):
            row[f"n_{tag}"] = int(sums[:, :, 0].sum())
            row[f"m_{tag}"] = m_from_sums(sums.sum(axis=0))
            row[f"m_{tag}_err"] = float(np.std([m_from_sums(sums[k].sum(axis=0)) for k in draws]))
        row["b_minus_a"] = row["m_b"] - row["m_a"]
        row["b_minus_a_err"] = float(np.std(diff))
        out.append(row)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="configuration directory A")
    parser.add_argument("--b", required=True, help="configuration directory B (same seeds)")
    parser.add_argument("--fields", type=int, required=True, help="±g fields, seeds --seed...")
    parser.add_argument("--seed", type=int, default=100, help="first field seed [100]")
    parser.add_argument("--bootstrap", type=int, default=1000, help="[1000]")
    parser.add_argument("--json", help="write the table here")
    args = parser.parse_args(argv)
    seeds = range(args.seed, args.seed + args.fields)
    try:
        if args.fields < 1:
            raise ValueError("--fields must be a positive integer")
        per = [field_catalogues(Path(d), seeds) for d in (args.a, args.b)]
        if not per[0] or not per[1]:
            raise ValueError("no measured fields of those seeds in --a or --b")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = paired_bins(per[0], per[1], np.random.default_rng(args.seed), args.bootstrap)
    for r in rows:
        top = "inf" if r["s2n_max"] is None else f"{r['s2n_max']:g}"
        print(
            f"S/N {r['s2n_min']:g}-{top}: A {r['m_a']:+.4f} ± {r['m_a_err']:.4f} (n {r['n_a']}), "
            f"B {r['m_b']:+.4f} ± {r['m_b_err']:.4f} (n {r['n_b']}), "
            f"B - A {r['b_minus_a']:+.4f} ± {r['b_minus_a_err']:.4f}"
        )
    if args.json:
        from blendflag.commands.common import write_json

        write_json(
            {
                "provenance": provenance(),
                "a": args.a,
                "b": args.b,
                "bootstrap": {"unit": "a ±g field, A and B together", "draws": args.bootstrap},
                "what": "per-object m (no cut, no R_S) of every measured object by noshear S/N",
                "bins": rows,
            },
            args.json,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
