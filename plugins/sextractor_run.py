"""Running the real SExtractor binary (Debian ``source-extractor``, or ``sex``).

A helper of the built-in plugins (not a plugin itself): the detector plugin
:mod:`blendflag_plugins.sextractor_binary` and the stamp-level rule of
:mod:`blendflag_plugins.stamp_detect` both run the binary through it.
Configuration, parameter and filter files are written into a temporary
directory that is removed afterwards; the binary writes a FITS_LDAC catalogue
that is read back with :func:`blendflag.io.catalog.read_catalogue`. Defaults are
the sep plugin's (DETECT_THRESH 1.5, DEBLEND_NTHRESH 32, DEBLEND_MINCONT 0.005,
DETECT_MINAREA 5, the same 3x3 pyramidal filter), from
:class:`blendflag.config.DetectConfig`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from blendflag.errors import BlendflagError

if TYPE_CHECKING:  # astropy is imported when SExtractor runs, not at plugin load
    from astropy.table import Table

#: Output columns requested from SExtractor (the sep plugin writes the same).
PARAMETERS = (
    "NUMBER",
    "X_IMAGE",
    "Y_IMAGE",
    "FLUX_AUTO",
    "FLUXERR_AUTO",
    "KRON_RADIUS",
    "A_IMAGE",
    "B_IMAGE",
    "THETA_IMAGE",
    "ISOAREA_IMAGE",
    "FLAGS",
)
#: SExtractor's default.conv, identical to sep's default filter kernel.
FILTER = "CONV NORM\n1 2 1\n2 4 2\n1 2 1\n"
#: Gap between stamps in a mosaic, in pixels (never detected: huge rms).
GAP = 8


def find_binary(config=None) -> str | None:
    """Path of the SExtractor binary: the config's, else ``source-extractor``, else ``sex``."""
    explicit = getattr(config, "sextractor_binary", None) if config is not None else None
    if explicit:
        return shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
    return shutil.which("source-extractor") or shutil.which("sex")


def run_sextractor(
    image,
    config,
    weight=None,
    weight_type="MAP_WEIGHT",
    background=None,
    timeout=600,
    segmentation=False,
) -> Table:
    """Run the binary on ``image`` and return its catalogue.

    Parameters
    ----------
    image : numpy.ndarray
        2-d image (ADU).
    config : blendflag.config.DetectConfig
    weight : numpy.ndarray or None
        Weight (``MAP_WEIGHT``) or rms (``MAP_RMS``) map.
    weight_type : str
        SExtractor WEIGHT_TYPE of ``weight``. [default: "MAP_WEIGHT"]
    background : float or None
        A constant background (BACK_TYPE MANUAL); None estimates it (meshes of
        ``config.back_size`` pixels).
    segmentation : bool
        Also write SExtractor's SEGMENTATION check-image and return it, int32
        of the image's shape (0 sky, NUMBER on each object's footprint), in
        ``table.meta["segmentation"]``. [default: False]

    Returns
    -------
    astropy.table.Table
        The :data:`PARAMETERS` columns; X_IMAGE, Y_IMAGE 1-based.

    Raises
    ------
    BlendflagError
        No binary, or the binary failed (its last stderr line is shown).
    """
    from astropy.io import fits
    from astropy.table import Table

    binary = find_binary(config)
    if binary is None:
        raise BlendflagError(
            "SExtractor binary not found (install the Debian package "
            "source-extractor, or set detect.sextractor_binary)"
        )
    from blendflag.io.catalog import read_catalogue
    from blendflag.io.external_tools import run_tool

    with tempfile.TemporaryDirectory(prefix="blendflag-sex-") as tmp:
        tmp = Path(tmp)
        image = np.asarray(image, dtype=np.float32)
        image = np.where(np.isfinite(image), image, 0.0).astype(np.float32)  # masked by weight 0
        fits.PrimaryHDU(image).writeto(tmp / "image.fits")
        (tmp / "default.param").write_text("\n".join(PARAMETERS) + "\n")
        (tmp / "default.conv").write_text(FILTER)
        options = _options(config, tmp, np.size(image))
        if background is not None:
            options.update(BACK_TYPE="MANUAL", BACK_VALUE=str(background))
        if segmentation:
            options.update(CHECKIMAGE_TYPE="SEGMENTATION", CHECKIMAGE_NAME=str(tmp / "seg.fits"))
        if weight is not None:
            fits.PrimaryHDU(np.asarray(weight, dtype=np.float32)).writeto(tmp / "weight.fits")
            options.update(
                WEIGHT_TYPE=weight_type, WEIGHT_IMAGE=str(tmp / "weight.fits"), WEIGHT_GAIN="N"
            )
        (tmp / "default.sex").write_text("")
        cmd = [binary, str(tmp / "image.fits"), "-c", str(tmp / "default.sex")]
        for key, value in options.items():
            cmd += [f"-{key}", value]
        run_tool(cmd, tmp, "SExtractor", timeout)
        if not (tmp / "cat.fits").exists():
            raise BlendflagError("SExtractor failed: it wrote no catalogue")
        cat = read_catalogue(tmp / "cat.fits", require_rows=False)
        table = Table(cat.hdul[cat.objects_hdu].data) if len(cat) else _empty_table()
        if segmentation:
            seg = fits.getdata(tmp / "seg.fits")
            table.meta["segmentation"] = np.array(seg, dtype=np.int32)  # a copy: tmp goes
    return table


