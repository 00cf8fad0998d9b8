"""``blendflag-shear flag``: add blend flags to a SExtractor catalogue."""

from __future__ import annotations

from blendflag.commands.common import (
    add_flagger_options,
    check_output_path,
    flagger_option_values,
    guard_outputs,
    load_config,
)
from blendflag.errors import BlendflagError
from blendflag.flagging.flaggers import flagger_overrides, make_flaggers


def register(cli) -> None:
    parser = cli.add_command(
        "flag",
        func=run,
        help="add BLEND_<FLAGGER> (and P_BLEND_<FLAGGER>) columns to a catalogue",
        description="Read a SExtractor FITS or FITS_LDAC catalogue, run the blend flaggers, "
        "and write a copy with the new columns and provenance cards; every "
        "original HDU, column and header card is kept.",
    )
    parser.add_argument("catalogue", nargs="?", help="SExtractor catalogue (FITS or FITS_LDAC)")
    parser.add_argument("--image", metavar="FITS", help="the catalogue's image")
    parser.add_argument("--weight", metavar="FITS", help="weight map; weight 0 masks a pixel")
    parser.add_argument(
        "--flag-map", metavar="FITS", help="integer flag map; a non-zero pixel is masked"
    )
    parser.add_argument(
        "--flaggers",
        metavar="NAMES",
        help="comma-separated flagger names (default: flag.flaggers of the config)",
    )
    add_flagger_options(parser, ("weights", "threshold", "views"), cli.pm)
    parser.add_argument("--out", metavar="OUT.fits", help="output catalogue")
    parser.add_argument(
        "--in-place", action="store_true", help="overwrite the input catalogue (atomically)"
    )
    parser.add_argument(
        "--tiles",
        metavar="GLOB|LIST",
        help="many tiles: a glob of images with catalogue.fits beside them, or "
        "a file of 'image=... catalogue=...' lines (one Dask task each)",
    )
    parser.add_argument("--out-dir", metavar="DIR", help="with --tiles: where catalogues go")
    parser.add_argument("--workers", type=int, help="with --tiles: local Dask workers")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="with --tiles: a Dask scheduler")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args, pm) -> int:
    from blendflag.io.catalog import write_annotated
    from blendflag.pipeline.stages import flag_catalogue_file

    if args.tiles:
        return run_tiles_command(args, pm)
    if args.catalogue is None or args.image is None:
        raise BlendflagError("name a CATALOGUE and its --image (or use --tiles)")
    if not args.out and not args.in_place:
        raise BlendflagError("name the output with --out (or use --in-place)")
    guard_outputs(args, ("image", "weight"), ("out",), extra_inputs={"CATALOGUE": args.catalogue})
    config = load_config(args)
    names = args.flaggers.split(",") if args.flaggers else list(config.flag.flaggers)
    overrides = flagger_overrides(pm, names, **flagger_option_values(args))
    flaggers = make_flaggers(pm, names, config, overrides)
    out = check_output_path(args.out) if args.out else None
    context = flag_catalogue_file(
        pm,
        config,
        flaggers,
        args.catalogue,
        args.image,
        args.weight,
        args.flag_map,
        quiet=args.quiet,
    )
    catalogue, table = context.catalogue, context.table
    target = out if out is not None else catalogue.path
    write_annotated(catalogue, context.annotation, target, in_place=args.in_place)
    summary = ", ".join(
        f"{f.column}: {int(context.results['flags'][f.name].flag.sum())}" for f in flaggers
    )
    print(f"{len(table)} objects ({summary}) -> {target}")
    return 0


def run_tiles_command(args, pm) -> int:
    """``flag --tiles``: one task per tile, resumable."""
    from blendflag._runtime.parallel import idle_cores
    from blendflag.tiling.runner import run_tiles
    from blendflag.tiling.settings import RunSettings
    from blendflag.tiling.tasks import flag_tile
    from blendflag.tiling.tile_list import read_tiles

    if not args.out_dir:
        raise BlendflagError("--tiles needs --out-dir")
    if args.catalogue or args.out or args.in_place:
        raise BlendflagError("--tiles replaces CATALOGUE, --out and --in-place")
    config = load_config(args)
    names = args.flaggers.split(",") if args.flaggers else list(config.flag.flaggers)
    make_flaggers(pm, names, config, flagger_overrides(pm, names, **flagger_option_values(args)))
    tiles = read_tiles(args.tiles)
    settings = RunSettings.for_run(
        pm, config, names, "none", 0, weights=args.weights, threshold=args.threshold,
        views=args.views,
    )  # fmt: skip
    status = run_tiles(
        tiles,
        settings,
        args.out_dir,
        workers=args.workers or idle_cores(),
        scheduler=args.scheduler,
        quiet=args.quiet,
        task=flag_tile,
    )
    print(
        f"tiles: {len(status['done'])} flagged, {len(status['skipped'])} already done, "
        f"{len(status['failed'])} failed -> {args.out_dir}"
    )
    for failure in status["failed"]:
        print(f"  failed {failure['tile']}: {failure['reason']}")
    if status["failed"]:
        raise BlendflagError(
            f"{len(status['failed'])} of {len(tiles)} tiles failed (listed "
            "above); rerun the same command to retry them"
        )
    return 0
