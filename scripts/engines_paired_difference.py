"""Two per-object engines on the same ±g fields: m of each and their paired difference.

Usage::

    python scripts/engines_paired_difference.py --seed 1 \
        --json docs/results/engines_paired_seed1.json

Both engines (``--engines``, default ``metacal,ngmix``: the built-in GalSim
engine and ngmix's metacal) measure the same simulated ±g pair of fields (the
default field of ``blendflag-shear compare``: ``simulated_inputs`` with its
defaults and ``--seed``), each through ``run_compare`` with the same seed, so
with the same paired noise-correction fields. Flaggers and the masked
selection are left out: only the selection ``all`` is compared, and it does
not depend on them (its m is the one ``compare --engine NAME --seed S``
reports).

Each engine's ``all`` sums are put on one table of units (rotated pair x
sign) by :func:`blendflag.shear.paired.compare_statistics`, the first engine's
as ``all`` and every other's as ``all_<engine>``: one set of bootstrap draws
resamples the same units for all, so ``dm_vs_all`` of ``all_<engine>`` is
m(engine) - m(first engine) with the error of the difference on the same draws.
``--ngmix-psf`` sets ngmix's reconvolution PSF (``shear.options.ngmix.psf``):
its default ``azgauss``, or ``kspace``, the built-in engine's kernel, with
which the two engines are the same estimator and differ by round-off only.

The JSON holds each engine's m, its error, its seconds (``timings_s``) and
the differences, with a ``provenance`` block.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag._runtime.quiet_imports import install_for_script

install_for_script()  # no TensorFlow start-up lines, as in blendflag-shear


def run_engines(
    names: list[str],
    seed: int,
    workers: int,
    n_galaxies: int | None = None,
    ngmix_psf: str | None = None,
) -> dict:
    """Every engine's ``run_compare`` on the same simulated ±g inputs.

    Parameters
    ----------
    names : list of str
        Registered stamp-engine names; the first is the reference.
    seed : int
        Seed of the field, the correction fields and the bootstrap.
    workers : int
        Processes of the shear measurement.
    n_galaxies : int or None
        Galaxies per sign; None: the default field's.
    ngmix_psf : str or None
        ``shear.options.ngmix.psf``; None: the config's.

    Returns
    -------
    dict
        ``{name: blendflag.pipeline.compare.CompareResult}``.
    """
    from blendflag.config import load_pipeline_config
    from blendflag.pipeline.compare import run_compare
    from blendflag.pipeline.field_input import simulated_inputs
    from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine

    pm = get_plugin_manager()
    config = load_pipeline_config(None)
    if ngmix_psf is not None:
        config.shear.options = {**(config.shear.options or {}), "ngmix": {"psf": ngmix_psf}}
    engines = get_shear_engines(pm)
    stamp_size = max(config.flag.stamp_size, config.shear.stamp_size)
    sizes = {} if n_galaxies is None else {"n_galaxies": n_galaxies}
    inputs = simulated_inputs(seed=seed, workers=workers, stamp_size=stamp_size, **sizes)
    results = {}
    for name in names:
        results[name] = run_compare(
            pm,
            config,
            inputs,
            [],
            select_engine(engines, name, paired=True),
            seed=seed,
            workers=workers,
            flag_original=False,
            masked_selection=False,
            psf_check="off",
        )
        print(f"{name}: {results[name].summary.timings_s['total']:.1f} s", file=sys.stderr)
    return results


def paired_entries(results: dict, seed: int, n_bootstrap: int) -> dict:
    """``{selection: entry}`` of every engine's ``all`` on one table of units.

    The first engine's sums are ``all``, each other's ``all_<name>``; the
    bootstrap is seeded as ``run_compare``'s (``seed + 1``).
    """
    from blendflag.shear.paired import compare_statistics

    names = list(results)
    first = results[names[0]]
    selections = {
        ("all" if name == names[0] else f"all_{name}"): result.unit_sums["all"]
        for name, result in results.items()
    }
    entries = compare_statistics(
        selections,
        first.metacal.step,
        first.summary.true_shear,
        np.random.default_rng(seed + 1),
        n_bootstrap,
    )
    return {entry["name"]: entry for entry in entries}


def report(results: dict, entries: dict, seed: int, n_galaxies: int, ngmix_psf: str) -> dict:
    """The JSON document: per engine m, error, seconds; the paired differences."""
    names = list(results)
    rows = {}
    for name in names:
        entry = entries["all" if name == names[0] else f"all_{name}"]
        summary = results[name].summary
        rows[name] = {
            "m": entry["m"],
            "m_err": entry["m_err"],
            "c2": entry["c2"],
            "c2_err": entry["c2_err"],
            "R11": entry["R11"],
            "n": entry["n"],
            "n_units": entry["n_units"],
            "noise_fields": summary.noise_fields,
            "timings_s": {k: round(v, 2) for k, v in summary.timings_s.items()},
        }
    differences = {}
    for name in names[1:]:
        entry = entries[f"all_{name}"]
        dm, err = entry["dm_vs_all"], entry["dm_vs_all_err"]
        differences[f"{name} - {names[0]}"] = {
            "dm": dm,
            "dm_err": err,
            "n_sigma": None if not err else abs(dm) / err,
            "within_2_sigma": None if not err else bool(abs(dm) <= 2 * err),
        }
    return {
        "provenance": provenance(),
        "seed": seed,
        "n_galaxies": n_galaxies,
        "selection": "all",
        "ngmix_psf": ngmix_psf,
        "reference": names[0],
        "engines": rows,
        "differences": differences,
    }


def print_table(document: dict) -> None:
    """The engines' m and seconds, then the paired differences."""
    print(f"seed {document['seed']}, selection all")
    print(f"{'engine':<10} {'m':>22} {'R11':>8} {'n':>6} {'measure_shear s':>16} {'total s':>9}")
    for name, row in document["engines"].items():
        t = row["timings_s"]
        print(
            f"{name:<10} {row['m']:+.5f} +/- {row['m_err']:.5f} {row['R11']:8.4f} "
            f"{row['n']:6d} {t.get('measure_shear', float('nan')):16.1f} {t['total']:9.1f}"
        )
    for label, diff in document["differences"].items():
        print(
            f"{label}: dm = {diff['dm']:+.5f} +/- {diff['dm_err']:.5f} (paired), "
            f"{diff['n_sigma']:.2f} sigma"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="[default: 1, compare's]")
    parser.add_argument("--engines", default="metacal,ngmix", help="[default: metacal,ngmix]")
    parser.add_argument("--n-galaxies", type=int, default=None, help="[default: compare's]")
    parser.add_argument("--workers", type=int, default=None, help="[default: every core]")
    parser.add_argument("--bootstrap", type=int, default=None, help="[default: the config's]")
    parser.add_argument(
        "--ngmix-psf",
        default=None,
        help="ngmix's reconvolution PSF: azgauss, gauss, fitgauss or kspace [default: azgauss]",
    )
    parser.add_argument("--json", required=True, help="write the document here")
    args = parser.parse_args(argv)
    from blendflag.commands.common import write_json
    from blendflag.config import load_pipeline_config
    from blendflag.pipeline.field_input import DEFAULT_DATASET, default_n_galaxies
    from blendflag.simulate.presets import load_dataset

    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    if len(names) < 2:
        parser.error("--engines needs at least two names")
    workers = args.workers or os.cpu_count() or 1
    config = load_pipeline_config(None)
    n_boot = args.bootstrap or config.shear.n_bootstrap
    ngmix_options = (config.shear.options or {}).get("ngmix") or {}
    ngmix_psf = args.ngmix_psf or ngmix_options.get("psf", "azgauss")
    results = run_engines(names, args.seed, workers, args.n_galaxies, args.ngmix_psf)
    n_galaxies = args.n_galaxies or default_n_galaxies(load_dataset(DEFAULT_DATASET))
    entries = paired_entries(results, args.seed, n_boot)
    document = report(results, entries, args.seed, n_galaxies, ngmix_psf)
    write_json(document, args.json)
    print_table(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
