"""Science images and weight maps: read, check, pair them."""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import numpy as np
from astropy.io import fits

from blendflag.errors import CatalogueError
from blendflag.io.catalog import open_fits


def read_image(path, what: str = "image", hdu: int | None = None) -> tuple[np.ndarray, fits.Header]:
    """Read a 2-d image (first HDU with 2-d data unless ``hdu`` is given).

    Returns
    -------
    data : numpy.ndarray
        float32 or float64, native byte order.
    header : astropy.io.fits.Header

    Raises
    ------
    CatalogueError
        Missing or unreadable file, no 2-d image.
    """
    path = Path(path)
    hdul = open_fits(path, what)
    index = _image_hdu(hdul, hdu)
    if index is None:
        raise CatalogueError(f"{what} {path.name} holds no 2-d image")
    return _native_float(hdul[index].data), hdul[index].header


def read_image_section(path, region, what: str = "image") -> tuple[np.ndarray, fits.Header]:
    """One region of a FITS image, read through a memory map (the file is never read whole).

    Parameters
    ----------
    path : path-like
    region : tuple of int
        ``(x0, x1, y0, y1)``: 0-based pixel bounds, end excluded.
    what : str
        The file's role in messages.

    Returns
    -------
    data : numpy.ndarray
        The region's pixels (float32 or float64, native byte order, a copy).
    header : astropy.io.fits.Header
        The image's header with CRPIX moved to the region's origin.
    """
    x0, x1, y0, y1 = region
    with fits.open(path, memmap=True) as hdul:
        index = _image_hdu(hdul)
        if index is None:
            raise CatalogueError(f"{what} {Path(path).name} holds no 2-d image")
        data = np.array(hdul[index].data[y0:y1, x0:x1])
        header = hdul[index].header.copy()
    for axis, offset in (("CRPIX1", x0), ("CRPIX2", y0)):
        if axis in header:
            header[axis] = float(header[axis]) - offset
    return _native_float(data), header


@contextlib.contextmanager
def image_memmap(path, what: str = "image"):
    """The 2-d image of a FITS file through a memory map (read only where it is indexed).

    A context manager: the file stays open inside the ``with`` block.

    Raises
    ------
    CatalogueError
        No 2-d image in the file.
    """
    with fits.open(path, memmap=True) as hdul:
        index = _image_hdu(hdul)
        if index is None:
            raise CatalogueError(f"{what} {Path(path).name} holds no 2-d image")
        yield hdul[index].data


def image_shape(path, what: str = "image") -> tuple[int, int]:
    """(rows, columns) of the first 2-d image HDU of a FITS file, from its header."""
    with open_fits(Path(path), what) as hdul:
        index = _image_hdu(hdul)
        if index is not None:
            return int(hdul[index].header["NAXIS2"]), int(hdul[index].header["NAXIS1"])
    raise CatalogueError(f"{what} {Path(path).name} holds no 2-d image")


def _image_hdu(hdul, hdu: int | None = None) -> int | None:
    """Index of the first HDU holding a 2-d image (only ``hdu`` when given); None if none."""
    candidates = [hdu] if hdu is not None else range(len(hdul))
    for i in candidates:
        if i >= len(hdul) or isinstance(hdul[i], (fits.BinTableHDU, fits.TableHDU)):
            continue
        if hdul[i].header.get("NAXIS") == 2 and hdul[i].header.get("NAXIS1", 0) > 0:
            return i
    return None


def _native_float(data) -> np.ndarray:
    """``data`` as float32, or float64 when it holds more than 4 bytes per pixel."""
    arr = np.asarray(data)
    return arr.astype(np.float64 if arr.dtype.itemsize > 4 else np.float32)


def check_finite(image: np.ndarray, weight: np.ndarray | None, what: str = "image") -> None:
    """Reject NaN/inf pixels that are not masked by a zero weight.

    Raises
    ------
    CatalogueError
        Non-finite pixels with non-zero (or no) weight.
    """
    bad = ~np.isfinite(image)
    if weight is not None:
        bad &= weight > 0
    n_bad = int(bad.sum())
    if n_bad:
        raise CatalogueError(
            f"{what} has {n_bad} NaN/inf pixels with non-zero weight; give them weight 0 "
            "in a weight map (--weight) to mask them"
        )


