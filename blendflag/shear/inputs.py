"""What a shear engine needs from a pipeline context: stamps, pixel scale, noise.

One place decides each of them, for every engine and every route:

- :func:`crop_stamps`: the engine's stamp size out of the cutout stage's stamps;
- :func:`stamp_offsets`: where each detection sits in its stamp, to the sub-pixel;
- :func:`engine_inputs`: neighbour masking (filled stamps, or light models
  for the engine's weight) and the per-object keywords the engine takes;
- :func:`context_pixel_scale`: the given scale, else the image WCS, else 1;
- :func:`context_psf_model`, :func:`object_psfs`: the PSF model (a constant
  image or one that varies) and its images at the objects;
- :func:`object_noise`: the known noise of a simulation, else the weight map
  around each object, else the stamp borders
  (:func:`blendflag.io.stamps.stamp_noise_sigma`, the project's one estimator);
- :func:`context_noise_fields`: metacal noise-correction fields turned with
  the rotated pairs of a simulated field, so that correction noise cancels.
"""

from __future__ import annotations

import numpy as np

from blendflag.io.stamps import crop_stamps  # noqa: F401 (one place for every engine)


def stamp_offsets(context, size: int) -> np.ndarray | None:
    """Each detection's position relative to the central pixel of its cropped stamp.

    The cutout stage centres a stamp on the pixel nearest the position
    (:func:`blendflag.io.stamps.cut_stamps`); this is the rest, ``(dx, dy)`` in
    pixels (within +-0.5 for odd sizes), for the engine's ``size`` after
    :func:`crop_stamps`. None without X_IMAGE and Y_IMAGE.
    """
    table = context.table
    if table is None or not {"X_IMAGE", "Y_IMAGE"} <= set(table.colnames):
        return None
    side = int(np.shape(context.stamps)[-1])
    kept = min(size, side) if size > 0 else side
    shift = side // 2 - (side - kept) // 2 - kept // 2  # central pixel moved by the crop
    xy = np.column_stack(
        [np.asarray(table[c], dtype=np.float64) - 1.0 for c in ("X_IMAGE", "Y_IMAGE")]
    )
    return xy - np.rint(xy) + shift


def engine_inputs(context, engine, stamps, noise) -> tuple[np.ndarray, dict]:
    """The stamps an engine measures and the per-object keywords it takes.

    With ``shear.neighbours: mask`` and ``neighbour_pixels`` ``segment`` or
    ``dominant``, other sources' pixels are filled with noise
    (:func:`blendflag.shear.masking.masked_stamps_for`); with ``model`` nothing is
    filled and the engine gets ``neighbour_models``
    (:mod:`blendflag.shear.neighbour_weights`); an engine that does not
    take them (an adaptive or external shape), or a catalogue without
    FLUX_AUTO, A_IMAGE, B_IMAGE, THETA_IMAGE, gets ``segment``. The mode
    used goes to ``context.results["neighbour_masking"]``. ``offsets``
    (:func:`stamp_offsets`) go to an engine that takes them.

    Raises
    ------
    BlendflagError
        ``model`` without a position for every stamp.
    """
    from blendflag.errors import BlendflagError

    size = stamps.shape[-1]
    config = engine.config
    from blendflag.shear import neighbour_weights as nw

    mode = config.neighbour_pixels if config.neighbours == "mask" else None
    columns = context.table is not None and set(nw.MODEL_COLUMNS) <= set(context.table.colnames)
    if mode == "model" and not (engine.takes_neighbour_models and columns):
        mode = "segment"  # no weight to lower, or no models: the segments filled
    offsets = stamp_offsets(context, size) if engine.takes_offsets or mode == "model" else None
    extras = {} if offsets is None or not engine.takes_offsets else {"offsets": offsets}
    if mode == "model":
        if offsets is None or len(offsets) != len(stamps):
            raise BlendflagError(
                "shear.neighbour_pixels: model needs each stamp's X_IMAGE, Y_IMAGE"
            )
        table, psf_var = context.table, nw.psf_variance(context.psf)
        extras["neighbour_models"] = nw.neighbour_models(
            table["X_IMAGE"],
            table["Y_IMAGE"],
            nw.catalogue_models(table),
            offsets,
            size,
            psf_var,
            pool=context.results.get("light_models"),  # a split image's whole catalogue
        )
    elif mode:  # other sources' pixels filled with noise
        from blendflag.shear.masking import masked_stamps_for

        stamps = masked_stamps_for(context, stamps, noise, object_keys(context, len(stamps)))
    if mode:
        context.results["neighbour_masking"] = mode
    return stamps, extras


