"""``blendflag-shear detect``: a SExtractor-style FITS_LDAC catalogue from an image."""

from __future__ import annotations

from dataclasses import replace

from blendflag.commands.common import (
    add_backend_arg,
    check_output_path,
    guard_outputs,
    load_config,
)
from blendflag.errors import PluginError
from blendflag.flagging.detectors import pop_segmentation


def register(cli) -> None:
    parser = cli.add_command(
        "detect",
        func=run,
        help="detect sources and write a SExtractor-style FITS_LDAC catalogue",
        description="Detect sources with the configured backend (detect.backend; the "
        "original study's settings by default: thresh 1.5 x global rms, deblend_nthresh "
        "32, deblend_cont 0.005, minarea 5) and write a FITS_LDAC catalogue with "
        "SExtractor's FLAGS convention.",
    )
    parser.add_argument("image", help="science image (FITS)")
    parser.add_argument("--weight", metavar="FITS", help="weight map; weight 0 masks a pixel")
    parser.add_argument(
        "--flag-map", metavar="FITS", help="integer flag map; a non-zero pixel is masked"
    )
    parser.add_argument("--out", required=True, metavar="CAT.fits", help="output catalogue")
    add_backend_arg(parser, cli.pm, "detector (overrides detect.backend of the config)")


def detect(pm, image, weight, detect_config):
    """Run the ``blendflag_detect`` hook; raise when no detector answers.

    The table comes back without the detector's segmentation map (a catalogue
    holds no 2-d arrays).
    """
    table = pm.hook.blendflag_detect(image=image, weight=weight, config=detect_config)
    if table is None:
        raise PluginError(f"no detector plugin answered for backend {detect_config.backend!r}")
    pop_segmentation(table, image.shape)
    return table


def run(args, pm) -> int:
    from blendflag.io.catalog import write_ldac
    from blendflag.io.images import load_image_and_weight

    config = load_config(args)
    if args.backend:
        config = replace(config, detect=replace(config.detect, backend=args.backend))
    guard_outputs(args, ("weight",), ("out",), extra_inputs={"IMAGE": args.image})
    out = check_output_path(args.out)
    image, weight, header = load_image_and_weight(args.image, args.weight, args.flag_map)
    table = detect(pm, image, weight, config.detect)
    write_ldac(table, out, image_header=header)
    n_blend = int(((table["FLAGS"] & 2) != 0).sum())
    print(f"{len(table)} sources ({n_blend} deblended) -> {out}")
    return 0
