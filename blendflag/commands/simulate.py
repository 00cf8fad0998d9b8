"""``blendflag-shear simulate`` and ``simulate-field``: GalSim stamps and sheared fields."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from blendflag.commands.common import add_stamp_kind_options
from blendflag.errors import BlendflagError


def register(cli) -> None:
    parser = cli.add_command(
        "simulate",
        func=run_simulate,
        help="simulate labelled postage stamps (blends, singles, separated pairs)",
        description="Draw GalSim postage stamps of blended pairs (label 1), single galaxies "
        "and separated pairs (label 0) and write them to one FITS file: HDU STAMPS "
        "(float32 cube, ADU), HDU TRUTH (one row per stamp) and HDU CONFIG (the "
        "resolved dataset YAML). A pair is a blend when the sources' 1-sigma "
        "isophotes share a pixel (see blendflag.simulate).",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        metavar="NAME|YAML",
        help="preset (great3, euclid, cfis) or a dataset YAML file",
    )
    parser.add_argument("--n", required=True, type=int, metavar="N", help="number of stamps")
    parser.add_argument("--seed", required=True, type=int, metavar="S", help="random seed")
    parser.add_argument(
        "--noise",
        metavar="SIGMA|grid",
        help="Gaussian noise sigma in ADU, or 'grid' to draw each stamp's sigma "
        "from the preset's noise grid (default: the preset's default_noise)",
    )
    parser.add_argument(
        "--fractions",
        metavar="B,S,P",
        default="0.5,0.25,0.25",
        help="fractions of blends, singles, separated pairs (default: 0.5,0.25,0.25)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes (default: all cores from 2000 stamps up)",
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="write example stamps per kind at the lowest and highest noise",
    )
    add_stamp_kind_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--out", required=True, metavar="FILE.fits", help="output FITS file")

    parser = cli.add_command(
        "simulate-field",
        func=run_simulate_field,
        help="simulate a field with a known shear (image, weight, PSF, truth)",
        description="Place galaxies at random (natural blends occur), shear them by G1,G2, "
        "convolve with the PSF, add noise; write image.fits, weight.fits, psf.fits, "
        "truth.fits and config.yaml into DIR.",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        metavar="NAME|YAML",
        help="preset (cfis, great3, euclid) or a dataset YAML file",
    )
    parser.add_argument(
        "--n-galaxies", required=True, type=int, metavar="N", help="number of galaxies"
    )
    parser.add_argument(
        "--shear",
        required=True,
        metavar="G1,G2",
        help="reduced shear applied to every galaxy, e.g. 0.02,0",
    )
    parser.add_argument("--seed", required=True, type=int, metavar="S", help="random seed")
    parser.add_argument(
        "--rotated-pairs",
        action="store_true",
        help="add a right half: the left half's scene turned by 90 degrees (cancels shape noise)",
    )
    parser.add_argument(
        "--noise",
        type=float,
        metavar="SIGMA",
        help="Gaussian noise sigma in ADU (default: the preset's default_noise)",
    )
    parser.add_argument(
        "--size",
        type=int,
        metavar="PIX",
        help="side of the square image (of each half with --rotated-pairs), "
        "pixels (default: from the density)",
    )
    parser.add_argument(
        "--density",
        type=float,
        metavar="PER_ARCMIN2",
        help="galaxies per arcmin^2 drawn (sets the size; a number-counts preset's "
        "counts are scaled to it; default: the preset's)",
    )
    parser.add_argument(
        "--shear-pairs",
        action="store_true",
        help="write DIR/plus and DIR/minus: the same "
        "galaxies and pixel noise sheared by +G and -G (compare --tiles pairs them)",
    )
    parser.add_argument(
        "--margin",
        type=int,
        metavar="PIX",
        help="distance of galaxy centres from the edges "
        "(default: half the config's stamp plus one, as compare uses)",
    )
    parser.add_argument(
        "--varying-psf",
        action="store_true",
        help="PSF size and ellipticity gradients across the image (PSF* header cards; "
        "psf.fits: the PSF at the centre)",
    )
    parser.add_argument(
        "--stars",
        type=int,
        default=None,
        metavar="N",
        help="N stars (truth STAR) [default: a survey preset's star counts; none for the "
        "study's presets]",
    )
    parser.add_argument("--workers", type=int, metavar="N", help="worker processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty DIR as a whole (no file of the old run is kept)",
    )


# ---------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------


def _parse_noise(text):
    if text is None:
        return None
    if text.strip().lower() == "grid":
        return "grid"
    try:
        value = float(text)
    except ValueError:
        raise BlendflagError(
            f"--noise must be a positive number (ADU) or 'grid', got {text!r}"
        ) from None
    if not value > 0 or value == float("inf"):
        raise BlendflagError(f"--noise must be a positive number (ADU) or 'grid', got {text!r}")
    return value


def _parse_fractions(text):
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise BlendflagError(f"--fractions must be three numbers B,S,P, got {text!r}")
    return values


def _check_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BlendflagError(f"cannot write to {parent}: permission denied")


def stamps_hdulist(stamps, truth, config, *, seed, noise, fractions):
    """The FITS layout of ``simulate``: primary (provenance), STAMPS, TRUTH, CONFIG."""
    import numpy as np
    from astropy.io import fits

    from blendflag import __version__
    from blendflag.config import to_yaml

    primary = fits.PrimaryHDU()
    h = primary.header
    h["DATASET"] = (config.name, "blendflag dataset preset")
    h["SEED"] = (int(seed), "numpy default_rng seed")
    h["NSTAMPS"] = (len(stamps), "number of stamps")
    h["NOISE"] = (
        "grid" if noise == "grid" else float(config.default_noise if noise is None else noise),
        "[adu] noise sigma, or grid",
    )
    h["PIXSCALE"] = (config.pixel_scale, "[arcsec/pixel] pixel scale")
    h["FBLEND"], h["FSINGLE"], h["FSEPAR"] = (float(f) for f in fractions)
    field = truth.meta.get("KIND") == "fieldstamps"
    h["STAMPKND"] = ("field" if field else "pairs", "stamps: study pairs or field cut-outs")
    if truth.meta.get("BLENDFRC") is not None:
        h["BLENDFRC"] = (float(truth.meta["BLENDFRC"]), "blend share asked for (field stamps)")
    h["ISOSIG"] = (config.blend.isophote_nsigma, "blend: isophotes at ISOSIG sigma overlap")
    h["ISOREF"] = (config.blend.isophote_reference, "sigma of the isophote: preset or stamp")
    h["BFVERS"] = (__version__, "blendflag version")
    h["COMMENT"] = "LABEL 1 = blend: isophotes at ISOSIG x reference sigma share a pixel."
    cube = fits.ImageHDU(np.ascontiguousarray(stamps, dtype=np.float32), name="STAMPS")
    cube.header["BUNIT"] = "adu"
    table = fits.table_to_hdu(truth)
    table.name = "TRUTH"
    text = to_yaml(config)
    conf = fits.BinTableHDU.from_columns(
        [fits.Column(name="YAML", format=f"{max(len(text), 1)}A", array=np.array([text]))],
        name="CONFIG",
    )
    return fits.HDUList([primary, cube, table, conf])


def run_simulate(args, pm) -> int:
    from blendflag.commands.common import check_output_path, guard_outputs
    from blendflag.io.atomic import atomic_output
    from blendflag.simulate.presets import load_dataset
    from blendflag.simulate.stamps import simulate_stamps

    dataset_file = args.dataset if Path(args.dataset).is_file() else None
    guard_outputs(args, (), ("out", "plot"), extra_inputs={"--dataset": dataset_file})
    out = check_output_path(args.out)
    _check_writable(out)
    plot = check_output_path(args.plot, "plot") if args.plot else None
    if plot is not None:
        _check_writable(plot)
    config = load_dataset(args.dataset)
    if args.n <= 0:
        raise BlendflagError(f"--n must be a positive integer, got {args.n}")
    if args.seed < 0:
        raise BlendflagError(f"--seed must be >= 0, got {args.seed}")
    if args.workers is not None and args.workers < 1:
        raise BlendflagError(f"--workers must be at least 1, got {args.workers}")
    noise = _parse_noise(args.noise)
    if _stamp_kind(args, config) == "field":
        stamps, truth, fractions = _field_stamps(args, pm, config, noise)
    else:
        if args.blend_fraction is not None:
            raise BlendflagError("--blend-fraction applies to --stamps field (use --fractions)")
        fractions = _parse_fractions(args.fractions)
        stamps, truth = simulate_stamps(
            config,
            args.n,
            args.seed,
            noise=noise,
            fractions=fractions,
            workers=args.workers,
            progress=not args.quiet,
        )
    hdul = stamps_hdulist(stamps, truth, config, seed=args.seed, noise=noise, fractions=fractions)
    with atomic_output(out) as tmp:
        hdul.writeto(tmp)
    if plot is not None:
        from blendflag.commands.simulate_plots import plot_examples

        plot_examples(config, plot, seed=args.seed)
    counts = {k: int(np.sum(truth["KIND"] == k)) for k in ("blend", "single", "separated")}
    print(
        f"{args.n} stamps ({counts['blend']} blends, {counts['single']} singles, "
        f"{counts['separated']} separated) -> {out}"
    )
    return 0


def _stamp_kind(args, config) -> str:
    """``--stamps``, or its default: field stamps for presets with number counts."""
    from blendflag.simulate.population import uses_counts

    return args.stamps or ("field" if uses_counts(config) else "pairs")


def _field_stamps(args, pm, config, noise):
    """(stamps, truth, fractions) around the detections of simulated fields of ``config``.

    The detection is the pipeline config's (``--config``), through the plugins;
    ``fractions`` are the shares of blends and singles drawn (no separated pairs).
    """
    from functools import partial

    from blendflag.commands.common import load_config
    from blendflag.flagging.detectors import detect_with_plugins
    from blendflag.simulate.field_stamps import simulate_field_stamps

    if noise == "grid":
        raise BlendflagError("--noise grid applies to --stamps pairs; field stamps have one noise")
    if args.fractions != "0.5,0.25,0.25":
        raise BlendflagError("--fractions applies to --stamps pairs (use --blend-fraction)")
    detect = partial(detect_with_plugins, config=load_config(args).detect)
    stamps, truth = simulate_field_stamps(
        config,
        args.n,
        args.seed,
        detect,
        noise=noise,
        workers=args.workers,
        blend_fraction=args.blend_fraction,
    )
    share = float(np.mean(np.asarray(truth["LABEL"]) > 0)) if len(truth) else 0.0
    return stamps, truth, (share, 1.0 - share, 0.0)


def run_simulate_field(args, pm) -> int:
    from blendflag.commands.common import guard_outputs, load_config
    from blendflag.pipeline.field_input import simulated_preset
    from blendflag.simulate.field import parse_shear, simulate_field
    from blendflag.simulate.field_io import check_field_outdir, field_staging, write_field

    outdir = check_field_outdir(args.out)
    dataset_file = args.dataset if Path(args.dataset).is_file() else None
    guard_outputs(args, directories=("out",), extra_inputs={"--dataset": dataset_file})
    config = simulated_preset(args.dataset, args.density)
    shear = parse_shear(args.shear)
    if args.n_galaxies <= 0:
        raise BlendflagError(f"--n-galaxies must be a positive integer, got {args.n_galaxies}")
    if args.seed < 0:
        raise BlendflagError(f"--seed must be >= 0, got {args.seed}")
    if args.noise is not None and not args.noise >= 0:
        raise BlendflagError(f"--noise must be >= 0 (ADU), got {args.noise}")
    if args.workers is not None and args.workers < 1:
        raise BlendflagError(f"--workers must be at least 1, got {args.workers}")
    pipeline = load_config(args)
    margin = args.margin
    if margin is None:  # as compare: no measurement stamp reaches across a half
        margin = max(pipeline.flag.stamp_size, pipeline.shear.stamp_size) // 2 + 1
    signs = ((1, "plus"), (-1, "minus")) if args.shear_pairs else ((1, None),)
    lines = []
    with field_staging(outdir, overwrite=args.overwrite) as staging:
        for sign, sub in signs:
            field = simulate_field(
                config,
                args.n_galaxies,
                shear=(sign * shear[0], sign * shear[1]),
                seed=args.seed,
                rotated_pairs=args.rotated_pairs,
                noise=args.noise,
                size=args.size,
                workers=args.workers,
                progress=not args.quiet,
                margin=margin,
                varying_psf=args.varying_psf or None,
                n_stars=args.stars,
            )
            field.sign = sign
            write_field(field, staging / sub if sub else staging)
            n_overlap = int((field.truth["OVERLAPS"][: args.n_galaxies] >= 0).sum())
            ny, nx = field.image.shape
            n_stars = int(field.truth["STAR"].sum()) if "STAR" in field.truth.colnames else 0
            stars = f" and {n_stars} stars" if n_stars else ""
            varying = ", varying PSF" if args.varying_psf else ""
            lines.append(
                f"{args.n_galaxies} galaxies ({n_overlap} overlapping another){stars} in a "
                f"{nx}x{ny} image{varying}, shear ({field.shear[0]:g}, {field.shear[1]:g}) -> "
                f"{outdir / sub if sub else outdir}"
            )
    print("\n".join(lines))
    return 0
