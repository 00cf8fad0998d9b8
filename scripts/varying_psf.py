"""m with a varying PSF: the PSFEx model at each galaxy against one average PSF.

1. A star field with the varying PSF of ``simulate-field --varying-psf``
   (size +-10 % along x, +-5 % along y, PSF g1 -0.03..+0.03 along x, g2 along y,
   over a SIZE x SIZE image) goes through SExtractor and PSFEx
   (:func:`blendflag.psf.psfex_chain.run_chain`): the PSFEx model is made from the
   image, as on a real tile.
2. Isolated exponential galaxies in 90-degree rotated pairs are placed at
   random over the same image; both members of a pair sit at the same
   position (the same PSF), each is drawn with the true PSF there, sheared by
   +g and by -g with the same pixel noise.
3. Every stamp is measured by the GalSim metacal engine with each PSF
   variant: ``psfex`` (the PSFEx model at the galaxy), ``average`` (one PSF
   for the whole image: the PSFEx model averaged over a 5x5 grid), and
   ``true`` (the simulated PSF at the galaxy; the reference).
4. m, c1, c2 per variant from the ±g pairs
   (:func:`blendflag.shear.paired.compare_statistics`), over the whole image
   and in thirds along x (where the size gradient is largest).

Example (the runs in docs/results.md, about 8 CPU minutes per variant)::

    python scripts/varying_psf.py --n-pairs 2000 --noise 5 --workers 2 --json m.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy / GalSim, inherited by workers

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = ("psfex", "average", "true")
STAMP = 51
PIXEL_SCALE = 0.187


def _draw_pairs(vp, xs, ys, rng, shear, flux, noise):
    """Stamps of rotated pairs at (xs, ys) with the true PSF there; the same noise at both signs."""
    import galsim

    n = len(xs)
    stamps = {s: np.empty((2 * n, STAMP, STAMP)) for s in (1, -1)}
    image = galsim.ImageD(STAMP, STAMP, scale=PIXEL_SCALE)
    for k in range(n):
        hlr = rng.uniform(0.3, 0.7)
        while True:
            g = rng.normal(0.0, 0.25, size=2)
            if np.hypot(*g) < 0.7:
                break
        offset = rng.uniform(-0.5, 0.5, size=2)
        psf = vp.profile_at(xs[k], ys[k])
        for j, angle in enumerate((0.0, 90.0)):
            gal = galsim.Exponential(half_light_radius=hlr, flux=flux).shear(g1=g[0], g2=g[1])
            gal = gal.rotate(angle * galsim.degrees)
            for sign in (1, -1):
                sheared = gal.shear(g1=sign * shear, g2=0.0)
                galsim.Convolve(sheared, psf).drawImage(image=image, offset=offset)
                stamps[sign][2 * k + j] = image.array
    pixel_noise = rng.normal(0.0, noise, size=stamps[1].shape) if noise > 0 else 0.0
    return {s: a + pixel_noise for s, a in stamps.items()}


def _run_chunk(task):
    """Draw one chunk of pairs and measure it at both signs with every PSF variant."""
    (vp, psfex_path, average, xs, ys, seed, first, shear, flux, noise, variants, interp, mode,
     undo) = task  # fmt: skip
    from blendflag.config import ShearConfig
    from blendflag.psf.model import PSFExModel
    from blendflag.shear.inputs import paired_noise_fields
    from blendflag.shear.metacal_ops import common_target_sigma
    from blendflag_plugins.metacal_galsim import GalSimMetacal

    rng = np.random.default_rng(seed)
    stamps = _draw_pairs(vp, xs, ys, rng, shear, flux, noise)
    px, py = np.repeat(xs, 2), np.repeat(ys, 2)
    psfs, sigmas = {}, {}  # sigmas: each model's common Gaussian over the whole image
    side = average.shape[0]
    if "psfex" in variants:
        model = PSFExModel(psfex_path, interpolant=interp, undo_resampling=undo)
        psfs["psfex"] = model.images_at(px, py, side)
        grid = model.domain_images((vp.ny, vp.nx), side)
        sigmas["psfex"] = common_target_sigma(grid, PIXEL_SCALE)
    if "average" in variants:
        psfs["average"] = average
    if "true" in variants:
        psfs["true"] = vp.psf_model(PIXEL_SCALE).images_at(px, py, side)
        grid = vp.psf_model(PIXEL_SCALE).domain_images(size=side)
        sigmas["true"] = common_target_sigma(grid, PIXEL_SCALE)
    n = len(xs)
    pair_id = np.repeat(np.arange(n), 2) + first
    fields = paired_noise_fields(pair_id, np.tile([False, True], n), noise, STAMP, 17)
    out, seconds = {}, 0.0
    for name in variants:
        options = {"varying_psf": mode, "common_psf_sigma": sigmas.get(name, 0.0)}
        engine = GalSimMetacal(ShearConfig(options={"metacal": options}))
        for sign in (1, -1):
            start = time.perf_counter()
            result = engine.measure(
                stamps[sign], psfs[name], PIXEL_SCALE, noise, rng, noise_fields=fields
            )
            seconds += time.perf_counter() - start
            out[(name, sign)] = {c: np.asarray(result.table[c]) for c in result.table.colnames}
    return out, pair_id, seconds


def _stats(parts, name, keep_pairs, step, shear, seed, n_boot):
    from astropy.table import Table, vstack

    from blendflag.shear.paired import UnitSums, compare_statistics
    from blendflag.shear.results import selection_unit_sums

    units = []
    for sign in (1, -1):
        table = vstack([Table(p[0][(name, sign)]) for p in parts])
        pair_id = np.concatenate([p[1] for p in parts])
        keep = np.isin(pair_id, keep_pairs)
        sums, n_good = selection_unit_sums(table[keep], None, pair_id[keep])
        units.append(UnitSums(np.unique(pair_id[keep]), sums, n_good, sign))
    (entry,) = compare_statistics(
        {"all": units}, step, (shear, 0.0), np.random.default_rng(seed), n_boot
    )
    return {k: entry[k] for k in ("n", "m", "m_err", "c1", "c1_err", "c2", "c2_err")}


def _argument_parser() -> argparse.ArgumentParser:
    """The command line: pairs, noise and flux (ADU), shear, image and PSFEx settings, output."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-pairs", type=int, default=1500, help="rotated pairs [1500]")
    parser.add_argument("--noise", type=float, default=5.0, help="pixel noise, ADU [5]")
    parser.add_argument("--flux", type=float, default=1.0e4, help="galaxy flux, ADU [1e4]")
    parser.add_argument("--shear", type=float, default=0.02, help="true g1 [0.02]")
    parser.add_argument("--size", type=int, default=3000, help="image side, pixels [3000]")
    parser.add_argument("--stars", type=int, default=600, help="stars for PSFEx [600]")
    parser.add_argument("--psf-degree", type=int, default=2, help="PSFEx PSFVAR_DEGREES [2]")
    parser.add_argument(
        "--psf-sampling", help="PSFEx PSF_SAMPLING [psfex_chain's: 1.0; 0: PSFEx chooses]"
    )
    parser.add_argument(
        "--psfex-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another PSFEx setting (repeatable), e.g. PSF_RECENTER=N",
    )
    parser.add_argument(
        "--sex-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a SExtractor setting (repeatable), e.g. BACK_SIZE=256",
    )
    parser.add_argument(
        "--interpolant",
        help="GalSim interpolant of the PSFEx samples [GalSim's DES_PSFEx: Lanczos-3]",
    )
    parser.add_argument(
        "--star-noise", type=float, help="pixel noise of the star field, ADU [--noise]"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="PSF variants to measure")
    parser.add_argument(
        "--psfex-as-is",
        action="store_true",
        help="read the PSFEx model as written (its star resampling not undone)",
    )
    parser.add_argument(
        "--varying-psf",
        default="common",
        choices=("common", "per_object"),
        help="the metacal engine's shear.options.metacal.varying_psf [common]",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=100, help="pairs per task [100]")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--n-bootstrap", type=int, default=500)
    parser.add_argument("--json", help="write the result here")
    return parser