def mask_bad_weights(weight: np.ndarray, name: str = "weight map") -> np.ndarray:
    """Give NaN, inf and negative weights the weight 0 (masked), with one warning line.

    Returns
    -------
    numpy.ndarray
        ``weight`` itself when every value is finite and >= 0, else a masked copy.
    """
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(weight) | (weight < 0)
    n_bad = int(bad.sum())
    if not n_bad:
        return weight
    logging.getLogger(__name__).warning(
        "weight map %s has %d NaN/inf/negative pixels (of %d): masked (weight 0)",
        name,
        n_bad,
        weight.size,
    )
    weight = weight.copy()
    weight[bad] = 0
    return weight


def load_image_and_weight(image_path, weight_path=None, flag_map_path=None):
    """Read the science image and optional weight map and flag map, checking they fit.

    A flag map (integer, SExtractor's FLAG_IMAGE) masks every pixel where it
    is non-zero: the weight there becomes 0, so masked pixels are never
    detected, never reach a flagger (zeroed in the stamps) and flag the
    objects whose stamps they fall in (``STAMP_MASKED``). Without a weight
    map the unmasked pixels get weight ``1 / sigma^2``, sigma the robust
    (1.4826 MAD) noise of the unmasked pixels.

    Returns
    -------
    image, weight, header
        ``weight`` is None when neither a weight map nor a flag map was given.

    Raises
    ------
    CatalogueError
        Unreadable files, shapes that differ, NaN pixels that are not masked.
    """
    image, header = read_image(image_path, "image")
    weight = None
    if weight_path is not None:
        weight, _ = read_image(weight_path, "weight map")
        if weight.shape != image.shape:
            raise CatalogueError(
                f"weight map is {weight.shape[1]}x{weight.shape[0]} but the image is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        weight = mask_bad_weights(weight, Path(weight_path).name)
        if not bool(((weight > 0) & (weight < float("inf"))).any()):
            raise CatalogueError("weight map has no positive finite pixel")
    if flag_map_path is not None:
        weight = apply_flag_map(image, weight, flag_map_path)
    check_finite(image, weight, f"image {Path(image_path).name}")
    return image, weight, header


def pixel_scale_from_header(header) -> float | None:
    """Pixel scale in arcsec from CD or CDELT cards (degrees), or PIXSCALE; None if absent."""
    if header is None:
        return None
    try:
        if "CD1_1" in header:
            cd = np.array(
                [
                    [header.get("CD1_1", 0.0), header.get("CD1_2", 0.0)],
                    [header.get("CD2_1", 0.0), header.get("CD2_2", 0.0)],
                ],
                dtype=float,
            )
            scale = math.sqrt(abs(np.linalg.det(cd))) * 3600.0
        elif "CDELT1" in header:
            cdelt1 = float(header["CDELT1"])
            cdelt2 = float(header.get("CDELT2", cdelt1))
            scale = math.sqrt(abs(cdelt1 * cdelt2)) * 3600.0
        elif "PIXSCALE" in header:
            scale = float(header["PIXSCALE"])
        else:
            return None
    except (TypeError, ValueError):
        return None
    return scale if scale > 0 and math.isfinite(scale) else None


def apply_flag_map(image, weight, flag_map_path) -> np.ndarray:
    """The weight map with 0 wherever the flag map is non-zero (see :func:`load_image_and_weight`).

    Raises
    ------
    CatalogueError
        A flag map of another shape, or one that masks every pixel.
    """
    flags, _ = read_image(flag_map_path, "flag map")
    if flags.shape != image.shape:
        raise CatalogueError(
            f"flag map is {flags.shape[1]}x{flags.shape[0]} but the image is "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    masked = flags != 0
    if masked.all():
        raise CatalogueError("the flag map masks every pixel")
    if weight is None:
        good = image[~masked & np.isfinite(image)]
        sigma = 1.4826 * float(np.median(np.abs(good - np.median(good)))) if good.size else 0.0
        weight = np.full(image.shape, 1.0 / sigma**2 if sigma > 0 else 1.0, dtype=np.float32)
    return np.where(masked, 0, weight).astype(weight.dtype)


def image_identity(path) -> str:
    """An image file's identity: ``sha256:`` and the first 16 hex digits of its bytes' hash.

    The key that seeds an image's noise-correction fields when nothing else
    names it (:func:`blendflag.pipeline.compare.field_seed`): the same file
    gets the same draws by every route (whole, split, a tile) and wherever it
    lives; two different images never share them.
    """
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"
