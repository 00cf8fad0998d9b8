"""The default field's detections against CFIS/UNIONS: densities, magnitudes, sizes, S/N.

Usage::

    python scripts/sky_figure.py --seed 1 --json docs/results/sky_cfis_seed1.json \
        --plot docs/sky_cfis.png

The +g image of ``compare``'s default field (the CFIS r-band sky of
``configs/cfis_survey.yaml``, ``--seed``) is detected and measured as
``compare`` does (``run_compare``, built-in engine, no flagger). Each
detection is matched to the truth (its magnitude and half-light radius);
stars are left out. Two densities per arcmin^2 of the image are compared
with the published CFIS ones:

- detected galaxies (every galaxy detection);
- the shape catalogue: ShapePipe's cuts on the CFIS shape catalogue
  (metacal S/N between 10 and 500 and a size ratio hlr/hlr_PSF > 0.707 of
  PSF-deconvolved Gaussian fits, i.e. T_gal/T_PSF > 0.5; Guinot et al.
  2022, A&A 666, A162, and the ShapePipe validation configuration), here
  with the built-in engine's S/N and observed T (Gaussian-weighted, 1.2"
  weight) and the reconvolution PSF's T measured with the same weight:
  observed T/T_PSF > 1.5 (for Gaussians T_obs = T_gal + T_PSF).

The shape catalogue with the detector's FLAGS = 0 as well (ShapePipe keeps
only those: no bright neighbour, not deblended) is given too.

Published: Guinot et al. 2022 (1,700 deg^2 of CFIS r): 40 million galaxies
(6.5 per arcmin^2 of the whole area, more per unmasked arcmin^2), n_eff 6.8
per arcmin^2, complete to r = 24.5. No detection density of the CFIS tiles
is published that we found: the figure shows the detected magnitudes
against the number counts and that completeness limit instead.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag._runtime.quiet_imports import install_for_script

install_for_script()

#: Guinot et al. 2022 (A&A 666, A162): CFIS r shape catalogue.
PUBLISHED = {
    "shape_catalogue_n_eff": 6.8,
    "shape_catalogue_raw_whole_area": 40e6 / (1700 * 3600),
    "complete_to_r": 24.5,
    "source": "Guinot et al. 2022, A&A 666, A162 (abstract): 1700 deg^2, 40 million "
    "galaxies, n_eff = 6.8 per arcmin^2, complete to r = 24.5",
}
#: ShapePipe's shape-catalogue cuts: S/N range, and the least observed T / T_PSF
#: (T_gal / T_PSF > 0.5 after deconvolution, Gaussians).
SNR_RANGE = (10.0, 500.0)
T_RATIO_MIN = 1.5


def psf_weighted_T(psf, pixel_scale: float, weight_fwhm: float) -> float:
    """T (arcsec^2) of the reconvolution PSF of ``psf`` with the engine's Gaussian weight."""
    import galsim

    from blendflag.shear.metacal_ops import round_target_psf
    from blendflag.shear.moments import weighted_moments

    obj = galsim.InterpolatedImage(galsim.ImageD(psf.astype(float), scale=pixel_scale))
    image = round_target_psf(obj).drawImage(nx=51, ny=51, scale=pixel_scale).array
    wm = weighted_moments(image[None], np.array([[25.0, 25.0]]), weight_fwhm, pixel_scale, 0.0)
    return float(wm.T[0])


def measure(seed: int, workers: int, n_galaxies: int | None) -> dict:
    """Detections of the default field's +g image with truth magnitudes, sizes, S/N and T."""
    from blendflag.config import load_pipeline_config
    from blendflag.pipeline.compare import run_compare
    from blendflag.pipeline.field_input import simulated_inputs
    from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine
    from blendflag.truth import match_truth

    pm = get_plugin_manager()
    config = load_pipeline_config(None)
    engine = select_engine(get_shear_engines(pm), "metacal", paired=False)
    stamp = max(config.flag.stamp_size, config.shear.stamp_size)
    (field,) = simulated_inputs(
        n_galaxies=n_galaxies, seed=seed, workers=workers, stamp_size=stamp, shear_pairs=False
    )
    result = run_compare(
        pm, config, [field], [], engine, seed=seed, workers=workers,
        flag_original=False, masked_selection=False, psf_check="off",
    )  # fmt: skip
    context = result.contexts[0]
    table, truth = context.results["shear"].table, field.truth
    match = match_truth(context.table, truth)
    galaxy = (match >= 0) & ~np.asarray(truth["STAR"])[np.maximum(match, 0)]
    idx = match[galaxy]
    weight_fwhm = engine(config.shear).settings["weight_fwhm"]
    return {
        "area_arcmin2": field.image.size * (field.pixel_scale / 60.0) ** 2,
        "truth_mag": np.asarray(truth["MAG"])[~np.asarray(truth["STAR"])],
        "mag": np.asarray(truth["MAG"])[idx],
        "hlr": np.asarray(truth["HLR"])[idx],
        "s2n": np.asarray(table["S2N_NOSHEAR"])[galaxy],
        "flags": np.asarray(context.table["FLAGS"])[galaxy],
        "T": np.asarray(table["T_NOSHEAR"])[galaxy],
        "T_psf": psf_weighted_T(field.psf, field.pixel_scale, weight_fwhm),
        "n_unmatched": int((match < 0).sum()),
    }