def _pair_tasks(args, vp, psfex_path: str, average, variants: tuple) -> tuple:
    """The pairs' random positions (pixels) and the :func:`_run_chunk` task of each chunk.

    Parameters
    ----------
    args : argparse.Namespace
    vp : VaryingPSF
        The star field's true PSF.
    psfex_path : str
        The PSFEx model made from the star field.
    average : numpy.ndarray
        The PSFEx model averaged over the image.
    variants : tuple of str
        The PSF variants to measure.

    Returns
    -------
    xs, ys : numpy.ndarray
        Position of each pair, pixels, at least 40 px from the edges.
    tasks : list of tuple
    """
    rng = np.random.default_rng(args.seed + 7)
    xs = rng.uniform(40.0, args.size - 40.0, args.n_pairs)
    ys = rng.uniform(40.0, args.size - 40.0, args.n_pairs)
    seeds = np.random.SeedSequence(args.seed).generate_state(-(-args.n_pairs // args.chunk))
    tasks = [
        (vp, psfex_path, average, xs[i : i + args.chunk], ys[i : i + args.chunk],
         int(seeds[k]), i, args.shear, args.flux, args.noise, variants, args.interpolant,
         args.varying_psf, not args.psfex_as_is)
        for k, i in enumerate(range(0, args.n_pairs, args.chunk))
    ]  # fmt: skip
    return xs, ys, tasks


def _results_by_region(parts, variants: tuple, xs, args) -> dict:
    """m, c1, c2 of each variant over the whole image and in thirds along x (``xs``, pixels)."""
    thirds = np.array_split(np.argsort(xs), 3)
    regions = {"all": np.arange(args.n_pairs)}
    regions.update({f"x_third_{k + 1}": idx for k, idx in enumerate(thirds)})
    return {
        name: {
            region: _stats(parts, name, pairs, 0.01, args.shear, args.seed + 1, args.n_bootstrap)
            for region, pairs in regions.items()
        }
        for name in variants
    }


def main(argv=None) -> int:
    args = _argument_parser().parse_args(argv)
    variants = tuple(args.variants.split(","))
    psfex_options = dict(o.split("=", 1) for o in args.psfex_option)
    if args.psf_sampling:
        psfex_options["PSF_SAMPLING"] = args.psf_sampling

    from blendflag.psf.model import PSFExModel
    from blendflag.psf.psfex_chain import run_chain
    from blendflag.simulate.field import simulate_field
    from blendflag.simulate.field_io import write_field

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="varying-psf-") as tmp:
        stars = simulate_field(
            "cfis", 1, seed=args.seed, size=args.size,
            noise=args.noise if args.star_noise is None else args.star_noise,
            varying_psf=True, n_stars=args.stars, margin=30,
        )  # fmt: skip
        write_field(stars, Path(tmp) / "stars")
        chain = run_chain(
            Path(tmp) / "stars" / "image.fits",
            tmp,
            weight=Path(tmp) / "stars" / "weight.fits",
            psf_degree=args.psf_degree,
            psfex_options=psfex_options,
            sex_options=dict(o.split("=", 1) for o in args.sex_option),
        )
        psfex_path = str(Path(tmp) / "psfex.psf")
        os.replace(chain["psf"], psfex_path)
        model = PSFExModel(
            psfex_path, interpolant=args.interpolant, undo_resampling=not args.psfex_as_is
        )
        average = model.average_image((args.size, args.size))
        from astropy.io import fits

        accepted = int(fits.getheader(psfex_path, 1)["ACCEPTED"])
        sampling = float(fits.getheader(psfex_path, 1)["PSF_SAMP"])
        vp = stars.varying_psf
        xs, ys, tasks = _pair_tasks(args, vp, psfex_path, average, variants)
        if args.workers > 1:
            with mp.get_context("spawn").Pool(args.workers) as pool:
                parts = pool.map(_run_chunk, tasks, chunksize=1)
        else:
            parts = [_run_chunk(t) for t in tasks]
    wall = time.perf_counter() - start
    results = _results_by_region(parts, variants, xs, args)
    s2n = np.concatenate([p[0][(variants[0], 1)]["S2N_NOSHEAR"] for p in parts])
    fwhm = vp.fwhm_at(xs, ys)
    out = {
        "n_pairs": args.n_pairs,
        "noise_sigma": args.noise,
        "median_s2n": float(np.nanmedian(s2n)),
        "true_shear": [args.shear, 0.0],
        "image_size": args.size,
        "psf_fwhm_range_arcsec": [float(fwhm.min()), float(fwhm.max())],
        "psfex_stars_accepted": accepted,
        "psfex_degree": args.psf_degree,
        "psfex_sampling": sampling,
        "psfex_options": psfex_options,
        "sex_options": dict(o.split("=", 1) for o in args.sex_option),
        "psfex_interpolant": args.interpolant or "lanczos3 (galsim.des.DES_PSFEx)",
        "varying_psf": args.varying_psf,
        "psfex_resampling_undone": not args.psfex_as_is,
        "star_noise_sigma": args.noise if args.star_noise is None else args.star_noise,
        # time inside engine.measure, summed over tasks (wall clock of each worker)
        "measure_seconds": float(sum(p[2] for p in parts)),
        "wall_seconds": wall,
        "workers": args.workers,
        "results": results,
    }
    print(json.dumps(out, indent=2))
    for name in variants:
        r = results[name]["all"]
        print(
            f"{name:8s} m = {r['m']:+.2e} +/- {r['m_err']:.1e}   "
            f"c1 = {r['c1']:+.2e} +/- {r['c1_err']:.1e}   c2 = {r['c2']:+.2e} +/- {r['c2_err']:.1e}"
        )
    if args.json:
        from blendflag._runtime.provenance import provenance

        out["provenance"] = provenance()
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
