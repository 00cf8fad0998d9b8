"""``blendflag-shear flag``: add blend flags to a SExtractor catalogue."""

from __future__ import annotations

from blendflag.catalog import read_catalogue, write_annotated
from blendflag.commands.common import (
    check_output_path,
    load_config,
    load_image_and_weight,
    make_flaggers,
    network_overrides,
)
from blendflag.errors import BlendflagError
from blendflag.pipeline import Context, run_pipeline, table_from_catalogue


def register(cli) -> None:
    parser = cli.add_command(
        "flag", func=run,
        help="add BLEND_<FLAGGER> (and P_BLEND_<FLAGGER>) columns to a catalogue",
        description="Read a SExtractor FITS or FITS_LDAC catalogue, run the blend flaggers, "
                    "and write a copy with the new columns and provenance cards; every "
                    "original HDU, column and header card is kept.",
    )
    parser.add_argument("catalogue", help="SExtractor catalogue (FITS or FITS_LDAC)")
    parser.add_argument("--image", required=True, metavar="FITS", help="the catalogue's image")
    parser.add_argument("--weight", metavar="FITS", help="weight map; weight 0 masks a pixel")
    parser.add_argument("--flaggers", metavar="NAMES",
                        help="comma-separated flagger names (default: flag.flaggers of the config)")
    parser.add_argument("--weights", metavar="PATH",
                        help="weights file for the network flagger, or name=path,name=path")
    parser.add_argument("--threshold", type=float, metavar="P",
                        help="probability threshold for network flaggers")
    parser.add_argument("--out", metavar="OUT.fits", help="output catalogue")
    parser.add_argument("--in-place", action="store_true",
                        help="overwrite the input catalogue (atomically)")


def run(args, pm) -> int:
    if not args.out and not args.in_place:
        raise BlendflagError("name the output with --out (or use --in-place)")
    config = load_config(args)
    names = args.flaggers.split(",") if args.flaggers else list(config.flag.flaggers)
    flaggers = make_flaggers(pm, names, config,
                             network_overrides(names, args.weights, args.threshold))
    out = check_output_path(args.out) if args.out else None
    catalogue = read_catalogue(args.catalogue)
    table = table_from_catalogue(catalogue)
    image, weight, header = load_image_and_weight(args.image, args.weight)
    context = Context(config=config, pm=pm, image=image, weight=weight, image_header=header,
                      catalogue=catalogue, table=table)
    context.flagger_objects = flaggers
    context.flaggers = [f.name for f in flaggers]
    run_pipeline(context)
    target = out if out is not None else catalogue.path
    write_annotated(catalogue, context.annotation, target, in_place=args.in_place)
    summary = ", ".join(
        f"{f.column}: {int(context.results['flags'][f.name].flag.sum())}" for f in flaggers
    )
    print(f"{len(table)} objects ({summary}) -> {target}")
    return 0
