"""Cells of an image for metadetection: cores that tile the image, with buffers.

An image engine that detects on metacal images of a cell (metadetection)
measures each cell with a buffer around its core, so that objects near the
core's edge are detected and measured on the full surrounding light; a
detection is kept only when its position falls inside the core. The cores
tile the image without overlap, so every position belongs to exactly one
cell and nothing is counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Cell:
    """One cell: its core (owned pixels) and the buffered region measured.

    Bounds are 0-based, half-open pixel ranges ``[lo, hi)`` of the image.

    Attributes
    ----------
    index : int
        Position in the image's cell list (row-major); the bootstrap unit.
    core : tuple
        ``(y0, y1, x0, x1)`` of the owned pixels.
    region : tuple
        ``(y0, y1, x0, x1)`` of the core plus the buffer, clipped to the image.
    """

    index: int
    core: tuple[int, int, int, int]
    region: tuple[int, int, int, int]

    def owns(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which 0-based image positions ``(x, y)`` (pixels) fall in the core.

        A position on a pixel centre belongs to that pixel; one on the
        boundary between two cores to the upper one (``floor(x + 0.5)``).
        """
        y0, y1, x0, x1 = self.core
        ix = np.floor(np.asarray(x, dtype=np.float64) + 0.5)
        iy = np.floor(np.asarray(y, dtype=np.float64) + 0.5)
        return (ix >= x0) & (ix < x1) & (iy >= y0) & (iy < y1)


def cell_grid(shape: tuple[int, int], core: int, buffer: int) -> list[Cell]:
    """Cells whose cores tile an image of ``shape`` (ny, nx) pixels.

    Parameters
    ----------
    shape : tuple of int
        Image shape (ny, nx).
    core : int
        Core side in pixels (the last row and column of cores are smaller when
        ``core`` does not divide the image).
    buffer : int
        Buffer width on each side, pixels (clipped at the image's edges).

    Returns
    -------
    list of Cell
        Row-major; every pixel of the image is in exactly one core.

    Raises
    ------
    ValueError
        ``core < 1`` or ``buffer < 0``.
    """
    if core < 1 or buffer < 0:
        raise ValueError(f"cell core must be >= 1 and buffer >= 0, got {core} and {buffer}")
    ny, nx = shape
    cells = []
    for y0 in range(0, ny, core):
        for x0 in range(0, nx, core):
            y1, x1 = min(y0 + core, ny), min(x0 + core, nx)
            region = (
                max(0, y0 - buffer),
                min(ny, y1 + buffer),
                max(0, x0 - buffer),
                min(nx, x1 + buffer),
            )
            cells.append(Cell(len(cells), (y0, y1, x0, x1), region))
    return cells
