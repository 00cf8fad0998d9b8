"""The real survey chain: SExtractor (FITS_LDAC with VIGNET) then PSFEx, on one image.

A survey tile reaches blendflag after SExtractor and PSFEx; this module runs
that chain on an image so that blendflag can be tested (and used) on its
output exactly as on a real tile:

1. SExtractor (the Debian ``source-extractor``, or ``sex``) writes a
   FITS_LDAC catalogue with the ``VIGNET`` column PSFEx needs (and the
   columns ``blendflag-shear flag`` and ``compare`` read);
2. PSFEx selects the point sources in it and fits a PSF whose pixels vary as
   a polynomial of degree ``psf_degree`` in ``X_IMAGE``, ``Y_IMAGE`` (read
   back with :class:`blendflag.psf.model.PSFExModel`).

The ``.sex``, ``.param``, ``.conv`` and ``.psfex`` files are written by
:func:`write_configs` into a temporary directory (kept with ``keep=``); every
setting is in :data:`SEX_OPTIONS` and :data:`PSFEX_OPTIONS`. Run it as
``python -m blendflag.psf.psfex_chain IMAGE --weight W --out-dir DIR``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from blendflag.errors import BlendflagError
from blendflag.io.atomic import atomic_output
from blendflag.io.external_tools import run_tool

#: SExtractor output columns: positions, photometry, shapes, flags and the
#: VIGNET PSFEx fits (no CLASS_STAR: it needs a neural-network file).
SEX_PARAMETERS = (
    "NUMBER",
    "X_IMAGE",
    "Y_IMAGE",
    "XWIN_IMAGE",
    "YWIN_IMAGE",
    "ALPHA_J2000",
    "DELTA_J2000",
    "FLUX_AUTO",
    "FLUXERR_AUTO",
    "MAG_AUTO",
    "FLUX_APER(1)",
    "FLUXERR_APER(1)",
    "FLUX_RADIUS",
    "KRON_RADIUS",
    "A_IMAGE",
    "B_IMAGE",
    "THETA_IMAGE",
    "ELONGATION",
    "ISOAREA_IMAGE",
    "SNR_WIN",
    "FLAGS",
    "FLAGS_WEIGHT",
    "VIGNET(45,45)",
)
#: SExtractor settings (the sep plugin's detection defaults; no saturation in simulations).
SEX_OPTIONS = {
    "CATALOG_TYPE": "FITS_LDAC",
    "DETECT_TYPE": "CCD",
    "DETECT_MINAREA": "5",
    "DETECT_THRESH": "1.5",
    "ANALYSIS_THRESH": "1.5",
    "FILTER": "Y",
    "DEBLEND_NTHRESH": "32",
    "DEBLEND_MINCONT": "0.005",
    "CLEAN": "Y",
    "CLEAN_PARAM": "1.0",
    "MASK_TYPE": "CORRECT",
    "PHOT_APERTURES": "10",
    "PHOT_AUTOPARAMS": "2.5,3.5",
    "SATUR_LEVEL": "1e20",
    "MAG_ZEROPOINT": "30.0",
    "GAIN": "0.0",
    "PIXEL_SCALE": "0",
    "SEEING_FWHM": "0.7",
    "BACK_SIZE": "64",
    "BACK_FILTERSIZE": "3",
    "BACKPHOTO_TYPE": "GLOBAL",
    "MEMORY_OBJSTACK": "30000",
    "MEMORY_PIXSTACK": "3000000",
    "MEMORY_BUFSIZE": "4096",
    "VERBOSE_TYPE": "QUIET",
    "WRITE_XML": "N",
    "NTHREADS": "1",
}
#: PSFEx settings: a pixel basis of 41 x 41 samples at the image's pixels
#: (sampling 1: read without interpolation, and PSFEx's star resampling can
#: be undone exactly, blendflag.psf.psfex_resampling; PSFEx's automatic choice
#: was 0.955 to 1.42 pixels on the simulated tiles, and m on isolated galaxies
#: +0.006 at 0.955, docs/results.md, "A varying PSF"), varying as a
#: polynomial in X_IMAGE, Y_IMAGE; stars chosen automatically.
PSFEX_OPTIONS = {
    "BASIS_TYPE": "PIXEL_AUTO",
    "PSF_SAMPLING": "1.0",
    "PSF_SIZE": "41,41",
    "PSF_RECENTER": "Y",
    "PSFVAR_KEYS": "X_IMAGE,Y_IMAGE",
    "PSFVAR_GROUPS": "1,1",
    "SAMPLE_AUTOSELECT": "Y",
    "SAMPLEVAR_TYPE": "SEEING",
    "SAMPLE_FWHMRANGE": "1.5,12.0",
    "SAMPLE_VARIABILITY": "0.3",
    "SAMPLE_MINSN": "50",
    "SAMPLE_MAXELLIP": "0.3",
    "SAMPLE_FLAGMASK": "0x00fe",
    "CHECKPLOT_TYPE": "NONE",
    "CHECKIMAGE_TYPE": "NONE",
    "WRITE_XML": "N",
    "VERBOSE_TYPE": "QUIET",
    "NTHREADS": "1",
}
#: SExtractor's default.conv (the 3x3 pyramid).
FILTER = "CONV NORM\n1 2 1\n2 4 2\n1 2 1\n"


def find_binary(*names: str) -> str | None:
    """The first of ``names`` on PATH, or None."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def write_configs(
    directory, psf_degree: int = 2, flag_image: bool = False, psfex_options=None, sex_options=None
) -> dict:
    """Write ``chain.sex``, ``chain.param``, ``chain.conv`` and ``chain.psfex`` into ``directory``.

    With ``flag_image`` the catalogue also gets ``IMAFLAGS_ISO`` (the OR of
    the flag map's pixels on each object), which needs a ``FLAG_IMAGE``;
    ``psfex_options`` and ``sex_options`` (``{KEY: value}``) replace entries of
    :data:`PSFEX_OPTIONS` and :data:`SEX_OPTIONS`.

    Returns
    -------
    dict
        ``{"sex", "param", "conv", "psfex"}`` -> path.
    """
    directory = Path(directory)
    paths = {kind: directory / f"chain.{kind}" for kind in ("sex", "param", "conv", "psfex")}
    sex = dict(SEX_OPTIONS, PARAMETERS_NAME=str(paths["param"]), FILTER_NAME=str(paths["conv"]))
    sex.update(sex_options or {})
    paths["sex"].write_text("".join(f"{k:<18} {v}\n" for k, v in sex.items()))
    columns = SEX_PARAMETERS + (("IMAFLAGS_ISO",) if flag_image else ())
    paths["param"].write_text("\n".join(columns) + "\n")
    paths["conv"].write_text(FILTER)
    psfex = dict(PSFEX_OPTIONS, PSFVAR_DEGREES=str(int(psf_degree)), **(psfex_options or {}))
    paths["psfex"].write_text("".join(f"{k:<18} {v}\n" for k, v in psfex.items()))
    return paths


