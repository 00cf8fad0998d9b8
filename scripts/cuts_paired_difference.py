"""What the shear catalogue's cuts do to m: one field measured with and without them, paired.

Usage::

    python scripts/cuts_paired_difference.py --dataset cfis --seed 1 \
        --s2n-min 150 --t-ratio-min 2 --json docs/results/cuts_study_seed1.json

The ±g pair of simulated fields of ``--dataset`` (``compare``'s default
field for that preset, ``--seed``) is measured twice by ``run_compare``:
with the packaged ``shear.cuts`` (S/N >= 10, T/T_PSF >= 1.2, each metacal
version on its own measurement, so R_S covers them) and with both cuts off.
Both runs' sums of ``all`` and ``no_true_blends`` go on one table of units
(rotated pair x sign, :func:`blendflag.shear.paired.compare_statistics`):
the shift m(cuts) - m(no cuts) has a paired bootstrap error. On the
study's deep field (``--dataset cfis``, S/N ~200) the packaged cuts remove
nothing; ``--s2n-min`` and ``--t-ratio-min`` set cuts that bite there,
where the paired error is small enough to test the response. A cut whose
response R_S measures is unbiased, so the shift is consistent with zero; a
cut left out of R_S (made on the noshear values only) would move m by about
R_S / R. The JSON holds both m, the shifts, the cuts' R11_S and a
``provenance`` block.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag._runtime.quiet_imports import install_for_script

install_for_script()

SELECTIONS = ("all", "no_true_blends")


def run_both(dataset: str, seed: int, workers: int, cuts=None) -> dict:
    """``{"cuts": CompareResult, "no_cuts": CompareResult}`` on the same ±g fields.

    ``cuts`` (a :class:`blendflag.config.ShearCuts`) replaces the packaged ones.
    """
    from blendflag.config import ShearCuts, load_pipeline_config
    from blendflag.pipeline.compare import run_compare
    from blendflag.pipeline.field_input import simulated_inputs
    from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine

    pm = get_plugin_manager()
    config = load_pipeline_config(None)
    if cuts is not None:
        config = dataclasses.replace(config, shear=dataclasses.replace(config.shear, cuts=cuts))
    off = dataclasses.replace(
        config, shear=dataclasses.replace(config.shear, cuts=ShearCuts(0.0, 0.0))
    )
    engine = select_engine(get_shear_engines(pm), config.shear.engine, paired=True)
    stamp = max(config.flag.stamp_size, config.shear.stamp_size)
    inputs = simulated_inputs(dataset, seed=seed, workers=workers, stamp_size=stamp)
    options = {"flag_original": False, "masked_selection": False, "psf_check": "off"}
    return {
        label: run_compare(pm, cfg, inputs, [], engine, seed=seed, workers=workers, **options)
        for label, cfg in (("cuts", config), ("no_cuts", off))
    }


def shifts(results: dict, seed: int, n_boot: int) -> dict:
    """Per selection: m with and without the cuts, the paired shift, R11_S of the cut."""
    from blendflag.shear.paired import compare_statistics

    out = {}
    first = results["cuts"]
    for name in SELECTIONS:
        cut, plain = compare_statistics(
            {"all": first.unit_sums[name], "no_cuts": results["no_cuts"].unit_sums[name]},
            first.metacal.step,
            first.summary.true_shear,
            np.random.default_rng(seed + 1),
            n_boot,
        )
        out[name] = {
            "m_cuts": cut["m"],
            "m_cuts_err": cut["m_err"],
            "m_no_cuts": plain["m"],
            "m_no_cuts_err": plain["m_err"],
            "n_cuts": cut["n"],
            "n_no_cuts": plain["n"],
            "R11": cut["R11"],
            "R11_S": cut["R11_S"],
            "shift": None if plain["dm_vs_all"] is None else -plain["dm_vs_all"],
            "shift_err": plain["dm_vs_all_err"],
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cfis_survey", help="[default: cfis_survey]")
    parser.add_argument("--seed", type=int, default=1, help="[default: 1]")
    parser.add_argument("--s2n-min", type=float, help="[default: the config's shear.cuts]")
    parser.add_argument("--t-ratio-min", type=float, help="[default: the config's shear.cuts]")
    parser.add_argument("--workers", type=int, default=None, help="[default: every core]")
    parser.add_argument("--bootstrap", type=int, default=None, help="[default: the config's]")
    parser.add_argument("--json", required=True, help="write the document here")
    args = parser.parse_args(argv)
    from blendflag.commands.common import write_json
    from blendflag.config import ShearCuts, load_pipeline_config

    workers = args.workers or os.cpu_count() or 1
    packaged = load_pipeline_config(None).shear
    n_boot = args.bootstrap or packaged.n_bootstrap
    cuts = ShearCuts(
        packaged.cuts.s2n_min if args.s2n_min is None else args.s2n_min,
        packaged.cuts.t_ratio_min if args.t_ratio_min is None else args.t_ratio_min,
    )
    results = run_both(args.dataset, args.seed, workers, cuts)
    document = {
        "provenance": provenance(),
        "dataset": args.dataset,
        "seed": args.seed,
        "shear_cuts": results["cuts"].summary.shear_cuts,
        "selections": shifts(results, args.seed, n_boot),
    }
    write_json(document, args.json)
    for name, row in document["selections"].items():
        print(
            f"{name:<15} m(cuts) {row['m_cuts']:+.5f} +/- {row['m_cuts_err']:.5f} "
            f"(n {row['n_cuts']}, R11_S {row['R11_S']:+.4f})  m(no cuts) "
            f"{row['m_no_cuts']:+.5f} +/- {row['m_no_cuts_err']:.5f} (n {row['n_no_cuts']})  "
            f"shift {row['shift']:+.5f} +/- {row['shift_err']:.5f} (paired)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