def context_pixel_scale(context) -> float:
    """Arcsec per pixel: ``context.pixel_scale``, else the image header's WCS, else 1."""
    from blendflag.io.images import pixel_scale_from_header

    if context.pixel_scale is not None:
        return float(context.pixel_scale)
    return pixel_scale_from_header(context.image_header) or 1.0


def context_psf_model(context):
    """The context's :class:`blendflag.psf.model.PSFModel`: ``context.psf_model``, else its image.

    An image engine calls ``context_psf_model(context).image_at(x, y, size)``
    for the PSF at a cell's centre (1-based pixels).

    Raises
    ------
    BlendflagError
        Neither a PSF model nor a PSF image.
    """
    from blendflag.errors import BlendflagError
    from blendflag.psf.model import ImagePSF

    model = getattr(context, "psf_model", None)
    if model is not None:
        return model
    if context.psf is None:
        raise BlendflagError("measure_shear needs a PSF (give --psf)")
    return ImagePSF(context.psf)


def object_psfs(context) -> np.ndarray | None:
    """The PSF at every object of a context whose PSF varies, else None (use ``context.psf``).

    ``(n, P, P)`` float64, each of sum 1, with P the side of ``context.psf``
    (the model's own without one), at the objects' ``X_IMAGE``, ``Y_IMAGE``.
    """
    model = getattr(context, "psf_model", None)
    if model is None or not model.varies or context.table is None:
        return None
    size = None if context.psf is None else int(np.shape(context.psf)[0])
    x = np.asarray(context.table["X_IMAGE"], dtype=np.float64)
    y = np.asarray(context.table["Y_IMAGE"], dtype=np.float64)
    return model.images_at(x, y, size, context_pixel_scale(context))


def normalised_psf(psf, n: int, per_object: bool) -> np.ndarray:
    """A stamp engine's PSF input checked and normalised to unit sum (each, for a cube).

    ``psf`` is one 2-d image or, when ``per_object``, may be an ``(n, P, P)`` cube.

    Raises
    ------
    BlendflagError
        Not a finite image (or cube of ``n``) of at least 3x3 pixels and positive sum.
    """
    from blendflag.errors import BlendflagError

    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim == 3 and per_object:
        if len(psf) != n or min(psf.shape[1:]) < 3:
            raise BlendflagError(
                f"per-object PSFs must be an ({n}, P, P) cube, got shape {psf.shape}"
            )
        if not np.all(np.isfinite(psf)):
            raise BlendflagError("a PSF image holds NaN or inf pixels")
        totals = psf.sum(axis=(1, 2))
        if not np.all(totals > 0):
            raise BlendflagError("every PSF image must have a positive sum")
        psf = psf / totals[:, None, None]
    else:
        if psf.ndim != 2 or min(psf.shape) < 3:
            raise BlendflagError(
                f"the PSF must be a 2-d image of at least 3x3 pixels, got shape {psf.shape}"
            )
        if not np.all(np.isfinite(psf)):
            raise BlendflagError("the PSF image holds NaN or inf pixels")
        total = psf.sum()
        if not total > 0:
            raise BlendflagError(f"the PSF image must have a positive sum, got {total:g}")
        psf = psf / total
    return psf


def object_noise(context, size: int) -> np.ndarray:
    """Noise sigma (ADU) of every object of the context.

    ``context.noise_sigma`` when known (a simulation), else the weight map in
    a ``size``-pixel box around each object (:func:`noise_from_weight`), else
    :func:`blendflag.io.stamps.stamp_noise_sigma` of the cutout stamps.
    """
    n = len(context.stamps)
    if context.noise_sigma is not None:
        return np.full(n, float(context.noise_sigma))
    if context.weight is not None and context.table is not None:
        return noise_from_weight(
            context.weight, context.table["X_IMAGE"], context.table["Y_IMAGE"], size
        )
    from blendflag.io.stamps import stamp_noise_sigma

    return stamp_noise_sigma(context.stamps).astype(np.float64)


