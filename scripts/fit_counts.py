"""Fit the survey presets' galaxy number counts: a broken power law in log10 n(m).

Usage::

    python scripts/fit_counts.py            # print the fits
    python scripts/fit_counts.py --json docs/results/counts_fits.json

The published differential counts below (AB magnitudes, log10 of galaxies
per deg^2 per 0.5 mag) are fitted, by least squares in log10 n, with a
continuous broken power law whose breaks are fixed (``BREAKS``); the result
is the ``counts_pivot``, ``counts_breaks`` and ``counts_slopes`` of a preset's
``galaxy.counts`` (``n`` in galaxies per arcmin^2 per mag, pivot at the
faintest break). Sources:

- r band: Driver et al. 2016 (ApJ 827, 108), their fit to the GAMA/COSMOS/
  HST r-band counts, tabulated here at 0.5-mag bins from 18 to 28, checked
  against Hogg et al. 1997's R counts as fitted by Bloom, Kulkarni &
  Djorgovski 2002 (AJ 123, 1111): the two agree within 0.06 dex for r = 21-26.
- i band: Capak et al. 2004 (AJ 127, 180; HDF-N, i_AB 19.25-24.75) and
  Metcalfe et al. 2001 (MNRAS 323, 795; HDF-N, i_AB 25.2-28.2, I_Vega + 0.45),
  from the Durham compilation of N. Metcalfe.

The numbers were read from the compilations named above; see
docs/results.md ("A sky like a survey's") for how they were used.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

#: (AB mag, log10 N per deg^2 per 0.5 mag).
TABLES = {
    "r": {
        "source": "Driver et al. 2016 (ApJ 827, 108), r-band counts fit, 0.5-mag bins",
        "points": [
            (18.0, 2.07),
            (19.0, 2.53),
            (20.0, 2.96),
            (21.0, 3.36),
            (22.0, 3.74),
            (23.0, 4.09),
            (24.0, 4.42),
            (25.0, 4.73),
            (26.0, 5.00),
            (27.0, 5.26),
            (28.0, 5.48),
        ],
        "breaks": [21.0, 25.0],
    },
    "i": {
        "source": "Capak et al. 2004 (AJ 127, 180) to i = 24.75; Metcalfe et al. 2001 "
        "(MNRAS 323, 795) from i = 25.2 (HDF-N)",
        "points": [
            (19.25, 2.53),
            (19.75, 2.76),
            (20.25, 3.08),
            (20.75, 3.32),
            (21.25, 3.49),
            (21.75, 3.70),
            (22.25, 3.88),
            (22.75, 4.04),
            (23.25, 4.18),
            (23.75, 4.35),
            (24.25, 4.51),
            (24.75, 4.66),
            (25.2, 4.90),
            (25.7, 5.07),
            (26.2, 5.16),
            (26.7, 5.26),
            (27.2, 5.38),
            (27.7, 5.57),
            (28.2, 5.67),
        ],
        "breaks": [21.0, 25.0],
    },
}

#: deg^2 per arcmin^2 and 0.5 mag -> per mag.
PER_ARCMIN2_PER_MAG = 2.0 / 3600.0


def design(mags: np.ndarray, breaks: list[float]) -> np.ndarray:
    """Columns of a continuous broken line in ``mags`` pivoted at the last break.

    ``log10 n = a + s_k (m - pivot)`` piecewise; the unknowns are ``a`` and the
    slopes, brightest first.
    """
    pivot = breaks[-1]
    edges = [-np.inf, *breaks, np.inf]
    cols = [np.ones_like(mags)]
    for k in range(len(breaks) + 1):
        lo, hi = edges[k], edges[k + 1]
        # the part of (m - pivot) lying in segment k, signed
        if hi <= pivot:
            part = -(np.clip(pivot - mags, pivot - hi, pivot - lo) - (pivot - hi))
        else:
            part = np.clip(mags - pivot, lo - pivot if np.isfinite(lo) else -np.inf, hi - pivot)
            part = np.clip(part, 0.0, None) if lo >= pivot else part
        cols.append(part)
    return np.column_stack(cols)


def fit(table: dict) -> dict:
    """The broken power law of one table, with its rms residual (dex)."""
    m, logn = np.array(table["points"], dtype=float).T
    y = logn + np.log10(PER_ARCMIN2_PER_MAG)  # log10 per arcmin^2 per mag
    a = design(m, table["breaks"])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    return {
        "source": table["source"],
        "counts_pivot": [table["breaks"][-1], round(float(10.0 ** coef[0]), 3)],
        "counts_breaks": table["breaks"],
        "counts_slopes": [round(float(s), 4) for s in coef[1:]],
        "rms_dex": round(float(np.sqrt(np.mean(resid**2))), 4),
        "max_abs_dex": round(float(np.abs(resid).max()), 4),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the fits here")
    args = parser.parse_args(argv)
    fits = {band: fit(table) for band, table in TABLES.items()}
    text = json.dumps(fits, indent=2)
    print(text)
    if args.json:
        from blendflag._runtime.provenance import provenance

        doc = {"fits": fits, "provenance": provenance(["scripts/fit_counts.py", *sys.argv[1:]])}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
