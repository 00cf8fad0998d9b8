"""Which units carry the variance of a ±g ``compare``: per-unit influence on m.

Usage::

    python scripts/paired_variance.py --n-galaxies 6000 --seed 1 [--config pipeline.yaml] \
        [--flaggers sextractor] [--top 10] [--json OUT.json]

Runs `compare`'s default simulated field (the +g and -g images, the config's
engine) in-process and, for every selection, linearises
m = (g1(+) - g1(-)) / 2g - 1 about its value: the influence of a unit (a
rotated pair, both signs) is
``[(S_e(+) - g1(+) S_R(+)) / R(+) - (S_e(-) - g1(-) S_R(-)) / R(-)] / 2g``
with ``S_e`` its sum of e1 and ``S_R`` its sum of the response terms, so that
the sum of squared influences is the (linearised) variance of m. It prints
that sigma, the share of the variance carried by the top 1% and 3% of units,
and sigma without the top 1%; then the top units of ``all`` with their
detections in each image (position, SExtractor FLAGS, e1, S/N, metacal
flags): what makes a unit an outlier.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag._runtime.quiet_imports import install_for_script

install_for_script()  # no TensorFlow start-up lines, as in blendflag-shear


def influences(sums_plus, sums_minus, g: float, step: float):
    """Unit keys and each unit's influence on m (``stamps`` sum layout)."""
    (kp, sp), (km, sm) = sums_plus, sums_minus
    keys = np.union1d(kp, km)
    P = np.zeros((len(keys), sp.shape[1]))
    M = np.zeros_like(P)
    P[np.searchsorted(keys, kp)] = sp
    M[np.searchsorted(keys, km)] = sm

    def one(S):
        resp = (S[:, 3] - S[:, 4]) / (2 * step)  # per-unit sum of R11
        R = resp.sum()
        g1 = S[:, 1].sum() / R
        return (S[:, 1] - g1 * resp) / R, g1

    ip, gp = one(P)
    im, gm = one(M)
    return keys, (ip - im) / (2 * g), (gp - gm) / (2 * g) - 1, P, M


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-galaxies", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", help="pipeline config (YAML)")
    parser.add_argument("--flaggers", default="sextractor")
    parser.add_argument("--top", type=int, default=10, help="outlier units of `all` to list")
    parser.add_argument("--json", help="write the per-selection summary here")
    args = parser.parse_args(argv)

    from blendflag.commands.common import load_config
    from blendflag.flagging.flaggers import make_flaggers
    from blendflag.pipeline.compare import run_compare
    from blendflag.pipeline.field_input import simulated_inputs
    from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine

    pm = get_plugin_manager()
    config = load_config(args)
    engine = select_engine(get_shear_engines(pm), config.shear.engine, paired=True)
    flaggers = make_flaggers(pm, args.flaggers.split(","), config, {})
    g = 0.02
    data = simulated_inputs("cfis", args.n_galaxies, (g, 0.0), args.seed, 2.0, stamp_size=51)
    result = run_compare(
        pm, config, data, flaggers, engine, seed=args.seed, workers=1, flag_original=False
    )
    step = float(config.shear.step)
    summary = {}
    for name, (plus, minus) in result.unit_sums.items():
        keys, infl, m, P, M = influences((plus.keys, plus.sums), (minus.keys, minus.sums), g, step)
        share = np.cumsum(np.sort(infl**2)[::-1]) / (infl**2).sum()
        n = len(keys)
        top1, top3 = share[max(int(0.01 * n) - 1, 0)], share[max(int(0.03 * n) - 1, 0)]
        summary[name] = {
            "m": float(m),
            "sigma_m_linear": float(np.sqrt((infl**2).sum())),
            "variance_share_top1pct": float(top1),
            "variance_share_top3pct": float(top3),
            "sigma_m_without_top1pct": float(np.sqrt((infl**2).sum() * (1 - top1))),
            "units": int(n),
        }
        s = summary[name]
        print(
            f"{name:22s} m {m:+.4f} sigma {s['sigma_m_linear']:.4f}  top 1% {top1:.2f}  "
            f"top 3% {top3:.2f}  sigma without top 1% {s['sigma_m_without_top1pct']:.4f}"
        )
        if name != "all":
            continue
        tables = []
        for context in result.contexts:
            cols = {k: np.asarray(context.table[k]) for k in ("X_IMAGE", "Y_IMAGE", "FLAGS")}
            shear = context.results["shear"].table
            for k in ("G1_NOSHEAR", "S2N_NOSHEAR", "MCAL_FLAGS"):
                cols[k] = np.asarray(shear[k])
            cols["PAIR_ID"] = np.asarray(context.results["pair_id"])
            tables.append(cols)
        for u in np.argsort(-(infl**2))[: args.top]:
            counts = f"n(+) {P[u, 0]:.0f}, n(-) {M[u, 0]:.0f}"
            print(f"  unit {keys[u]}: influence {infl[u]:+.5f}, {counts}")
            for sign, t in zip("+-", tables, strict=True):
                for i in np.flatnonzero(t["PAIR_ID"] == keys[u]):
                    print(
                        f"    {sign} x {t['X_IMAGE'][i]:7.1f} y {t['Y_IMAGE'][i]:7.1f} "
                        f"FLAGS {t['FLAGS'][i]} e1 {t['G1_NOSHEAR'][i]:+.3f} "
                        f"S/N {t['S2N_NOSHEAR'][i]:.0f} MCAL_FLAGS {t['MCAL_FLAGS'][i]}"
                    )
    if args.json:
        with open(args.json, "w") as fh:
            document = {"options": vars(args), "selections": summary, "provenance": provenance()}
            json.dump(document, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