def summary(data: dict) -> dict:
    """Densities per arcmin^2 and the shape-catalogue cut."""
    area = data["area_arcmin2"]
    s2n, ratio = data["s2n"], data["T"] / data["T_psf"]
    shape = (s2n > SNR_RANGE[0]) & (s2n < SNR_RANGE[1]) & (ratio > T_RATIO_MIN)
    data["shape"] = shape
    n_det, n_shape = len(s2n), int(shape.sum())
    clean = int((shape & (data["flags"] == 0)).sum())
    return {
        "area_arcmin2": area,
        "drawn_galaxies_per_arcmin2": len(data["truth_mag"]) / area,
        "detected_galaxies_per_arcmin2": n_det / area,
        "detected_err": math.sqrt(n_det) / area,
        "shape_catalogue_per_arcmin2": n_shape / area,
        "shape_catalogue_err": math.sqrt(n_shape) / area,
        # ShapePipe also keeps only SExtractor FLAGS = 0 (no neighbour, not deblended)
        "shape_catalogue_flags0_per_arcmin2": clean / area,
        "shape_cuts": {"s2n": list(SNR_RANGE), "T_over_T_psf_min": T_RATIO_MIN},
        "T_psf_arcsec2": data["T_psf"],
        "median_mag_shape_catalogue": float(np.median(data["mag"][shape])),
        "unmatched_detections": data["n_unmatched"],
        "published": PUBLISHED,
    }


def plot(data: dict, numbers: dict, path: str) -> None:
    """Magnitudes, S/N and sizes of the detections, with Poisson errors and the published marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    area, shape = data["area_arcmin2"], data["shape"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    bins = np.arange(18.0, 27.6, 0.5)
    centres = 0.5 * (bins[1:] + bins[:-1])
    for values, label in ((data["truth_mag"], "drawn"), (data["mag"], "detected"),
                          (data["mag"][shape], "shape catalogue")):  # fmt: skip
        n, _ = np.histogram(values, bins)
        axes[0].errorbar(centres, n / area / 0.5, yerr=np.sqrt(n) / area / 0.5, fmt="o-",
                         ms=3, label=label)  # fmt: skip
    axes[0].axvline(PUBLISHED["complete_to_r"], color="k", ls=":", label="CFIS complete to r=24.5")
    axes[0].set(yscale="log", xlabel="r (AB, truth)", ylabel="galaxies / arcmin$^2$ / mag")
    axes[0].legend(fontsize=8)
    sbins = np.logspace(0, 3, 31)
    n, _ = np.histogram(data["s2n"], sbins)
    mid = np.sqrt(sbins[1:] * sbins[:-1])
    axes[1].errorbar(mid, n, yerr=np.sqrt(n), fmt="o-", ms=3, label="detected galaxies")
    axes[1].axvline(SNR_RANGE[0], color="k", ls=":", label="shape catalogue S/N > 10")
    axes[1].set(xscale="log", xlabel="S/N (wmom, noshear)", ylabel="detections per bin")
    axes[1].legend(fontsize=8)
    hbins = np.logspace(-1.3, 0.3, 25)
    for values, label in ((data["hlr"], "detected"), (data["hlr"][shape], "shape catalogue")):
        n, _ = np.histogram(values, hbins)
        axes[2].errorbar(np.sqrt(hbins[1:] * hbins[:-1]), n, yerr=np.sqrt(n), fmt="o-", ms=3,
                         label=label)  # fmt: skip
    axes[2].set(xscale="log", xlabel="disk half-light radius (arcsec, truth)", ylabel="per bin")
    axes[2].legend(fontsize=8)
    det = numbers["detected_galaxies_per_arcmin2"]
    cat = numbers["shape_catalogue_per_arcmin2"]
    fig.suptitle(
        f"Default compare field (CFIS r sky): detected {det:.1f}, shape catalogue {cat:.1f} "
        f"per arcmin$^2$ (CFIS: n_eff {PUBLISHED['shape_catalogue_n_eff']}, Guinot et al. "
        "2022). Error bars: Poisson.",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--n-galaxies", type=int, default=None, help="[default: compare's]")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", required=True)
    parser.add_argument("--plot", required=True)
    args = parser.parse_args(argv)
    from blendflag.commands.common import write_json

    data = measure(args.seed, args.workers, args.n_galaxies)
    numbers = summary(data)
    plot(data, numbers, args.plot)
    write_json({"provenance": provenance(), "seed": args.seed, **numbers}, args.json)
    for key in ("drawn_galaxies_per_arcmin2", "detected_galaxies_per_arcmin2",
                "shape_catalogue_per_arcmin2", "shape_catalogue_flags0_per_arcmin2",
                "median_mag_shape_catalogue"):  # fmt: skip
        print(f"{key}: {numbers[key]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
