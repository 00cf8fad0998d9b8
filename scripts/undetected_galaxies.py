"""What the galaxies below the detection limit do to m: one field with and without them.

Usage::

    python scripts/undetected_galaxies.py --dataset cfis_survey --seed 1 \
        --json docs/results/undetected_cfis_seed1.json

The same ±g pair of simulated fields (``simulated_inputs`` of the preset,
``--seed``) is measured twice by ``run_compare`` with the same seed: once as
drawn (galaxies from the counts down to the preset's faint limit) and once
with every galaxy fainter than ``--fainter-than`` (default: the preset's
5-sigma point-source depth plus 1 mag, where the detections end) left out
of the image after all were drawn (``galaxy.counts.drop_fainter_than``):
the same brighter galaxies, positions, pair ids, stars and pixel noise.
Both runs' sums of each selection (``all`` and the truth reference
``no_true_blends``) are put on one table of units (rotated pair x sign) by
:func:`blendflag.shear.paired.compare_statistics`, so the shift
m(with) - m(without) has a paired bootstrap error, on every kept object and
on the objects kept in both runs (:func:`shifts`). The JSON holds both m
per selection, the shifts and a ``provenance`` block.

``--change KEY=VALUE`` compares another setting of ``galaxy.counts``
instead (the "without" run gets it, nothing is dropped): e.g.
``--change smooth_below_depth=99`` measures what drawing the faint galaxies
without knots (the default shortcut) does to m.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag._runtime.quiet_imports import install_for_script

install_for_script()  # no TensorFlow start-up lines, as in blendflag-shear

#: The selections compared (``run_compare`` with no flagger and a truth).
SELECTIONS = ("all", "no_true_blends")


def run_both(preset, other, seed: int, workers: int, n_galaxies: int | None) -> dict:
    """``{"with": CompareResult, "without": CompareResult}`` on the same drawn field."""
    from blendflag.config import load_pipeline_config
    from blendflag.pipeline.compare import run_compare
    from blendflag.pipeline.field_input import simulated_inputs
    from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine

    pm = get_plugin_manager()
    config = load_pipeline_config(None)
    engine = select_engine(get_shear_engines(pm), config.shear.engine, paired=True)
    stamp_size = max(config.flag.stamp_size, config.shear.stamp_size)
    sizes = {} if n_galaxies is None else {"n_galaxies": n_galaxies}
    results = {}
    for label, dataset in (("with", preset), ("without", other)):
        inputs = simulated_inputs(
            dataset, seed=seed, workers=workers, stamp_size=stamp_size, **sizes
        )
        results[label] = run_compare(
            pm, config, inputs, [], engine, seed=seed, workers=workers,
            flag_original=False, masked_selection=False, psf_check="off",
        )  # fmt: skip
        summary = results[label].summary
        print(f"{label}: {summary.timings_s['total']:.1f} s", file=sys.stderr)
    return results


def common_units(parts_a: list, parts_b: list) -> np.ndarray:
    """The unit keys present in every image of both runs (the same objects kept in both)."""
    keys = [set(u.keys.tolist()) for u in (*parts_a, *parts_b)]
    return np.array(sorted(set.intersection(*keys)), dtype=np.int64)


def restricted(parts: list, keys: np.ndarray) -> list:
    """``parts`` (UnitSums per image) with only the units in ``keys``."""
    out = []
    for u in parts:
        keep = np.isin(u.keys, keys)
        out.append(dataclasses.replace(u, keys=u.keys[keep], sums=u.sums[keep]))
    return out


def paired_shift(parts_with: list, parts_without: list, result, seed: int, n_boot: int) -> dict:
    """m of both runs and m(with) - m(without) on one table of units (paired bootstrap)."""
    from blendflag.shear.paired import compare_statistics

    with_, without = compare_statistics(
        {"all": parts_with, "without": parts_without},
        result.metacal.step,
        result.summary.true_shear,
        np.random.default_rng(seed + 1),
        n_boot,
    )
    return {
        "m_with": with_["m"],
        "m_with_err": with_["m_err"],
        "m_without": without["m"],
        "m_without_err": without["m_err"],
        "n_with": with_["n"],
        "n_without": without["n"],
        # m(with) - m(without) = -(m(without) - m(with))
        "shift": None if without["dm_vs_all"] is None else -without["dm_vs_all"],
        "shift_err": without["dm_vs_all_err"],
    }


def shifts(results: dict, seed: int, n_bootstrap: int) -> dict:
    """Per selection: the shift on every kept object, and on the objects kept in both runs.

    ``all_objects`` compares each run's own selection (objects detected in
    one run only count in that run: their whole shear noise enters the
    difference); ``same_objects`` keeps the units present in both runs, so
    the shift is what the faint light does to the same brighter galaxies.
    """
    out = {}
    first, second = results["with"], results["without"]
    for name in SELECTIONS:
        a, b = first.unit_sums[name], second.unit_sums[name]
        keys = common_units(a, b)
        out[name] = {
            "all_objects": paired_shift(a, b, first, seed, n_bootstrap),
            "same_objects": paired_shift(
                restricted(a, keys), restricted(b, keys), first, seed, n_bootstrap
            ),
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cfis_survey", help="[default: cfis_survey]")
    parser.add_argument("--seed", type=int, default=1, help="[default: 1]")
    parser.add_argument(
        "--fainter-than", type=float, default=None,
        help="leave out galaxies fainter than this (mag) [default: the preset's depth + 1, "
        "where detections end]",
    )  # fmt: skip
    parser.add_argument(
        "--change", metavar="KEY=VALUE",
        help="compare with this galaxy.counts setting instead of dropping the faint",
    )  # fmt: skip
    parser.add_argument("--n-galaxies", type=int, default=None, help="[default: compare's]")
    parser.add_argument("--workers", type=int, default=None, help="[default: every core]")
    parser.add_argument("--bootstrap", type=int, default=None, help="[default: the config's]")
    parser.add_argument("--json", required=True, help="write the document here")
    args = parser.parse_args(argv)
    from blendflag.commands.common import write_json
    from blendflag.config import load_pipeline_config
    from blendflag.simulate.presets import load_dataset

    preset = load_dataset(args.dataset)
    if preset.galaxy.population != "counts":
        parser.error(f"{args.dataset}: needs a counts population (galaxy.population: counts)")
    limit = preset.galaxy.counts.depth + 1.0 if args.fainter_than is None else args.fainter_than
    key, value = "drop_fainter_than", limit
    if args.change:
        key, _, text = args.change.partition("=")
        if not hasattr(preset.galaxy.counts, key) or not text:
            parser.error(f"--change {args.change}: expected KEY=VALUE with a galaxy.counts key")
        value = float(text)
    workers = args.workers or os.cpu_count() or 1
    n_boot = args.bootstrap or load_pipeline_config(None).shear.n_bootstrap
    from blendflag.simulate.presets import with_counts

    other = with_counts(preset, **{key: value})
    results = run_both(preset, other, args.seed, workers, args.n_galaxies)
    document = {
        "provenance": provenance(),
        "dataset": preset.name,
        "seed": args.seed,
        "without": {key: value},
        "faint_limit": preset.galaxy.counts.faint_mag,
        "n_galaxies": args.n_galaxies,
        "selections": shifts(results, args.seed, n_boot),
        "timings_s": {k: round(r.summary.timings_s["total"], 1) for k, r in results.items()},
    }
    write_json(document, args.json)
    for name, rows in document["selections"].items():
        for objects, row in rows.items():
            print(
                f"{name:<15} {objects:<13} m(with) {row['m_with']:+.5f} +/- "
                f"{row['m_with_err']:.5f}  m(without) {row['m_without']:+.5f} +/- "
                f"{row['m_without_err']:.5f}  shift {row['shift']:+.5f} +/- "
                f"{row['shift_err']:.5f} (paired)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
