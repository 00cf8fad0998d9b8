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

    @property
    def centre(self) -> tuple[float, float]:
        """``(x, y)`` of the core's centre, 1-based pixels (FITS convention)."""
        y0, y1, x0, x1 = self.core
        return 0.5 * (x0 + x1) + 0.5, 0.5 * (y0 + y1) + 0.5

    def psf(self, psf: np.ndarray, psf_model, pixel_scale: float) -> np.ndarray:
        """The PSF image of this cell: ``psf_model`` at the core's centre, drawn
        at ``psf``'s size, when the model varies; ``psf`` otherwise.

        Parameters
        ----------
        psf : numpy.ndarray
            The run's PSF image (its size is kept).
        psf_model : blendflag.psf.model.PSFModel or None
            A PSF that may vary over the image (a PSFEx model).
        pixel_scale : float
            arcsec per pixel.
        """
        if psf_model is None or not psf_model.varies:
            return np.asarray(psf, dtype=np.float64)
        image = psf_model.image_at(*self.centre, np.shape(psf)[0], pixel_scale)
        return np.asarray(image, dtype=np.float64)


def cells_psf_description(psf_model) -> str:
    """What PSF the cells were measured with (for an image engine's ``meta["psf"]``)."""
    if psf_model is None or not psf_model.varies:
        return "one PSF image"
    return f"{psf_model.description} at every cell's centre"


def cell_seeds(seed: int, n_cells: int) -> np.ndarray:
    """One seed per cell for its noise-correction field, from the run's ``seed``.

    Every image engine derives its fields this way, so two engines given the
    same seed (the built-in metadetection and the adapter to the package)
    correct the same cell with the same noise, and the +g and -g images of a
    pair get the same fields whatever the number of workers.
    """
    return np.random.SeedSequence(int(seed)).generate_state(n_cells)


def correction_noise(cell_seed: int, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """The noise field (ADU, Gaussian of ``sigma``) a cell's metacal images are corrected with."""
    return np.random.default_rng(int(cell_seed)).normal(0.0, sigma, size=shape)


def cell_correction(source, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A cell's noise-correction field (ADU): from its seed, or cut from a whole-image field.

    Parameters
    ----------
    source : int or numpy.ndarray
        The cell's seed (:func:`correction_noise`), or the cell's region of a
        unit-variance field of the whole image
        (:func:`blendflag.shear.inputs.context_correction_field`).
    shape : (int, int)
        The cell's region (pixels).
    sigma : float
        Noise sigma, ADU.
    """
    if isinstance(source, np.ndarray):
        if source.shape != tuple(shape):
            raise ValueError(f"correction field of shape {source.shape} for a {shape} cell")
        return np.asarray(source, dtype=np.float64) * sigma
    return correction_noise(int(source), shape, sigma)


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
