"""What the sub-tiles of a split image share, made once before the tasks (see subtiles.py).

:func:`prepare_subtiles` checks the inputs as ``compare --image`` does (the
catalogue's positions, the PSF, the pixel scale, unmasked NaN pixels), assigns
every catalogue row to one sub-tile, measures the median object noise (the
flaggers' reference depth in the whole image's run) region by region, and,
when the engine masks neighbours, runs the detector once on the whole image
for its segmentation map; it finds the stars of the whole catalogue's stellar
locus and checks the PSF against them. It writes ``prep.npz`` and ``segmentation.npy`` into
the work directory atomically and skips the work when they are already there
for the same inputs and settings.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from blendflag.errors import CatalogueError
from blendflag.io.images import image_shape, read_image_section
from blendflag.tiling.grid import SubTile, owners, subtile_grid, subtile_margin

PREP = "prep.npz"
SEGMENTATION = "segmentation.npy"


def _stored(path: Path, key: str):
    try:
        with np.load(path, allow_pickle=False) as data:
            return str(data[key])
    except (OSError, KeyError, ValueError, EOFError):
        return None


def _region_noise(config, image, weight, x, y) -> np.ndarray:
    """Each object's noise sigma (ADU) as the stamp engine measures it (``object_noise``)."""
    from blendflag.io.stamps import cut_stamps
    from blendflag.shear.inputs import crop_stamps, object_noise

    stamps, _ = cut_stamps(image, x, y, config.flag.stamp_size, weight=weight)
    size = crop_stamps(stamps, int(config.shear.stamp_size)).shape[-1]
    view = SimpleNamespace(
        stamps=stamps,
        noise_sigma=None,
        weight=weight,
        table={"X_IMAGE": x, "Y_IMAGE": y},
    )
    return object_noise(view, size)


def _segment_ids(pm, config, image_path, weight_path, catalogue):
    """The whole image's segmentation map and each catalogue row's segment (as masking does)."""
    from blendflag.io.images import load_image_and_weight
    from blendflag.pipeline.stages import Context
    from blendflag.shear.masking import context_segment_ids

    image, weight, _ = load_image_and_weight(image_path, weight_path)
    context = Context(
        config=config,
        pm=pm,
        image=image,
        weight=weight,
        catalogue=catalogue,
        table=catalogue.table,
    )
    seg, ids = context_segment_ids(context)
    return np.asarray(seg, dtype=np.int32), ids


def _pixel_scale(image, psf_header, pixel_scale: float | None) -> float:
    """Arcsec per pixel: ``pixel_scale``, else the image's header, else the PSF's.

    Raises
    ------
    CatalogueError
        None of them gives one.
    """
    from astropy.io import fits

    from blendflag.io.images import pixel_scale_from_header

    header = fits.getheader(image, 0 if fits.getheader(image).get("NAXIS") == 2 else 1)
    scale = pixel_scale or pixel_scale_from_header(header) or pixel_scale_from_header(psf_header)
    if scale is None:
        raise CatalogueError(
            "no pixel scale in the image header (CD/CDELT/PIXSCALE): give --pixel-scale"
        )
    return scale


def _grid_subtiles(grid, image, psf, catalogue, weight) -> list[SubTile]:
    """One :class:`SubTile` per ``(core, region)`` of ``grid`` (pixel boxes), in grid order."""
    return [
        SubTile(
            name=f"sub{k:04d}",
            index=k,
            core=c,
            region=r,
            image=str(image),
            psf=str(psf),
            catalogue=str(catalogue),
            weight=None if weight is None else str(weight),
        )
        for k, (c, r) in enumerate(grid)
    ]


def _object_noise(config, image, weight, subtiles, owner, positions) -> np.ndarray:
    """Each object's noise sigma (ADU), measured in its sub-tile's region; checks every core.

    Parameters
    ----------
    config : blendflag.config.PipelineConfig
    image, weight : path-like or None
        The whole image's files (``weight`` optional).
    subtiles : list of SubTile
    owner : numpy.ndarray
        The sub-tile index of each object.
    positions : (numpy.ndarray, numpy.ndarray)
        The objects' x and y, 1-based pixels of the whole image.

    Returns
    -------
    numpy.ndarray
        float64 noise sigma per object, ADU (NaN for an object of no sub-tile).

    Raises
    ------
    CatalogueError
        NaN/inf pixels that the weight map does not mask.
    """
    from blendflag.io.images import check_finite, mask_bad_weights

    x, y = positions
    noise = np.full(len(x), np.nan)
    for sub in subtiles:
        img, _ = read_image_section(image, sub.core)
        wgt = None
        if weight is not None:
            wgt = mask_bad_weights(read_image_section(weight, sub.core)[0], Path(weight).name)
        check_finite(img, wgt, f"image {Path(image).name}")
        rows = np.flatnonzero(owner == sub.index)
        if rows.size:
            rx0, _, ry0, _ = sub.region
            img, _ = read_image_section(image, sub.region)
            if weight is not None:
                wgt = mask_bad_weights(read_image_section(weight, sub.region)[0], "")
            noise[rows] = _region_noise(config, img, wgt, x[rows] - rx0, y[rows] - ry0)
        del img, wgt
    return noise