def _options(config, tmp: Path, n_pixels: int) -> dict:
    """SExtractor's settings (``-KEY value``) for ``config``, its files in ``tmp``."""
    options = {
        "CATALOG_NAME": str(tmp / "cat.fits"),
        "CATALOG_TYPE": "FITS_LDAC",
        "PARAMETERS_NAME": str(tmp / "default.param"),
        "FILTER": "Y",
        "FILTER_NAME": str(tmp / "default.conv"),
        "DETECT_TYPE": "CCD",
        "DETECT_MINAREA": str(config.minarea),
        "DETECT_THRESH": str(config.thresh),
        "ANALYSIS_THRESH": str(config.thresh),
        "THRESH_TYPE": "RELATIVE",
        "DEBLEND_NTHRESH": str(config.deblend_nthresh),
        "DEBLEND_MINCONT": str(config.deblend_cont),
        "CLEAN": "Y" if config.clean else "N",
        "CLEAN_PARAM": str(config.clean_param),
        "MASK_TYPE": "CORRECT",
        "PHOT_AUTOPARAMS": f"{config.kron_fact},{config.min_radius}",
        "SATUR_LEVEL": "1e20",
        "MAG_ZEROPOINT": "30.0",
        "GAIN": "0.0",
        "PIXEL_SCALE": "0",
        "SEEING_FWHM": "0.7",
        "BACK_SIZE": str(config.back_size),
        "BACK_FILTERSIZE": str(config.back_filtersize),
        "BACKPHOTO_TYPE": "GLOBAL",
        "CHECKIMAGE_TYPE": "NONE",
        "MEMORY_PIXSTACK": str(max(300_000, int(n_pixels) // 4)),
        "MEMORY_OBJSTACK": "30000",
        "MEMORY_BUFSIZE": "4096",
        "VERBOSE_TYPE": "QUIET",
        "WRITE_XML": "N",
        "NTHREADS": "1",
    }
    return options


def _empty_table() -> Table:
    from astropy.table import Table

    return Table({name: np.zeros(0, dtype=np.float64) for name in PARAMETERS})


def detect_stamps_with_binary(stamps, sigma, config):
    """Run the binary once on a mosaic of stamps; detections per stamp.

    Stamps are tiled on a grid with :data:`GAP`-pixel gaps; an rms map holds
    each stamp's noise sigma (and 1e30 in the gaps, which are never detected),
    so DETECT_THRESH is in units of each stamp's own sigma, as with sep.

    Returns
    -------
    list of (x, y, flags)
        0-based stamp coordinates of the detections of each stamp.
    """
    stamps = np.asarray(stamps, dtype=np.float32)
    n, sy, sx = stamps.shape
    ncol = int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    py, px = sy + GAP, sx + GAP
    mosaic = np.zeros((nrow * py + GAP, ncol * px + GAP), dtype=np.float32)
    rms = np.full(mosaic.shape, 1e30, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        y0, x0 = GAP + r * py, GAP + c * px
        mosaic[y0 : y0 + sy, x0 : x0 + sx] = stamps[i]
        rms[y0 : y0 + sy, x0 : x0 + sx] = sigma[i]
    table = run_sextractor(mosaic, config, weight=rms, weight_type="MAP_RMS", background=0.0)
    x = np.asarray(table["X_IMAGE"], dtype=np.float64) - 1 - GAP
    y = np.asarray(table["Y_IMAGE"], dtype=np.float64) - 1 - GAP
    col = np.floor((x + GAP / 2) / px).astype(int)
    row = np.floor((y + GAP / 2) / py).astype(int)
    index = row * ncol + col
    flags = np.asarray(table["FLAGS"], dtype=np.int16)
    out = []
    for i in range(n):
        sel = index == i
        r, c = divmod(i, ncol)
        out.append((x[sel] - c * px, y[sel] - r * py, flags[sel]))
    return out
