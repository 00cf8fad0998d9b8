"""``compare``'s input from your files: ``--image``, ``--psf``, ``--truth``, ``--true-shear``."""

from __future__ import annotations


def user_input(args):
    """The ``FieldInput`` of ``--image``/``--psf``/..., with the truth of ``--truth``.

    The true shear comes from ``--true-shear`` or else from the truth file's
    ``SHEAR1``/``SHEAR2`` cards (``simulate-field`` writes them).
    """
    from blendflag.pipeline.field_input import file_input
    from blendflag.simulate.field import parse_shear

    true_shear = parse_shear(args.true_shear) if args.true_shear else None
    info = None
    if args.truth:
        from blendflag.io.catalog import read_catalogue
        from blendflag.simulate.field_io import read_field_info

        read_catalogue(args.truth)  # a readable FITS table, else one line
        info = read_field_info(args.image, args.truth)
        if true_shear is None:
            true_shear = info["shear"]
    data = file_input(
        args.image,
        args.psf,
        args.catalogue,
        args.weight,
        args.pixel_scale,
        recentre_psf=args.recentre_psf,
        true_shear=true_shear,
        flag_map=args.flag_map,
    )
    if info is not None:
        data.truth, data.sign = info["truth"], info["sign"]
        data.noise_sigma, data.reference_noise = info["noise"], info["reference_noise"]
    if true_shear is not None:
        data.description["true_shear"] = list(true_shear)
    return data
