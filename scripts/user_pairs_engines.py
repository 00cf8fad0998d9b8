"""Per-object metacal against metadetection on the same ±g pairs: the paired difference.

Usage::

    python scripts/user_pairs_engines.py /tmp/pairs120 --seed 1 \
        --json docs/results/user_pairs_engines_d120_seed1.json

Reads the stored per-tile sums that ``scripts/user_pairs.py`` left in
``WORK/tiles_metacal`` and ``WORK/tiles_metadetect`` (the same images measured
by both engines), sums each image pair's units into one, and bootstraps the
two engines' ``all`` on one table of image pairs with one set of draws, so
the error of ``m(metadetect) - m(metacal)`` is that of the difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from blendflag._runtime.provenance import provenance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from user_pairs import SHEAR, pair_sums  # the sibling script's per-pair sums


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", help="scripts/user_pairs.py's --work directory")
    parser.add_argument("--seed", type=int, default=1, help="bootstrap seed - 1 [1]")
    parser.add_argument("--bootstrap", type=int, default=500, help="draws [500]")
    parser.add_argument("--json", required=True, help="write the document here")
    args = parser.parse_args(argv)
    from blendflag.commands.common import write_json
    from blendflag.shear.paired import compare_statistics

    work = Path(args.work)
    selections = {
        "all": pair_sums(work / "tiles_metacal", "all"),
        "all_metadetect": pair_sums(work / "tiles_metadetect", "all"),
    }
    rng = np.random.default_rng(args.seed + 1)
    entries = {
        e["name"]: e
        for e in compare_statistics(selections, 0.01, (SHEAR, 0.0), rng, args.bootstrap)
    }
    ours, theirs = entries["all"], entries["all_metadetect"]
    document = {
        "provenance": provenance(),
        "work": str(work),
        "unit": "one image pair (+g and -g), every cell of both images",
        "draws": args.bootstrap,
        "metacal": {k: ours[k] for k in ("m", "m_err", "R11", "n")},
        "metadetect": {k: theirs[k] for k in ("m", "m_err", "R11", "n")},
        "metadetect_minus_metacal": {"dm": theirs["dm_vs_all"], "dm_err": theirs["dm_vs_all_err"]},
    }
    write_json(document, args.json)
    print(
        f"metadetect - metacal: {theirs['dm_vs_all']:+.4f} +/- {theirs['dm_vs_all_err']:.4f}; "
        f"R11 {ours['R11']:.3f} (metacal) {theirs['R11']:.3f} (metadetect)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
