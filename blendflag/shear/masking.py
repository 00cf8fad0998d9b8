"""Neighbour masking: other sources' pixels in a stamp, weighted 0 and filled with noise.

The uberseg / noise-fill approach of ShapePipe: in the stamp of each object,
the pixels that the detection's segmentation map gives to *another* source
get zero weight and are replaced by Gaussian noise of the object's own noise
sigma, so that the shape measurement (every metacalibration version) sees the
object alone on a noise background; objects with neighbours can then stay in
the sample instead of being cut.

- :func:`neighbour_masks`: the masks, cut with the geometry of
  :func:`blendflag.io.stamps.cut_stamps`;
- :func:`fill_neighbours`: the fill, reproducible per object: the noise of an
  object is drawn from a generator keyed by ``(seed, key)``, so that the same
  galaxy (the same key, e.g. its truth identity) gets the same fill in two
  simulations with identical pixel noise (the +g and -g members of a pair);
- :func:`masked_stamps_for`: both, for the stamps a shear engine measures
  (``shear.neighbours: mask``).
"""

from __future__ import annotations

import numpy as np

from blendflag.errors import BlendflagError

#: Tag of the fill generators, apart from the noise-correction fields' and bootstrap's.
FILL_TAG = 0x6E65696768  # "neigh"
#: Largest segment id :func:`neighbour_masks` cuts exactly (float32 stamps).
MAX_SEGMENT_ID = 2**24
#: Pixels (1-based positions) within which a catalogue object is the same as a detection.
MATCH_RADIUS = 1.0


def neighbour_masks(segmentation, x, y, numbers, size: int, models=None) -> np.ndarray:
    """Stamp pixels that belong to other sources, per object.

    Parameters
    ----------
    segmentation : numpy.ndarray
        2-d integer segmentation map of the image: 0 for sky, else the id
        (NUMBER) of the source a pixel belongs to.
    x, y : array_like
        Object positions, 1-based pixels (SExtractor X_IMAGE, Y_IMAGE).
    numbers : array_like
        Segment id of each object (its NUMBER); 0 when it has no segment, in
        which case every source in its stamp is a neighbour.
    size : int
        Stamp side in pixels, centred as :func:`blendflag.io.stamps.cut_stamps`
        centres (on the pixel nearest the position).
    models : numpy.ndarray or None
        ``(n, 4)`` light model of each object: FLUX_AUTO (ADU), A_IMAGE,
        B_IMAGE (pixels) and THETA_IMAGE (degrees), an elliptical Gaussian.
        When given, a pixel of another source's segment is a neighbour pixel
        only where that source's model is brighter than the object's own
        (:func:`dominant_pixels`); a segment of no listed object stays whole.

    Returns
    -------
    numpy.ndarray
        ``(n, size, size)`` bool: True where the segment is neither sky nor
        the object's own (and, with ``models``, its source outshines the
        object). Pixels outside the image are not neighbours.

    Raises
    ------
    BlendflagError
        Positions and ids differ in length, or ids too large to cut exactly.
    """
    from blendflag.io.stamps import cut_stamps

    seg = np.asarray(segmentation)
    numbers = np.atleast_1d(np.asarray(numbers, dtype=np.int64))
    if numbers.shape != np.atleast_1d(np.asarray(x)).shape:
        raise BlendflagError(
            f"{len(numbers)} segment ids for {np.size(x)} positions: one id per object"
        )
    if seg.size and int(seg.max()) >= MAX_SEGMENT_ID:
        raise BlendflagError(f"segmentation ids must stay below {MAX_SEGMENT_ID}")
    # the map cut as an image: the same rows and columns as the object's stamp
    ids, _ = cut_stamps(seg.astype(np.float32), x, y, size)
    ids = np.rint(ids).astype(np.int64)
    masks = (ids != 0) & (ids != numbers[:, None, None])
    if models is not None:
        masks = dominant_pixels(masks, ids, x, y, numbers, np.asarray(models, float))
    return masks


