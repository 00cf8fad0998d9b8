"""Source detection with sep, in SExtractor's conventions.

Defaults follow the original study's sep call: threshold 1.5 x the global
background rms, 32 deblending thresholds, minimum contrast 0.005, minimum
area 5 pixels. sep's ``OBJ_MERGED`` (value 1) becomes SExtractor's FLAGS bit
value 2 (deblended); sep's ``OBJ_TRUNC`` (value 2) becomes value 8 (truncated
at the image edge). Positions are 1-based like SExtractor's X_IMAGE/Y_IMAGE. The segmentation
map comes back in ``table.meta["segmentation"]`` (the ``blendflag_detect``
contract), pixel value = NUMBER of the object, 0 = sky.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from blendflag import hookimpl
from blendflag.flagging.detectors import SEGMENTATION_KEY, Detector

if TYPE_CHECKING:  # astropy is imported when detecting, not to build the plugin manager
    from astropy.table import Table

#: SExtractor FLAGS bit values.
SEX_NEIGHBOURS = 1
SEX_DEBLENDED = 2
SEX_SATURATED = 4
SEX_TRUNCATED = 8


def sep_flags_to_sextractor(flag: np.ndarray) -> np.ndarray:
    """Map sep object flags to SExtractor FLAGS values.

    Parameters
    ----------
    flag : numpy.ndarray
        sep ``objects["flag"]`` (OBJ_MERGED = 1, OBJ_TRUNC = 2).

    Returns
    -------
    numpy.ndarray
        int16 FLAGS with value 2 for deblended and 8 for truncated objects.
    """
    import sep

    flag = np.asarray(flag)
    out = np.zeros(flag.shape, dtype=np.int16)
    out[(flag & sep.OBJ_MERGED) != 0] |= SEX_DEBLENDED
    out[(flag & sep.OBJ_TRUNC) != 0] |= SEX_TRUNCATED
    return out


def detect_with_sep(image, weight, config, segmentation: bool = False) -> Table:
    """Background-subtract ``image`` and extract sources with sep.

    Parameters
    ----------
    image : numpy.ndarray
        2-d image in ADU.
    weight : numpy.ndarray or None
        Weight map; pixels with weight <= 0 (and non-finite pixels) are masked.
    config : blendflag.config.DetectConfig
    segmentation : bool
        Also return the segmentation map, int32 of the image's shape, in
        ``table.meta["segmentation"]`` (0 sky, NUMBER on each object's
        footprint). [default: False]

    Returns
    -------
    astropy.table.Table
        NUMBER, X_IMAGE, Y_IMAGE (pixels, 1-based), FLUX_AUTO, FLUXERR_AUTO (ADU),
        KRON_RADIUS, A_IMAGE, B_IMAGE (pixels), THETA_IMAGE (degrees), FLAGS,
        ISOAREA_IMAGE (pixels).
    """
    import sep

    data, mask = _masked_data(image, weight)
    bkg = sep.Background(
        data,
        mask=mask,
        bw=config.back_size,
        bh=config.back_size,
        fw=config.back_filtersize,
        fh=config.back_filtersize,
    )
    sub = data - bkg.back()
    rms = bkg.globalrms
    sep.set_extract_pixstack(max(300_000, data.size // 4))
    sep.set_sub_object_limit(4096)
    found = sep.extract(
        sub,
        config.thresh,
        err=rms,
        mask=mask,
        minarea=config.minarea,
        deblend_nthresh=config.deblend_nthresh,
        deblend_cont=config.deblend_cont,
        clean=config.clean,
        clean_param=config.clean_param,
        segmentation_map=segmentation,
        **_filter_arguments(config),
    )
    objects, segmap = found if segmentation else (found, None)
    kron, flux, fluxerr = _auto_photometry(sub, objects, rms, mask, config)
    table = _catalogue_table(objects, kron, flux, fluxerr)
    table.meta["BACKRMS"] = float(rms)
    if segmap is not None:  # sep numbers segments k + 1 for the k-th object: NUMBER
        table.meta[SEGMENTATION_KEY] = np.asarray(segmap, dtype=np.int32)
    return table


def _filter_arguments(config) -> dict:
    """sep's filter: its default, or a 7x7 Gaussian of ``config.filter_fwhm`` pixels."""
    fwhm = float(getattr(config, "filter_fwhm", 0.0) or 0.0)
    if fwhm <= 0:
        return {}
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    r = np.arange(-3, 4)
    kernel = np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / sigma**2)
    return {"filter_kernel": kernel / kernel.sum(), "filter_type": "conv"}


