"""A user's own ±g calibration images through ``compare --tiles``: errors against image pairs.

Usage::

    python scripts/user_pairs.py --density 40 --pairs 150 --seed 1 \
        --work /tmp/pairs40 --json docs/results/user_pairs_d40_seed1.json

Makes ``--pairs`` ±g pairs of images the way an outside simulation would
(none of blendflag's header cards, no truth): round exponential galaxies
(half-light radius 0.5", flux ``--flux`` ADU) at ``--density`` per arcmin^2,
uniform positions over the whole image, the scene sheared by ±0.02 about
the image centre (positions and shapes), a round Gaussian PSF of 0.9" FWHM,
251 x 251 pixels of 0.2", Gaussian noise of ``--noise`` ADU, the same noise
in both images of a pair. A list file gives each image with ``pair=`` and
``sign=``; ``blendflag-shear compare --tiles LIST --true-shear=0.02,0`` then
measures them (``--engine``), and this script re-reads the stored per-tile
sums and bootstraps them over image pairs (each pair's +g and -g images
together), the reference the printed errors (a bootstrap over cells) must
match within 20%.

The JSON holds compare's m, c1, c2 and their errors, the same from the
bootstrap over pairs, their ratios, the command and a ``provenance`` block.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag._runtime.quiet_imports import install_for_script

install_for_script()

SIZE = 251  # pixels
SCALE = 0.2  # arcsec per pixel
PSF_FWHM = 0.9  # arcsec
HLR = 0.5  # arcsec
SHEAR = 0.02


def draw_pair(rng: np.random.Generator, density: float, flux: float, noise: float) -> tuple:
    """The +g and -g images (ADU) of one scene and the PSF image (sum 1).

    Parameters
    ----------
    rng : numpy.random.Generator
        Positions, galaxy count (Poisson) and noise.
    density : float
        Galaxies per arcmin^2.
    flux, noise : float
        Galaxy flux and pixel noise sigma (ADU).
    """
    import galsim

    side = SIZE * SCALE / 60.0  # arcmin
    n = rng.poisson(density * side**2)
    half = SIZE * SCALE / 2.0
    offsets = rng.uniform(-half, half, size=(n, 2))  # arcsec from the centre
    psf = galsim.Gaussian(fwhm=PSF_FWHM)
    noise_image = rng.normal(0.0, noise, (SIZE, SIZE))
    images = []
    for g1 in (SHEAR, -SHEAR):
        shear = galsim.Shear(g1=g1, g2=0.0)
        matrix = shear.getMatrix()
        image = galsim.ImageD(SIZE, SIZE, scale=SCALE)
        for dx, dy in offsets:
            sx, sy = matrix @ np.array([dx, dy])  # the scene sheared about the centre
            galaxy = galsim.Exponential(half_light_radius=HLR, flux=flux).shear(shear)
            galsim.Convolve(galaxy, psf).drawImage(
                image=image, offset=(sx / SCALE, sy / SCALE), add_to_image=True
            )
        images.append(image.array + noise_image)
    psf_image = psf.drawImage(nx=33, ny=33, scale=SCALE).array
    return images[0], images[1], psf_image / psf_image.sum()


def write_pairs(work: Path, n_pairs: int, density: float, seed: int, flux, noise) -> Path:
    """Write every pair's images and PSF (plain FITS, a NOISE card only) and the list file."""
    from astropy.io import fits

    work.mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(n_pairs):
        plus, minus, psf = draw_pair(np.random.default_rng([seed, k]), density, flux, noise)
        name = f"p{k:04d}"
        header = fits.Header()
        header["PIXSCALE"] = (SCALE, "[arcsec/pixel]")
        header["NOISE"] = (noise, "[adu] Gaussian noise sigma")
        for label, array in (("plus", plus), ("minus", minus)):
            path = work / f"{name}_{label}.fits"
            if not path.exists():
                fits.writeto(path, array.astype(np.float32), header)
        if not (work / f"{name}_psf.fits").exists():
            fits.writeto(work / f"{name}_psf.fits", psf.astype(np.float32))
        for label, sign in (("plus", "+1"), ("minus", "-1")):
            lines.append(f"image={name}_{label}.fits psf={name}_psf.fits pair={name} sign={sign}")
    listing = work / "pairs.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def pair_sums(out_dir: Path, name: str) -> list:
    """A selection's stored sums of every tile, each image pair's cells summed into one unit."""
    from blendflag.shear.paired import SumsFile, UnitSums

    parts, fields = [], {}
    for path in sorted(out_dir.glob("*.sums.npz")):
        stored = SumsFile.load(path)
        key = fields.setdefault(stored.field, len(fields))
        sums = stored.selections[name]
        total = sums.sums.sum(axis=0, keepdims=True)
        parts.append(UnitSums(np.array([key]), total, sums.n_good, stored.sign, sums.layout))
    return parts


