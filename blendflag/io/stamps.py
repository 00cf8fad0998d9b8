"""Postage stamps cut around catalogue positions.

Stamps are centred on the pixel nearest to each (X_IMAGE, Y_IMAGE), which are
1-based SExtractor coordinates. Pixels outside the image, masked (weight 0) or
not finite are set to 0 and the stamp gets a bit in its flags.
"""

from __future__ import annotations

import numpy as np

from blendflag.errors import CatalogueError

#: Bit flags per stamp (ngmix style: one bad stamp never stops a catalogue).
STAMP_EDGE = 1  # part of the stamp falls outside the image
STAMP_MASKED = 2  # some pixels have weight 0
STAMP_NONFINITE = 4  # some pixels were NaN/inf
STAMP_FLAG_NAMES = {STAMP_EDGE: "edge", STAMP_MASKED: "masked", STAMP_NONFINITE: "nonfinite"}


def crop_stamps(stamps: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop ``(n, S, S)`` stamps to ``size`` pixels when S is larger."""
    side = stamps.shape[-1]
    if size <= 0 or size >= side:
        return stamps
    lo = (side - size) // 2
    return stamps[..., lo : lo + size, lo : lo + size]


def cut_stamps(image, x, y, size: int, weight=None) -> tuple[np.ndarray, np.ndarray]:
    """Cut square stamps of side ``size`` around 1-based positions.

    Parameters
    ----------
    image : numpy.ndarray
        2-d image (ADU).
    x, y : array_like
        Positions in 1-based pixel coordinates (SExtractor X_IMAGE, Y_IMAGE).
    size : int
        Stamp side in pixels; odd sizes centre the source on a pixel.
    weight : numpy.ndarray or None
        Weight map; pixels with weight 0 are zeroed in the stamps.

    Returns
    -------
    stamps : numpy.ndarray
        ``(n, size, size)`` float32.
    flags : numpy.ndarray
        ``(n,)`` int32, OR of ``STAMP_*`` bits.
    """
    image = np.asarray(image)
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if x.shape != y.shape:
        raise CatalogueError("x and y positions differ in length")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise CatalogueError("catalogue positions contain NaN")
    ny, nx = image.shape
    half = size // 2
    pad = half + 1
    good = np.isfinite(image)
    if weight is not None:
        good &= np.asarray(weight) > 0
    clean = np.where(good, image, 0).astype(np.float32)
    padded = np.pad(clean, pad, mode="constant")
    nonfinite = np.pad(~np.isfinite(image), pad, mode="constant")
    masked = np.pad(~good & np.isfinite(image), pad, mode="constant")
    # 0-based pixel centres
    ix = np.rint(x - 1).astype(np.int64)
    iy = np.rint(y - 1).astype(np.int64)
    offsets = np.arange(-half, size - half)
    rows = (iy[:, None] + pad + offsets[None, :]).clip(0, ny + 2 * pad - 1)
    cols = (ix[:, None] + pad + offsets[None, :]).clip(0, nx + 2 * pad - 1)
    stamps = padded[rows[:, :, None], cols[:, None, :]]
    flags = np.zeros(len(x), dtype=np.int32)
    edge = (ix - half < 0) | (iy - half < 0) | (ix + size - half > nx) | (iy + size - half > ny)
    flags[edge] |= STAMP_EDGE
    flags[masked[rows[:, :, None], cols[:, None, :]].any(axis=(1, 2))] |= STAMP_MASKED
    flags[nonfinite[rows[:, :, None], cols[:, None, :]].any(axis=(1, 2))] |= STAMP_NONFINITE
    return stamps, flags


def stamp_flags(image, x, y, size: int, weight=None) -> np.ndarray:
    """The ``STAMP_*`` bits :func:`cut_stamps` would give, without cutting the stamps.

    Counts masked and non-finite pixels in each box with summed-area tables
    (memory of two images, whatever the number of objects).

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int32.
    """
    image = np.asarray(image)
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    ny, nx = image.shape
    half = size // 2
    finite = np.isfinite(image)
    good = finite if weight is None else finite & (np.asarray(weight) > 0)
    ix = np.rint(x - 1).astype(np.int64)
    iy = np.rint(y - 1).astype(np.int64)
    x0, x1 = np.clip(ix - half, 0, nx), np.clip(ix - half + size, 0, nx)
    y0, y1 = np.clip(iy - half, 0, ny), np.clip(iy - half + size, 0, ny)
    flags = np.zeros(len(x), dtype=np.int32)
    edge = (ix - half < 0) | (iy - half < 0) | (ix + size - half > nx) | (iy + size - half > ny)
    flags[edge] |= STAMP_EDGE
    for bit, bad in ((STAMP_MASKED, ~good & finite), (STAMP_NONFINITE, ~finite)):
        table = np.zeros((ny + 1, nx + 1), dtype=np.int64)
        table[1:, 1:] = np.cumsum(np.cumsum(bad, axis=0), axis=1)
        count = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
        flags[count > 0] |= bit
    return flags


def check_positions(x, y, shape, what: str = "catalogue") -> None:
    """Raise if positions fall outside the image: catalogue and image do not match.

    Raises
    ------
    CatalogueError
    """
    ny, nx = shape
    x = np.asarray(x)
    y = np.asarray(y)
    outside = (x < 0.5) | (y < 0.5) | (x > nx + 0.5) | (y > ny + 0.5)
    if outside.any():
        raise CatalogueError(
            f"{int(outside.sum())} {what} positions fall outside the {nx}x{ny} image "
            f"(max X_IMAGE {x.max():.1f}, Y_IMAGE {y.max():.1f}): catalogue and image do not match"
        )


def stamp_noise_sigma(stamps: np.ndarray, border: int = 3) -> np.ndarray:
    """Robust noise sigma of each stamp from its border pixels.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, S, S)`` background-subtracted stamps (ADU).
    border : int
        Width of the frame used, in pixels. [default: 3]

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float32 sigma (ADU): 1.4826 x median absolute deviation of the
        frame; floored at 1e-3 of the stamp's peak for noiseless stamps.
    """
    stamps = np.asarray(stamps, dtype=np.float32)
    n = len(stamps)
    frame = _frame(stamps, border)
    med = np.median(frame, axis=1, keepdims=True)
    sigma = 1.4826 * np.median(np.abs(frame - med), axis=1)
    peak = np.abs(stamps).reshape(n, -1).max(axis=1)
    floor = np.maximum(1e-3 * peak, 1e-12)
    return np.maximum(sigma, floor).astype(np.float32)


def stamp_border_median(stamps: np.ndarray, border: int = 3) -> np.ndarray:
    """Median of each stamp's border frame (a background estimate, ADU)."""
    return np.median(_frame(np.asarray(stamps, dtype=np.float32), border), axis=1)


def _frame(stamps: np.ndarray, border: int) -> np.ndarray:
    """The pixels of each stamp's border frame, ``(n, k)``."""
    n = len(stamps)
    return np.concatenate(
        [
            stamps[:, :border, :].reshape(n, -1),
            stamps[:, -border:, :].reshape(n, -1),
            stamps[:, border:-border, :border].reshape(n, -1),
            stamps[:, border:-border, -border:].reshape(n, -1),
        ],
        axis=1,
    )