def dominant_pixels(masks, ids, x, y, numbers, models) -> np.ndarray:
    """Keep the neighbour pixels where the neighbour's light model outshines the object's.

    Two touching sources share a segmentation boundary that deblending draws
    pixel by pixel, and it moves by whole pixels between images that differ
    only by a small shear: masking a whole neighbour segment then changes the
    object's own light by much more than the shear does (sigma_m of the
    default field's ``all_masked`` 0.0041, against 0.0026 with this rule,
    seed 1). Here the boundary inside the neighbour's segment is where the
    two catalogue models (elliptical Gaussians of FLUX_AUTO, A, B, THETA) are
    equally bright, a smooth curve near the valley between the sources.

    Parameters
    ----------
    masks : numpy.ndarray
        ``(n, S, S)`` bool whole-segment neighbour masks.
    ids : numpy.ndarray
        ``(n, S, S)`` segment id of every stamp pixel.
    x, y, numbers, models
        As :func:`neighbour_masks`.

    Returns
    -------
    numpy.ndarray
        The masks, restricted; a new array.
    """
    from blendflag.shear.neighbour_weights import gaussian_parameters

    x = np.asarray(x, dtype=np.float64) - 1.0  # 0-based
    y = np.asarray(y, dtype=np.float64) - 1.0
    log_peak, inv = gaussian_parameters(models)
    inv = inv.T  # (3, n): xx, xy, yy
    order = np.argsort(numbers, kind="stable")
    sorted_ids = numbers[order]
    size = masks.shape[-1]
    grid = np.arange(size) - size // 2
    out = masks.copy()
    for i in np.flatnonzero(masks.any(axis=(1, 2))):
        py, px = np.nonzero(masks[i])
        where = np.minimum(np.searchsorted(sorted_ids, ids[i][py, px]), len(order) - 1)
        known = sorted_ids[where] == ids[i][py, px]  # the segment's object is listed
        other = order[where[known]]
        X = np.rint(x[i]) + grid[px[known]]
        Y = np.rint(y[i]) + grid[py[known]]
        keep = np.ones(len(py), dtype=bool)
        own = np.full(known.sum(), i)
        keep[known] = _log_light(other, X, Y, x, y, log_peak, inv) > _log_light(
            own, X, Y, x, y, log_peak, inv
        )
        out[i][py, px] = keep
    return out


def fill_neighbours(stamps, masks, noise_sigma, keys, seed: int) -> np.ndarray:
    """Replace the masked pixels of each stamp by Gaussian noise.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, S, S)`` background-subtracted stamps (ADU); not modified.
    masks : numpy.ndarray
        ``(n, S, S)`` bool, True on the pixels to replace
        (:func:`neighbour_masks`). This is also the zero-weight mask of the
        filled stamps, for an engine that takes a weight map.
    noise_sigma : float or array_like
        Per-pixel noise sigma of each object (ADU), scalar or ``(n,)``; a
        value that is not finite and positive fills with 0.
    keys : array_like
        ``(n,)`` non-negative integer identity of each object. The fill of an
        object is ``sigma * N(0, 1)`` drawn on the whole ``S x S`` stamp from
        ``numpy.random.default_rng([seed, FILL_TAG, key])`` and taken on its
        masked pixels: the same (seed, key) gives the same noise on the same
        stamp pixel, whatever the rest of the mask.
    seed : int
        Non-negative run seed.

    Returns
    -------
    numpy.ndarray
        ``(n, S, S)`` float32, a new array: masked pixels filled, every other
        pixel equal to the input's (bit for bit after the cast to float32).

    Raises
    ------
    BlendflagError
        Shapes that do not match, or negative keys or seed.
    """
    out = np.array(stamps, dtype=np.float32, copy=True)
    masks = np.asarray(masks, dtype=bool)
    if out.ndim != 3 or masks.shape != out.shape:
        raise BlendflagError(
            f"stamps {out.shape} and masks {masks.shape} must be the same (n, S, S) cube"
        )
    n = len(out)
    keys = np.atleast_1d(np.asarray(keys))
    if keys.shape != (n,) or not np.issubdtype(keys.dtype, np.integer):
        raise BlendflagError(f"fill keys must be {n} integers, one per stamp")
    if int(seed) < 0 or (n and int(keys.min()) < 0):
        raise BlendflagError("fill seed and keys must be non-negative integers")
    sigma = np.broadcast_to(np.asarray(noise_sigma, dtype=np.float64), (n,))
    sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, 0.0)
    for i in np.flatnonzero(masks.any(axis=(1, 2))):
        rng = np.random.default_rng([int(seed), FILL_TAG, int(keys[i])])
        noise = rng.standard_normal(out.shape[1:], dtype=np.float32)
        out[i][masks[i]] = np.float32(sigma[i]) * noise[masks[i]]
    return out


def _log_light(k, X, Y, x, y, log_peak, inv) -> np.ndarray:
    """Log of the Gaussian models of objects ``k`` at pixels ``(X, Y)`` (0-based)."""
    dx, dy = X - x[k], Y - y[k]
    return log_peak[k] - 0.5 * (inv[0, k] * dx * dx + 2 * inv[1, k] * dx * dy + inv[2, k] * dy * dy)