def pair_bootstrap(out_dir: Path, names, n_bootstrap: int, seed: int) -> dict:
    """``{selection: entry}`` with every image pair one unit (its cells summed)."""
    from blendflag.shear.paired import SumsFile, compare_statistics

    selections = {name: pair_sums(out_dir, name) for name in names}
    step = SumsFile.load(next(iter(sorted(out_dir.glob("*.sums.npz"))))).step
    entries = compare_statistics(
        selections, step, (SHEAR, 0.0), np.random.default_rng(seed), n_bootstrap
    )
    return {e["name"]: e for e in entries}


def _text(row: dict, key: str) -> str:
    """``key value ± error (pairs: error)`` of one row, ``-`` where null."""

    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    return (
        f"{key} {num(row[key], '+.4f')} ± {num(row[key + '_err'], '.4f')} "
        f"(pairs {num(row[key + '_err_pairs'], '.4f')})"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--density", type=float, default=40.0, help="per arcmin^2 [40]")
    parser.add_argument("--pairs", type=int, default=150, help="±g image pairs [150]")
    parser.add_argument("--seed", type=int, default=1, help="simulation and compare seed [1]")
    parser.add_argument("--flux", type=float, default=5000.0, help="galaxy flux, ADU [5000]")
    parser.add_argument("--noise", type=float, default=10.0, help="pixel noise, ADU [10]")
    parser.add_argument("--engine", default="metacal", help="compare's --engine [metacal]")
    parser.add_argument("--workers", type=int, default=None, help="[every core]")
    parser.add_argument("--bootstrap", type=int, default=500, help="draws [500]")
    parser.add_argument("--work", required=True, help="images, list file and tile results")
    parser.add_argument("--json", required=True, help="write the document here")
    args = parser.parse_args(argv)
    from blendflag.commands.common import write_json

    work = Path(args.work)
    listing = write_pairs(work, args.pairs, args.density, args.seed, args.flux, args.noise)
    out_dir = work / f"tiles_{args.engine}"
    out_json = work / f"compare_{args.engine}.json"
    command = [
        "blendflag-shear", "compare", "--tiles", str(listing), "--true-shear=0.02,0",
        "--engine", args.engine, "--flaggers", "sextractor", "--seed", str(args.seed),
        "--workers", str(args.workers or os.cpu_count() or 1), "--bootstrap",
        str(args.bootstrap), "--out-dir", str(out_dir), "--json", str(out_json), "--quiet",
    ]  # fmt: skip
    print("$ " + " ".join(command), file=sys.stderr)
    executable = Path(sys.executable).parent / "blendflag-shear"  # this environment's
    subprocess.run([str(executable), *command[1:]], check=True, stdout=subprocess.DEVNULL)
    compared = {e["name"]: e for e in json.loads(out_json.read_text())["selections"]}
    by_pair = pair_bootstrap(out_dir, list(compared), args.bootstrap, args.seed + 1)
    rows = {}
    for name, entry in compared.items():
        ref = by_pair[name]
        row = {"n": entry["n"], "R11": entry["R11"], "n_units": entry["n_units"]}
        for key in ("m", "c1", "c2"):
            row[key], row[f"{key}_err"] = entry[key], entry[f"{key}_err"]
            row[f"{key}_err_pairs"] = ref[f"{key}_err"]
            ratio = entry[f"{key}_err"] / ref[f"{key}_err"] if ref[f"{key}_err"] else None
            row[f"{key}_err_ratio"] = ratio
        rows[name] = row
        print(f"{name:<22} " + "  ".join(_text(row, key) for key in ("m", "c1", "c2")))
    document = {
        "provenance": provenance(),
        "recipe": {
            "size_px": SIZE,
            "pixel_scale": SCALE,
            "psf_fwhm": PSF_FWHM,
            "hlr": HLR,
            "density": args.density,
            "pairs": args.pairs,
            "flux": args.flux,
            "noise": args.noise,
            "shear": SHEAR,
            "seed": args.seed,
        },
        "command": command,
        "engine": args.engine,
        "selections": rows,
    }
    write_json(document, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