def image_noise(context) -> float:
    """One noise sigma (ADU) for a whole image: known, else from weights, else robust."""
    if context.noise_sigma is not None:
        return float(context.noise_sigma)
    if context.weight is not None:
        w = np.asarray(context.weight, dtype=np.float64)
        positive = w[w > 0]
        if positive.size:
            return float(1.0 / np.sqrt(np.median(positive)))
    image = np.asarray(context.image, dtype=np.float64)
    finite = image[np.isfinite(image)]
    return float(1.4826 * np.median(np.abs(finite - np.median(finite))))


def noise_from_weight(weight, x, y, size: int) -> np.ndarray:
    """Per-object noise sigma (ADU): 1/sqrt(median positive weight) in each stamp.

    ``x``, ``y`` are 1-based pixel positions. Objects without a positive
    weight in their stamp get NaN (flagged ``MCAL_BAD_NOISE`` later).
    """
    from blendflag.io.stamps import cut_stamps

    wstamps, _ = cut_stamps(np.asarray(weight, dtype=np.float64), x, y, size)
    wstamps = np.where(wstamps > 0, wstamps, np.nan)
    with np.errstate(all="ignore"):
        all_nan = np.isnan(wstamps).all(axis=(1, 2))
        med = np.full(len(wstamps), np.nan)
        if (~all_nan).any():
            med[~all_nan] = np.nanmedian(wstamps[~all_nan], axis=(1, 2))
        return 1.0 / np.sqrt(med)


def context_noise_fields(context, noise_sigma, size: int) -> np.ndarray | None:
    """Noise-correction fields keyed by truth identity on a simulated field, else None.

    Without a truth, ``context.results["object_keys"]`` (one identity per
    row, e.g. the row of the whole image's catalogue that a sub-tile's object
    is) keys each object's own field, so an object gets the same field however
    the image was split (:mod:`blendflag.tiling.grid`).

    Needs the truth's ``PAIR_ID`` and ``ROTATED`` columns, a known noise and
    the detections' truth matches (``context.results["truth_match"]``, from
    the ``match_truth`` stage).
    """
    truth = context.truth
    match = context.results.get("truth_match")
    given = context.results.get("object_keys")
    if match is None and given is not None:  # the caller's identities (a split image)
        keys = np.asarray(given, dtype=np.int64)
        return paired_noise_fields(keys, np.zeros(len(keys), bool), noise_sigma, size, context.seed)
    if match is None or not context.noise_sigma:
        return None
    if "ROTATED" not in truth.colnames or "PAIR_ID" not in truth.colnames:
        return None
    matched = match >= 0
    index = np.maximum(match, 0)
    keys = np.where(matched, np.asarray(truth["PAIR_ID"])[index], -1).astype(np.int64)
    rotated = np.where(matched, np.asarray(truth["ROTATED"])[index], False)
    return paired_noise_fields(keys, rotated, noise_sigma, size, context.seed)