def context_segment_ids(context) -> tuple[np.ndarray, np.ndarray]:
    """The segmentation map of a context and the segment id of each of its objects.

    After detection: ``context.segmentation`` (from the ``detect`` stage) and
    the NUMBER column. With a catalogue given (no segmentation yet): the
    configured detector runs once on the image for its map (kept in
    ``context.segmentation`` and ``context.results["segment_ids"]``); a
    catalogue object within :data:`MATCH_RADIUS` pixels of a detection takes
    that detection's NUMBER (so a catalogue written by the same detector
    masks exactly as detection does), any other the segment under its
    position.

    Returns
    -------
    segmentation : numpy.ndarray
        int32 map of the image.
    ids : numpy.ndarray
        int64 segment id per row of ``context.table``.

    Raises
    ------
    BlendflagError
        No image, or the detector gives no segmentation map.
    """
    from blendflag.flagging.detectors import pop_segmentation

    if context.segmentation is not None:
        ids = context.results.get("segment_ids")
        if ids is None:
            if "NUMBER" not in context.table.colnames:
                raise BlendflagError("neighbour masking needs the detections' NUMBER column")
            ids = context.table["NUMBER"]
        return context.segmentation, np.asarray(ids, dtype=np.int64)
    backend = context.config.detect.backend
    missing = BlendflagError(
        f"shear.neighbours: mask needs a segmentation map and detector {backend!r} gives none"
    )
    if context.catalogue is None or context.image is None:
        raise missing
    found = context.pm.hook.blendflag_detect(
        image=context.image, weight=context.weight, config=context.config.detect
    )
    seg = pop_segmentation(found, context.image.shape) if found is not None else None
    if seg is None:
        raise missing
    x = np.asarray(context.table["X_IMAGE"], dtype=np.float64)
    y = np.asarray(context.table["Y_IMAGE"], dtype=np.float64)
    ix = np.clip(np.rint(x - 1).astype(np.int64), 0, seg.shape[1] - 1)
    iy = np.clip(np.rint(y - 1).astype(np.int64), 0, seg.shape[0] - 1)
    ids = seg[iy, ix].astype(np.int64)
    nearest = _nearest(x, y, found["X_IMAGE"], found["Y_IMAGE"], MATCH_RADIUS)
    matched = nearest >= 0
    ids[matched] = np.asarray(found["NUMBER"], dtype=np.int64)[nearest[matched]]
    context.segmentation = seg
    context.results["segment_ids"] = ids
    return seg, ids


def _nearest(x, y, fx, fy, radius: float) -> np.ndarray:
    """Index of the point ``(fx, fy)`` nearest each ``(x, y)`` within ``radius``, or -1."""
    fx = np.asarray(fx, dtype=np.float64)
    fy = np.asarray(fy, dtype=np.float64)
    order = np.argsort(fx)
    sx, sy = fx[order], fy[order]
    lo = np.searchsorted(sx, x - radius)
    hi = np.searchsorted(sx, x + radius)
    out = np.full(len(x), -1, dtype=np.int64)
    for i in np.flatnonzero(hi > lo):
        d2 = (sx[lo[i] : hi[i]] - x[i]) ** 2 + (sy[lo[i] : hi[i]] - y[i]) ** 2
        j = int(np.argmin(d2))
        if d2[j] <= radius**2:
            out[i] = order[lo[i] + j]
    return out


def masked_stamps_for(context, stamps, noise_sigma, keys) -> np.ndarray:
    """The stamps a shear engine measures, with their neighbours masked and filled.

    Parameters
    ----------
    context : blendflag.pipeline.stages.Context
        Image, objects table, cutout stamps (``context.stamps``), seed, and
        the segmentation (:func:`context_segment_ids`).
    stamps : numpy.ndarray
        ``(n, s, s)`` stamps the engine measures: ``context.stamps``
        centre-cropped to ``s`` pixels (ADU).
    noise_sigma : array_like
        ``(n,)`` noise sigma per object (ADU), the fill's.
    keys : array_like
        ``(n,)`` non-negative integer identity per object (see
        :func:`fill_neighbours`); the truth identity on a simulated field.

    Returns
    -------
    numpy.ndarray
        ``(n, s, s)`` float32 filled stamps. The number of masked pixels per
        object is stored in ``context.results["neighbour_pixels"]`` (int32).

    Raises
    ------
    BlendflagError
        No segmentation to be had (:func:`context_segment_ids`), or stamps
        that do not match the context's objects.
    """
    from blendflag.io.stamps import crop_stamps

    stamps = np.asarray(stamps)
    if context.table is None or context.stamps is None or len(stamps) != len(context.table):
        raise BlendflagError("neighbour masking needs the context's objects and their stamps")
    seg, ids = context_segment_ids(context)
    x = np.asarray(context.table["X_IMAGE"], dtype=np.float64)
    y = np.asarray(context.table["Y_IMAGE"], dtype=np.float64)
    models = None
    if context.config.shear.neighbour_pixels == "dominant":
        from blendflag.shear.neighbour_weights import catalogue_models

        models = catalogue_models(context.table, "dominant")
    # the cutout's geometry, then the engine's crop of it
    masks = neighbour_masks(seg, x, y, ids, int(np.shape(context.stamps)[-1]), models)
    masks = crop_stamps(masks, int(stamps.shape[-1]))
    context.results["neighbour_pixels"] = masks.sum(axis=(1, 2)).astype(np.int32)
    return fill_neighbours(stamps, masks, noise_sigma, keys, int(context.seed))
