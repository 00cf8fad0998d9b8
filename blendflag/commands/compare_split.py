"""``compare --image`` split into sub-tiles (``--sub-tile``; see :mod:`blendflag.tiling.grid`)."""

from __future__ import annotations

from blendflag.errors import BlendflagError


def run_split(args, pm, config, names, engine_cls, workers, core):
    """``compare --image`` on a large image: sub-tiles as tasks; returns the combined summary.

    The work directory is ``--out-dir`` (a rerun resumes), else a temporary
    one removed at the end.
    """
    import tempfile

    from blendflag.simulate.field import parse_shear
    from blendflag.tiling.split_image import SplitImage, run_split_compare

    if args.catalogue is None:
        raise BlendflagError(
            "a split image needs --catalogue (run 'blendflag-shear detect' first), "
            "or --sub-tile 0 to run it whole"
        )
    if args.truth or args.catalogue_out:
        raise BlendflagError(
            "--truth and --catalogue-out are not available on a split image: give "
            "--true-shear, or --sub-tile 0 to run it whole"
        )
    true_shear = parse_shear(args.true_shear) if args.true_shear else None
    with tempfile.TemporaryDirectory(prefix="blendflag-subtiles-") as tmp:
        work = args.out_dir
        if work is None:
            work = tmp
            if not args.quiet:
                print(
                    "sub-tiles in a temporary directory: give --out-dir to make the run resumable"
                )
        split = SplitImage(
            args.image, args.psf, args.catalogue, args.weight, core=core, true_shear=true_shear,
            pixel_scale=args.pixel_scale, recentre_psf=args.recentre_psf,
        )  # fmt: skip
        result = run_split_compare(
            pm, config, names, engine_cls, split, work_dir=work, seed=args.seed,
            workers=workers, scheduler=args.scheduler, quiet=args.quiet,
            n_bootstrap=args.bootstrap, weights=args.weights,
            on_message=None if args.quiet else print,
            psf_check="strict" if args.strict_psf else "warn",
        )  # fmt: skip
    return result