class SepDetector(Detector):
    """sep (SExtractor's algorithms as a library); always available."""

    name = "sep"
    description = "sep, SExtractor's algorithms as a Python library"


@hookimpl
def blendflag_register_detectors():
    return [SepDetector]


@hookimpl(trylast=True)
def blendflag_detect(image, weight, config):
    """The default detector: sep, unless another backend is asked for."""
    if config.backend not in (SepDetector.name, "auto"):
        return None
    return detect_with_sep(image, weight, config, segmentation=True)


def _masked_data(image, weight) -> tuple[np.ndarray, np.ndarray]:
    """The image as float64, its masked pixels (non-finite, or weight <= 0) set to 0; the mask."""
    data = np.ascontiguousarray(image, dtype=np.float64)
    mask = ~np.isfinite(data)
    if weight is not None:
        mask |= ~(np.asarray(weight) > 0)
    return np.where(mask, 0.0, data), mask


def _auto_photometry(sub, objects, rms: float, mask, config) -> tuple:
    """Kron radius (pixels), FLUX_AUTO and its error (ADU) of every object, as SExtractor's."""
    import sep

    n = len(objects)
    if not n:
        return np.zeros(n), np.zeros(n), np.zeros(n)
    x, y, a, b = objects["x"], objects["y"], objects["a"], objects["b"]
    theta_c = np.clip(objects["theta"], -np.pi / 2, np.pi / 2)
    kron, _ = sep.kron_radius(sub, x, y, a, b, theta_c, 6.0, mask=mask)
    radius = np.maximum(config.kron_fact * kron, config.min_radius)
    flux, fluxerr, _ = sep.sum_ellipse(
        sub, x, y, a, b, theta_c, r=radius, err=rms, mask=mask, subpix=1
    )
    return kron, flux, fluxerr


def _catalogue_table(objects, kron, flux, fluxerr) -> Table:
    """The SExtractor-named columns (1-based pixel positions), with units."""
    from astropy.table import Table

    x, y, a, b, theta = (objects[k] for k in ("x", "y", "a", "b", "theta"))
    table = Table()
    table["NUMBER"] = np.arange(1, len(objects) + 1, dtype=np.int32)
    table["X_IMAGE"] = (x + 1.0).astype(np.float64)
    table["Y_IMAGE"] = (y + 1.0).astype(np.float64)
    table["FLUX_AUTO"] = flux.astype(np.float32)
    table["FLUXERR_AUTO"] = fluxerr.astype(np.float32)
    table["KRON_RADIUS"] = np.asarray(kron, dtype=np.float32)
    table["A_IMAGE"] = a.astype(np.float32)
    table["B_IMAGE"] = b.astype(np.float32)
    table["THETA_IMAGE"] = np.degrees(theta).astype(np.float32)
    table["ISOAREA_IMAGE"] = objects["npix"].astype(np.int32)
    table["FLAGS"] = sep_flags_to_sextractor(objects["flag"])
    for col, unit in (
        ("X_IMAGE", "pix"),
        ("Y_IMAGE", "pix"),
        ("A_IMAGE", "pix"),
        ("B_IMAGE", "pix"),
        ("THETA_IMAGE", "deg"),
        ("FLUX_AUTO", "ct"),
        ("FLUXERR_AUTO", "ct"),
    ):
        table[col].unit = unit
    return table