def _masking_arrays(pm, config, inputs, positions, work: Path) -> dict:
    """Write the whole image's segmentation map; return what ``prep.npz`` keeps for masking.

    Parameters
    ----------
    pm : pluggy.PluginManager
    config : blendflag.config.PipelineConfig
    inputs : (path-like, path-like or None, Catalogue)
        The image, the weight map and the read catalogue.
    positions : (numpy.ndarray, numpy.ndarray)
        The objects' x and y, 1-based pixels.
    work : pathlib.Path
        The work directory (``segmentation.npy`` is written there atomically).

    Returns
    -------
    dict
        ``segment_ids`` (each row's segment) and, when the catalogue has the
        light-model columns, ``light_models`` (x, y in pixels, then the columns).
    """
    from blendflag.io.atomic import atomic_output
    from blendflag.shear.neighbour_weights import MODEL_COLUMNS

    image, weight, cat = inputs
    seg, ids = _segment_ids(pm, config, image, weight, cat)
    with atomic_output(work / SEGMENTATION) as tmp, open(tmp, "wb") as fh:
        np.save(fh, seg)
    del seg
    arrays = {"segment_ids": ids}
    if all(c in cat.colnames for c in MODEL_COLUMNS):  # neighbours across sub-tiles
        data = cat.hdul[cat.objects_hdu].data
        models = [np.asarray(data[c], dtype=np.float64) for c in MODEL_COLUMNS]
        arrays["light_models"] = np.column_stack([*positions, *models])
    return arrays


def _star_arrays(cat, files, psf, scale) -> dict:
    """The whole catalogue's stars and the PSF checked against them, for ``prep.npz``.

    The stellar locus is followed across the whole image (not a sub-tile's
    part of it), and the PSF model is checked once, on the whole image read
    through a memory map where the stars are.

    Parameters
    ----------
    cat : blendflag.io.catalog.Catalogue
    files : (path-like, path-like or None)
        The image and its weight map.
    psf : (numpy.ndarray, PSFModel or None)
        The checked PSF image and the varying model, if any.
    scale : float
        Arcsec per pixel.

    Returns
    -------
    dict
        ``stars`` (bool per row, when identified), ``stars_note`` and
        ``psf_check`` (JSON text, ``""``: none).
    """
    import contextlib
    import json

    from astropy.table import Table

    from blendflag.io.images import image_memmap
    from blendflag.psf.model import ImagePSF
    from blendflag.psf.star_check import check_psf
    from blendflag.psf.stars import LOCUS_COLUMNS
    from blendflag.shear.star_cut import locus_stars

    found = locus_stars(Table({c: cat.column(c) for c in LOCUS_COLUMNS if c in cat.colnames}))
    arrays = {"stars_note": np.array(found.note or ""), "psf_check": np.array("")}
    if found.rows is None:
        return arrays
    arrays["stars"] = found.rows
    model = psf[1] if psf[1] is not None else ImagePSF(psf[0])
    image, weight = files
    with contextlib.ExitStack() as stack:
        pixels = stack.enter_context(image_memmap(image))
        wgt = None if weight is None else stack.enter_context(image_memmap(weight, "weight map"))
        check = check_psf(pixels, model, found.x, found.y, wgt, scale)
    if check is not None:
        arrays["psf_check"] = np.array(json.dumps(check.document()))
    return arrays


def _stored_stars(prep_path: Path) -> tuple[dict, dict | None]:
    """The stars (``FieldInput.stars`` without rows) and the PSF check stored in ``prep.npz``."""
    import json

    from blendflag.shear.star_cut import LOCUS

    with np.load(prep_path, allow_pickle=False) as data:
        note = str(data["stars_note"]) if "stars_note" in data.files else ""
        found = "stars" in data.files
        check = str(data["psf_check"]) if "psf_check" in data.files else ""
    stars = {"identified_by": LOCUS if found else None, "note": note or None}
    return stars, json.loads(check) if check else None


