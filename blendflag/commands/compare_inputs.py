"""``compare``'s input from your files: ``--image``, ``--psf``, ``--truth``, ``--true-shear``."""

from __future__ import annotations


def user_input(args):
    """The ``FieldInput`` of ``--image``/``--psf``/..., with the truth of ``--truth``.

    The true shear comes from ``--true-shear`` or else from the truth file's
    ``SHEAR1``/``SHEAR2`` cards (``simulate-field`` writes them). The image's
    ``NOISE`` card (ADU), when present, is its known noise sigma, truth or not.
    """
    from blendflag.io.images import image_identity
    from blendflag.pipeline.field_input import file_input
    from blendflag.simulate.field import parse_shear
    from blendflag.simulate.field_io import header_noise, read_field_info

    true_shear = parse_shear(args.true_shear) if args.true_shear else None
    info = None
    if args.truth:
        # the truth's columns are checked where it is read: one line naming what is missing
        info = read_field_info(args.image, args.truth, name=image_identity(args.image))
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
    data.noise_sigma = header_noise(data.header)
    if info is not None:
        data.truth, data.sign, data.field = info["truth"], info["sign"], info["field"]
        data.noise_sigma, data.reference_noise = info["noise"], info["reference_noise"]
    if true_shear is not None:
        data.description["true_shear"] = list(true_shear)
    return data