def run_chain(
    image,
    out_dir,
    weight=None,
    flag_image=None,
    psf_degree: int = 2,
    keep=None,
    timeout: float = 1800.0,
    psfex_options=None,
    sex_options=None,
    star_selection: str = "locus",
) -> dict:
    """SExtractor then PSFEx on ``image``: ``OUT_DIR/<stem>.ldac`` and ``OUT_DIR/<stem>.psf``.

    Parameters
    ----------
    image : path-like
        The science image (FITS, ADU).
    out_dir : path-like
        Where the catalogue and the PSF model go (created if missing).
    weight : path-like or None
        Inverse-variance weight map (``MAP_WEIGHT``); weight 0 masks a pixel.
    flag_image : path-like or None
        An integer flag map (SExtractor ``FLAG_IMAGE``): non-zero pixels set
        the object's ``IMAFLAGS_ISO``, and PSFEx leaves such stars out.
    psf_degree : int
        Degree of PSFEx's polynomial in X_IMAGE, Y_IMAGE. [default: 2]
    keep : path-like or None
        Write the config files here (and keep them) instead of a temporary directory.
    timeout : float
        Seconds allowed to each binary. [default: 1800]
    psfex_options : dict or None
        PSFEx settings replacing those of :data:`PSFEX_OPTIONS`, e.g.
        ``{"PSF_SAMPLING": "1.0"}``.
    sex_options : dict or None
        SExtractor settings replacing those of :data:`SEX_OPTIONS`, e.g.
        ``{"BACK_SIZE": "256"}``.
    star_selection : str
        ``"locus"``: PSFEx gets only the sources on the stellar locus
        followed across the image (:mod:`blendflag.psf.stars`); ``"psfex"``:
        every source, PSFEx choosing its stars alone. [default: "locus"]

    Returns
    -------
    dict
        ``{"catalogue": Path, "psf": Path, "configs": dict or None}``.

    Raises
    ------
    BlendflagError
        A binary is missing or fails, or PSFEx writes no model.
    """
    sex = find_binary("source-extractor", "sex")
    psfex = find_binary("psfex")
    if sex is None or psfex is None:
        missing = "source-extractor" if sex is None else "psfex"
        raise BlendflagError(f"{missing} not found: install the Debian package {missing}")
    image = Path(image).resolve()
    if not image.is_file():
        raise BlendflagError(f"image {image} does not exist")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = image.name.removesuffix(".fz").removesuffix(".fits")
    catalogue = out_dir.resolve() / f"{stem}.ldac"
    psf = out_dir.resolve() / f"{stem}.psf"
    with tempfile.TemporaryDirectory(prefix="blendflag-chain-") as tmp:
        work = Path(keep).resolve() if keep is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        configs = write_configs(
            work, psf_degree, flag_image is not None, psfex_options, sex_options
        )
        cmd = [sex, str(image), "-c", str(configs["sex"]), "-CATALOG_NAME", str(work / "cat.ldac")]
        if weight is not None:
            cmd += ["-WEIGHT_TYPE", "MAP_WEIGHT", "-WEIGHT_IMAGE", str(Path(weight).resolve())]
            cmd += ["-WEIGHT_GAIN", "N"]
        if flag_image is not None:
            cmd += ["-FLAG_IMAGE", str(Path(flag_image).resolve())]
        run_tool(cmd, work, "SExtractor", timeout)
        stars = work / "cat.ldac"
        if star_selection == "locus":
            from blendflag.psf.stars import write_star_catalogue

            stars = work / "stars.ldac"
            if write_star_catalogue(work / "cat.ldac", stars) < 10:
                raise BlendflagError("fewer than 10 stars on the stellar locus (S/N >= 50)")
        elif star_selection != "psfex":
            raise BlendflagError(f"unknown star selection {star_selection!r} (locus or psfex)")
        cmd = [psfex, str(stars), "-c", str(configs["psfex"]), "-PSF_DIR", str(work)]
        run_tool(cmd, work, "PSFEx", timeout)
        model = stars.with_suffix(".psf")
        if not model.is_file():
            raise BlendflagError("PSFEx wrote no model (too few stars?)")
        for source, target in ((work / "cat.ldac", catalogue), (model, psf)):
            with atomic_output(target) as part:
                shutil.copyfile(source, part)
    return {"catalogue": catalogue, "psf": psf, "configs": configs if keep is not None else None}


def main(argv=None) -> int:
    """``python -m blendflag.psf.psfex_chain IMAGE [--weight W] [--flag-image F] --out-dir DIR``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m blendflag.psf.psfex_chain", description=__doc__
    )
    parser.add_argument("image")
    parser.add_argument("--weight")
    parser.add_argument("--flag-image")
    parser.add_argument("--psf-degree", type=int, default=2)
    parser.add_argument("--keep-configs", metavar="DIR")
    parser.add_argument(
        "--star-selection",
        choices=("locus", "psfex"),
        default="locus",
        help="stars for PSFEx: the stellar locus across the image, or PSFEx's own choice",
    )
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    try:
        out = run_chain(
            args.image,
            args.out_dir,
            weight=args.weight,
            flag_image=args.flag_image,
            psf_degree=args.psf_degree,
            keep=args.keep_configs,
            star_selection=args.star_selection,
        )
    except BlendflagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{out['catalogue']}\n{out['psf']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
