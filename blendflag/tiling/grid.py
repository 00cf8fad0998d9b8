"""One large image as overlapping sub-tiles: the grid, who owns each object, what is shared.

A CFIS tile (10,000 x 10,000 pixels, about 50,000 objects) is too large to run
``compare`` on in one piece with a bounded memory. :func:`subtile_grid` cuts
the image into square **cores** that cover it exactly once; each sub-tile's
**region** is its core grown by a margin (at least half a stamp plus
:data:`NEIGHBOUR_MARGIN`, clipped to the image), so every stamp and neighbour
mask of an object in the core lies inside the region. An object belongs to the
sub-tile whose core holds the pixel its stamp is centred on
(:func:`owners`): every object is owned exactly once.

What must be the same for every sub-tile is made once, before the tasks, by
:func:`prepare_subtiles` and stored in the work directory:

- ``prep.npz``: the owner of every catalogue row, the PSF, the pixel scale,
  the flaggers' reference noise (the median noise of all objects, as the
  whole image's run uses) and, for neighbour masking, each row's segment id;
- ``segmentation.npy``: the detector's segmentation map of the whole image
  (read back memory-mapped, one region at a time).

Each object's noise-correction field and neighbour fill are keyed by its row
in the whole catalogue (:attr:`blendflag.pipeline.field_input.FieldInput.object_keys`),
so a split run measures every object exactly as the whole image's run does,
and the per-unit sums (units = catalogue rows) add up to the same statistics.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from blendflag.errors import BlendflagError

#: Pixels added to half a stamp in each region's margin (neighbour masks, rounding).
NEIGHBOUR_MARGIN = 16
#: Core side (pixels) of ``compare --sub-tile auto`` on a large image.
DEFAULT_CORE = 2500
#: Images with more pixels than this are split by ``--sub-tile auto``.
AUTO_SPLIT_PIXELS = 25_000_000


@dataclass(frozen=True)
class SubTile:
    """One sub-tile: its core (owned pixels) and region (pixels read), 0-based, end excluded.

    The paths are those of the whole image's files (``--tiles``' checks read
    them); ``index`` is the sub-tile's number in the grid and in ``prep.npz``.
    """

    name: str
    index: int
    core: tuple[int, int, int, int]  # x0, x1, y0, y1
    region: tuple[int, int, int, int]
    image: str
    psf: str | None = None
    catalogue: str | None = None
    weight: str | None = None


def subtile_margin(config) -> int:
    """Margin (pixels) of every region: half the larger stamp, plus one, plus the neighbours'."""
    size = max(int(config.flag.stamp_size), int(config.shear.stamp_size))
    return size // 2 + 1 + NEIGHBOUR_MARGIN


def subtile_grid(shape: tuple[int, int], core: int, margin: int) -> list[tuple]:
    """Cores that tile an image of ``shape`` (ny, nx) exactly once, and their regions.

    Parameters
    ----------
    shape : (int, int)
        Image shape (rows, columns), pixels.
    core : int
        Side of a core, pixels (the last row and column of cores take what is left).
    margin : int
        Pixels added on every side of a core, clipped to the image.

    Returns
    -------
    list of (core, region)
        Each a tuple ``(x0, x1, y0, y1)`` of 0-based pixel bounds, end excluded,
        in row-major order.
    """
    from blendflag.shear.cells import cell_grid

    if core < 1 or margin < 0:
        raise BlendflagError(f"sub-tile core must be >= 1 pixel and margin >= 0, got {core}")
    return [(_x_first(cell.core), _x_first(cell.region)) for cell in cell_grid(shape, core, margin)]


def _x_first(bounds: tuple) -> tuple:
    """``(y0, y1, x0, x1)`` bounds as ``(x0, x1, y0, y1)``."""
    y0, y1, x0, x1 = bounds
    return (x0, x1, y0, y1)


def centre_pixels(x, y, shape) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel each 1-based position's stamp is centred on (as ``cut_stamps``), clipped."""
    ix = np.clip(np.rint(np.asarray(x, dtype=np.float64) - 1).astype(np.int64), 0, shape[1] - 1)
    iy = np.clip(np.rint(np.asarray(y, dtype=np.float64) - 1).astype(np.int64), 0, shape[0] - 1)
    return ix, iy


def owners(x, y, shape, cores: list[tuple]) -> np.ndarray:
    """Index of the core holding each object's centre pixel (every object exactly once).

    Parameters
    ----------
    x, y : array_like
        1-based positions (SExtractor X_IMAGE, Y_IMAGE).
    shape : (int, int)
        Image shape (rows, columns).
    cores : list of (x0, x1, y0, y1)
        Cores that tile the image (:func:`subtile_grid`).

    Raises
    ------
    BlendflagError
        A centre pixel in no core (cores that do not tile the image).
    """
    ix, iy = centre_pixels(x, y, shape)
    owner = np.full(len(ix), -1, dtype=np.int64)
    for k, (x0, x1, y0, y1) in enumerate(cores):
        inside = (ix >= x0) & (ix < x1) & (iy >= y0) & (iy < y1)
        owner[inside & (owner < 0)] = k
    if (owner < 0).any():
        raise BlendflagError("the sub-tile cores do not cover every object")
    return owner


def subtile_hash(sub: SubTile, settings) -> str:
    """The hash that marks a sub-tile done: the settings (with ``inputs_hash``) and its place."""
    text = json.dumps(
        [settings.as_dict(), sub.name, sub.core, sub.region], sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()