def context_correction_field(context) -> np.ndarray | None:
    """An image engine's noise-correction field that follows a simulated scene, else None.

    On a blendflag ±g field sheared uniformly (the truth's ``SHRSCENE``) the
    pixel noise of each image is one set of draws permuted to follow its
    sheared scene (:mod:`blendflag.simulate.scene_noise`), so that a galaxy
    sees the same noise under +g and -g. An image engine's correction field
    must follow it too, or the correction's noise no longer cancels between
    the two images (as a stamp engine's fields, keyed by the true galaxy, do:
    :func:`context_noise_fields`). The field is one unit-variance draw of
    ``context.seed`` in the unsheared frame (on a rotated-pair field, the
    right half the left half turned as the twins are), permuted as the
    simulation permuted its noise for this image's own shear. None for any
    other image (an engine then seeds its cells' fields itself) and for a
    sub-tile.

    Returns
    -------
    numpy.ndarray or None
        float64 ``(ny, nx)`` field of unit variance.
    """
    truth, image = context.truth, context.image
    if truth is None or image is None or context.true_shear is None:
        return None
    if not truth.meta.get("SHRSCENE") or context.results.get("frame") is not None:
        return None
    from blendflag.shear.units import rotated_halves
    from blendflag.simulate.field_geometry import position_matrix
    from blendflag.simulate.scene_noise import field_noise_order

    scenes = 2 if rotated_halves(context.image_header, truth) else 1
    ny, nx = image.shape
    if scenes == 2 and nx != 2 * ny:  # turned twins need square halves
        return None
    left = np.random.default_rng(int(context.seed)).standard_normal((ny, nx // scenes))
    # a twin at (x, y) of the left half sits at (side - 1 - y, x) of the right (0-based)
    base = np.concatenate([left, np.rot90(left, -1)], axis=1) if scenes == 2 else left
    own = [context.shear_sign * g for g in context.true_shear]  # true_shear is the +g's
    order = field_noise_order(image.shape, position_matrix(own), scenes)
    return base.ravel()[order].reshape(image.shape)


#: Keys of detections without a true galaxy start here (above every truth key).
UNMATCHED_KEYS = 1 << 40


def object_keys(context, n: int) -> np.ndarray:
    """A key per detection that names the same galaxy in every image of a simulation.

    The ``ID`` of the matched true galaxy (the same in the +g and -g images,
    whatever the detection order), else ``UNMATCHED_KEYS`` plus the
    detection's index; without a truth, ``context.results["object_keys"]``
    when given, else the index alone.
    """
    truth = context.truth
    match = context.results.get("truth_match")
    if match is None and context.results.get("object_keys") is not None:
        return np.asarray(context.results["object_keys"], dtype=np.int64)
    if match is None or truth is None or "ID" not in truth.colnames:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(truth["ID"], dtype=np.int64)[np.maximum(match, 0)]
    return np.where(match >= 0, ids, UNMATCHED_KEYS + np.arange(n)).astype(np.int64)


#: Streams of the noise-correction fields, apart from every other use of the seed.
_FIELD_STREAM = 0x6E6F697365
_UNMATCHED_STREAM = 0x756E6D61


def paired_noise_fields(keys, rotated, noise_sigma, size: int, seed: int) -> np.ndarray:
    """Metacal noise-correction fields keyed by truth identity, turned with rotated pairs.

    The noise correction adds a pure-noise image to every object; drawn
    independently per detection it doubles the measurement noise of a pair.
    Here the field of an object is drawn from ``(seed, key)`` where ``key`` is
    its true galaxy's rotated-pair id: both members of a rotated pair get the
    same field, turned by 90 degrees for the right (rotated) member so that the
    correction noise cancels in the pair as the intrinsic shapes do, and the
    same galaxy in the +g and -g images of a shear pair gets the same field,
    whatever order it was detected in. Objects without a key (-1) get their
    own field. Each is still an honest noise field of the object's sigma.

    Parameters
    ----------
    keys : numpy.ndarray of int
        Rotated-pair id of each detection's true galaxy, -1 when unmatched.
    rotated : numpy.ndarray of bool
        Whether a detection's galaxy is in the rotated (right) half.
    noise_sigma : float or numpy.ndarray
        Noise sigma, one or per detection (ADU).
    size : int
        Stamp side (pixels).
    seed : int
        Seed of the fields.

    Returns
    -------
    numpy.ndarray
        ``(n, size, size)`` float32, ADU.
    """
    keys = np.asarray(keys, dtype=np.int64)
    fields = np.empty((len(keys), size, size), dtype=np.float32)
    for i, key in enumerate(keys):
        stream = (
            [int(seed), _FIELD_STREAM, int(key)] if key >= 0 else [int(seed), _UNMATCHED_STREAM, i]
        )
        field = np.random.default_rng(stream).standard_normal((size, size), dtype=np.float32)
        fields[i] = np.rot90(field, -1) if (key >= 0 and rotated[i]) else field
    sigma = np.broadcast_to(np.asarray(noise_sigma, dtype=np.float32), (len(keys),))
    return fields * sigma[:, None, None]


def checked_noise_fields(noise_fields, n: int, shape: tuple[int, int]) -> np.ndarray | None:
    """A stamp engine's ``noise_fields`` as ``(n, ny, nx)`` float64 (ADU); None when not given.

    Parameters
    ----------
    noise_fields : array_like or None
        One noise-correction field per stamp (:func:`paired_noise_fields`).
    n : int
        Stamps.
    shape : tuple of int
        A stamp's ``(ny, nx)``, pixels.

    Raises
    ------
    ValueError
        Not one field per stamp.
    """
    if noise_fields is None:
        return None
    fields = np.asarray(noise_fields, dtype=np.float64).reshape(-1, *shape)
    if len(fields) != n:
        raise ValueError(f"{len(fields)} noise fields for {n} stamps")
    return fields