def prepare_subtiles(
    pm,
    config,
    image,
    psf,
    catalogue,
    weight,
    work_dir,
    core: int,
    settings,
    masking: bool,
    pixel_scale: float | None = None,
    recentre_psf: bool = False,
) -> tuple[list[SubTile], dict]:
    """Check the inputs, cut the grid and write what the sub-tiles share.

    Parameters
    ----------
    pm : pluggy.PluginManager
    config : blendflag.config.PipelineConfig
    image, psf, catalogue, weight : path-like or None
        The whole image's files (``weight`` optional).
    work_dir : path-like
        Where ``prep.npz``, ``segmentation.npy`` and the sub-tiles' sums go.
    core : int
        Side of a sub-tile's core, pixels.
    settings : blendflag.tiling.settings.RunSettings
        The run's settings; ``settings.inputs_hash`` keys the stored preparation.
    masking : bool
        Make the whole image's segmentation map (the engine masks neighbours).
    pixel_scale : float or None
        Arcsec per pixel when the headers hold none.
    recentre_psf : bool
        As ``compare --recentre-psf``.

    Returns
    -------
    subtiles : list of SubTile
        Every sub-tile of the grid, in row-major order.
    info : dict
        ``n_objects``, ``owned`` (objects per sub-tile), ``reference_noise``
        (ADU), ``pixel_scale`` (arcsec), ``margin``, ``image_size``,
        ``stars`` (how the whole catalogue's stars were found) and
        ``psf_check`` (the PSF against them, or None).

    Raises
    ------
    CatalogueError
        Unreadable files, positions outside the image or not numbers, a PSF
        that fails its checks, no pixel scale, NaN pixels with weight.
    """
    from blendflag.io.atomic import atomic_output
    from blendflag.io.catalog import read_catalogue
    from blendflag.io.stamps import check_positions
    from blendflag.psf.model import psf_image_and_model

    work = Path(work_dir)
    shape = image_shape(image)
    if weight is not None and image_shape(weight) != shape:
        ws = image_shape(weight)
        raise CatalogueError(
            f"weight map is {ws[1]}x{ws[0]} but the image is {shape[1]}x{shape[0]}"
        )
    cat = read_catalogue(catalogue)
    x, y = cat.positions()
    check_positions(x, y, shape)
    # a PSFEx model is re-read by every sub-tile and evaluated at its objects
    psf_img, psf_model, psf_header = psf_image_and_model(psf, shape, recentre=recentre_psf)
    scale = _pixel_scale(image, psf_header, pixel_scale)
    margin = subtile_margin(config)
    grid = subtile_grid(shape, core, margin)
    subtiles = _grid_subtiles(grid, image, psf, catalogue, weight)
    owner = owners(x, y, shape, [c for c, _ in grid])
    prep_path = work / PREP
    if _stored(prep_path, "hash") != settings.inputs_hash:
        noise = _object_noise(config, image, weight, subtiles, owner, (x, y))
        arrays = {
            "owner": owner,
            "psf": psf_img,
            "psf_varies": np.array(psf_model is not None and psf_model.varies),
            "image_shape": np.array(shape[:2]),
            "pixel_scale": np.array(scale),
            "reference_noise": np.array(np.median(noise) if noise.size else np.nan),
        }
        if masking:
            arrays.update(_masking_arrays(pm, config, (image, weight, cat), (x, y), work))
        arrays.update(_star_arrays(cat, (image, weight), (psf_img, psf_model), scale))
        arrays["hash"] = np.array(settings.inputs_hash)  # last: marks the preparation done
        with atomic_output(prep_path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    with np.load(prep_path, allow_pickle=False) as data:
        reference = float(data["reference_noise"])
    stars, psf_check = _stored_stars(prep_path)
    info = {
        "n_objects": len(x),
        "owned": np.bincount(owner, minlength=len(subtiles)).tolist(),
        "reference_noise": reference if np.isfinite(reference) else None,
        "pixel_scale": float(scale),
        "margin": margin,
        "image_size": [shape[1], shape[0]],
        "psf_model": None if psf_model is None else psf_model.description,
        "stars": stars,
        "psf_check": psf_check,
    }
    return subtiles, info
