"""What one sub-tile of a split image runs in a worker (see :mod:`blendflag.tiling.grid`).

:func:`compare_subtile` reads its region of the image and weight through a
memory map, takes the catalogue rows it owns (positions moved to the region's
origin) and the shared preparation of ``prep.npz`` (PSF, pixel scale,
reference noise, segmentation; a PSFEx model is re-read and evaluated at
the sub-tile's objects in whole-image coordinates), runs
:func:`blendflag.pipeline.compare.run_compare` on it and writes
``<sub-tile>.sums.npz`` keyed by the rows of the whole catalogue, as
``--tiles`` stores a tile's sums. Like every tile task it never raises: a
failure is reported and the other sub-tiles go on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blendflag.io.images import read_image_section
from blendflag.tiling.grid import SubTile
from blendflag.tiling.preparation import PREP, SEGMENTATION
from blendflag.tiling.tasks import _tile_task, write_tile_sums


def subtile_catalogue(path, rows: np.ndarray, offset: tuple[int, int]):
    """The catalogue rows ``rows`` of ``path``, positions moved by ``-offset`` (x0, y0) pixels.

    Returns
    -------
    blendflag.io.catalog.Catalogue
        In memory (``path`` None), the objects in HDU 1.
    """
    from astropy.io import fits

    from blendflag.io.catalog import Catalogue, read_catalogue

    cat = read_catalogue(path)
    source = cat.hdul[cat.objects_hdu]
    # column by column: indexing astropy's FITS_rec with an array of rows keeps
    # the whole table alive for the life of the process (400 MB per sub-tile
    # of a CFIS tile's catalogue with VIGNET, a worker's memory growing by that)
    columns = [
        fits.Column(
            name=c.name, format=c.format, unit=c.unit, dim=c.dim, array=source.data[c.name][rows]
        )
        for c in source.columns
    ]
    hdu = fits.BinTableHDU.from_columns(columns)
    hdu.data["X_IMAGE"] = hdu.data["X_IMAGE"] - offset[0]
    hdu.data["Y_IMAGE"] = hdu.data["Y_IMAGE"] - offset[1]
    return Catalogue(
        path=None, hdul=fits.HDUList([fits.PrimaryHDU(), hdu]), objects_hdu=1, format="FITS"
    )


def subtile_input(sub: SubTile, work_dir, settings):
    """The :class:`~blendflag.pipeline.field_input.FieldInput` of a sub-tile (None: owns none)."""
    from blendflag.io.images import mask_bad_weights
    from blendflag.pipeline.field_input import FieldInput

    work = Path(work_dir)
    with np.load(work / PREP, allow_pickle=False) as prep:
        rows = np.flatnonzero(prep["owner"] == sub.index)
        psf = np.array(prep["psf"])
        varies = bool(prep["psf_varies"]) if "psf_varies" in prep.files else False
        whole = tuple(int(v) for v in prep["image_shape"]) if "image_shape" in prep.files else None
        scale = float(prep["pixel_scale"])
        ids = np.array(prep["segment_ids"])[rows] if "segment_ids" in prep.files else None
        pool = np.array(prep["light_models"]) if "light_models" in prep.files else None
        stars = _subtile_stars(prep, rows)
    if not rows.size:
        return None
    x0, x1, y0, y1 = sub.region
    image, header = read_image_section(sub.image, sub.region)
    weight = None
    if sub.weight:
        weight = mask_bad_weights(
            read_image_section(sub.weight, sub.region)[0], Path(sub.weight).name
        )
    segmentation = None
    if ids is not None:
        seg = np.load(work / SEGMENTATION, mmap_mode="r")
        segmentation = np.array(seg[y0:y1, x0:x1])
        del seg
    if pool is not None:  # every catalogue source in the region, owned or not
        pool[:, 0] -= x0
        pool[:, 1] -= y0
        inside = (pool[:, 0] > 0) & (pool[:, 0] <= x1 - x0) & (pool[:, 1] > 0)
        pool = pool[inside & (pool[:, 1] <= y1 - y0)]
    psf_model = None
    if varies:  # the whole image's PSFEx model, read at this sub-tile's positions
        from blendflag.psf.model import ShiftedPSF, load_psf

        model = load_psf(sub.psf)[0]
        model.domain = whole  # the whole image's, for what spans it (domain_images)
        psf_model = ShiftedPSF(model, x0, y0)
    shear = settings.true_shear
    return FieldInput(
        image=image,
        weight=weight,
        psf=psf,
        header=header,
        pixel_scale=scale,
        catalogue=subtile_catalogue(sub.catalogue, rows, (x0, y0)),
        true_shear=None if shear is None else tuple(shear),
        reference_noise=settings.reference_noise,
        object_keys=rows.astype(np.int64),
        segmentation=segmentation,
        segment_ids=ids,
        light_models=pool,
        psf_model=psf_model,
        description={"sub_tile": sub.name, "core": list(sub.core), "region": list(sub.region)},
        stars=stars,
        frame=None if whole is None else ((float(x0), float(y0)), whole),
        field=settings.field,  # the whole image's identity: its correction fields' seed
    )


def _subtile_stars(prep, rows: np.ndarray) -> dict:
    """``FieldInput.stars`` of a sub-tile's rows: the whole catalogue's locus (``prep.npz``)."""
    from blendflag.shear.star_cut import LOCUS

    found = "stars" in prep.files
    note = str(prep["stars_note"]) if "stars_note" in prep.files else ""
    return {
        "rows": np.array(prep["stars"])[rows] if found else None,
        "identified_by": LOCUS if found else None,
        "note": note or None,
    }


@_tile_task
def compare_subtile(sub: SubTile, settings, out_dir: str, tile_hash_value: str) -> dict:
    """Run the comparison on one sub-tile and write its sums (units: whole-catalogue rows).

    Returns a summary ``{"tile", "status": "done"|"failed", "n", "seconds"}``;
    never raises.
    """
    from blendflag.pipeline.compare import run_compare
    from blendflag.tiling.tasks import task_tools

    data = subtile_input(sub, out_dir, settings)
    if data is None:
        return {"n": 0}
    pm, config, flaggers, engine_cls = task_tools(settings)
    result = run_compare(
        pm,
        config,
        data,
        flaggers,
        engine_cls,
        seed=settings.seed,
        workers=1,
        quiet=True,
        n_bootstrap=0,  # only the sums are kept: the bootstrap is drawn once, on the whole
        flag_original=False,
        psf_check="off",  # checked once on the whole image (tiling.preparation)
    )
    info = {"shear": settings.true_shear, "sign": 1, "field": settings.field}
    # units are the whole image's cells, or (bootstrap_cell 0) its catalogue rows
    keys = None if config.shear.bootstrap_cell else data.object_keys
    path = Path(out_dir) / f"{sub.name}.sums.npz"
    write_tile_sums(path, result, info, tile_hash_value, keys=keys)
    return {"n": len(data.object_keys), "timings": result.summary.timings_s}
