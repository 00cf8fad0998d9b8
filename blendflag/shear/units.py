"""Bootstrap units of a stamp engine's selections: square cells of the sky.

Every stamp selection is summed per unit, and the bootstrap resamples units,
not objects: blended neighbours share light and detection, so objects close
on the sky are not independent. A unit is a square cell of
``shear.bootstrap_cell`` pixels of the image (positions as detected, no truth
involved), as metadetection resamples its cells. The unit ids are the same on
the +g and -g images of a ±g pair (same shape, galaxies on the same pixels),
so one draw takes a cell of both signs together: the pair's noise cancellation
is kept in every draw.

A galaxy of a ±g pair sits on nearly the same pixels in both images only if
the simulation kept it there. A uniform shear moves a galaxy 2 g r pixels
between the two images at r pixels from the shear's centre, across a cell
border for some: blendflag's survey fields shear each scene about its centre
(the truth's ``SHRSCENE``), an outside simulation (descwl-shear-sims, GalSim
scenes) the whole image about its centre. So on an image with a known shear,
positions are first taken back by that shear about that centre, and the +g
and -g images put each galaxy in the same cell. (Fields sheared in groups of
neighbours, the log-uniform presets', keep isolated galaxies in place.)

On a simulation with 90-degree rotated halves (the ``ROTPAIRS`` header card of
``simulate-field``, or the truth's ``ROTATED`` column) a cell of the left half
and its rotated twin in the right half are one unit, so the twins' intrinsic
shapes cancel inside the unit as they do in the total. ``bootstrap_cell: 0``
makes every detection its own unit.

An image engine (metadetection) detects on each metacal image itself; its
rows are put in the same cells by position (:func:`version_units`), so its
bootstrap takes the same cells of the sky, twins and signs together, as a
stamp engine's. (Its own measurement cells are fixed on the image: a galaxy
moved by the shear may change cell between +g and -g, and a rotated twin is
in another cell, so their noise and shapes would not cancel inside a unit.)
With ``bootstrap_cell: 0`` an image engine keeps its own cells.
"""

from __future__ import annotations

import numpy as np


def cell_ids(
    x,
    y,
    shape: tuple[int, int],
    cell_size: int,
    rotated_halves: bool = False,
    origin: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The cell of each position: ``row * n_columns + column`` of a grid from the image corner.

    Parameters
    ----------
    x, y : array_like
        Positions (pixels, 1-based as ``X_IMAGE``) in the image whose shape is ``shape``.
    shape : (int, int)
        ``(ny, nx)`` of the whole image (pixels).
    cell_size : int
        Side of a cell (pixels), > 0.
    rotated_halves : bool
        The right half (``x > nx / 2``) is the left half turned by 90 degrees
        about its centre (:func:`blendflag.simulate.field_layout` convention):
        right-half positions are turned back first, so twins share a cell.
        [default: False]
    origin : (float, float)
        Offset (pixels) to add to ``x`` and ``y``: a sub-tile's corner in the
        whole image. [default: (0, 0)]

    Returns
    -------
    numpy.ndarray
        int64 cell id per position (>= 0).
    """
    x = np.asarray(x, dtype=np.float64) + origin[0]
    y = np.asarray(y, dtype=np.float64) + origin[1]
    ny, nx = shape
    if rotated_halves:
        side = nx // 2
        right = x > side + 0.5
        # twin (x', y') = (side + c - (y - c), c + (x - c)) with c = (side + 1) / 2
        x, y = np.where(right, y, x), np.where(right, 2 * side + 1 - x, y)
        nx = side
    n_columns = -(-nx // cell_size)
    n_rows = -(-ny // cell_size)
    column = np.clip(np.floor((x - 0.5) / cell_size), 0, n_columns - 1).astype(np.int64)
    row = np.clip(np.floor((y - 0.5) / cell_size), 0, n_rows - 1).astype(np.int64)
    return row * n_columns + column


def context_units(context) -> np.ndarray | None:
    """Bootstrap unit of every detection of a pipeline context (None: each its own).

    Cells of ``config.shear.bootstrap_cell`` pixels (:func:`sky_cells`) of the
    pipeline's detections.
    """
    if context.table is None:
        return None
    return sky_cells(context, context.table["X_IMAGE"], context.table["Y_IMAGE"])


def version_units(context, tables: dict) -> dict | None:
    """Bootstrap unit of every row of an image engine's version catalogues (None: its own).

    The same sky cells as a stamp engine's detections (:func:`sky_cells`),
    from each row's position before the metacal shear (``X_UNSHEARED``,
    ``Y_UNSHEARED`` where the catalogue has them, else ``X_IMAGE``,
    ``Y_IMAGE``): a galaxy falls in one cell in every version and both signs,
    and a rotated twin in its twin's cell.

    Parameters
    ----------
    context : blendflag.pipeline.stages.Context
        The image's context (shape, header, truth, shear, ``shear.bootstrap_cell``).
    tables : dict
        ``{version: astropy Table}`` of the engine's detections (1-based pixels).

    Returns
    -------
    dict or None
        ``{version: int64 unit per row}``; None with ``shear.bootstrap_cell: 0``.
    """
    units = {}
    for version, table in tables.items():
        xcol, ycol = (
            ("X_UNSHEARED", "Y_UNSHEARED")
            if "X_UNSHEARED" in table.colnames
            else ("X_IMAGE", "Y_IMAGE")
        )
        cells = sky_cells(context, table[xcol], table[ycol])
        if cells is None:
            return None
        units[version] = cells
    return units


def sky_cells(context, x, y) -> np.ndarray | None:
    """The bootstrap cell of positions ``x, y`` (1-based pixels) of a context's image.

    Cells of ``config.shear.bootstrap_cell`` pixels (:func:`cell_ids`) in the
    frame of the whole image (a sub-tile's ``frame``), rotated halves from
    the image header's ``ROTPAIRS`` card or the truth's ``ROTATED`` column,
    positions of a ±g image taken back by its shear first. None when
    ``bootstrap_cell`` is 0 or there is no image.
    """
    size = context.config.shear.bootstrap_cell
    if not size or context.image is None:
        return None
    frame = context.results.get("frame")
    origin, shape = ((0.0, 0.0), context.image.shape) if frame is None else frame
    x = np.asarray(x, dtype=np.float64) + origin[0]
    y = np.asarray(y, dtype=np.float64) + origin[1]
    rotated = rotated_halves(context.image_header, context.truth)
    if context.true_shear is not None:
        own = [context.shear_sign * g for g in context.true_shear]  # true_shear is the +g's
        if context.truth is None:  # an outside simulation
            x, y = unsheared(x, y, shape, own)
        elif context.truth.meta.get("SHRSCENE"):
            x, y = unsheared_scenes(x, y, shape, own, 2 if rotated else 1)
    return cell_ids(x, y, shape, size, rotated_halves=rotated)


def unsheared(x, y, shape: tuple[int, int], shear) -> tuple[np.ndarray, np.ndarray]:
    """Positions (1-based pixels) taken back by a shear ``(g1, g2)`` about the image centre.

    Inverts ``x_sheared = A(g) x``, with ``A(g) = [[1 + g1, g2], [g2, 1 - g1]] /
    sqrt(1 - |g|^2)`` (GalSim's shear matrix) about ``((nx + 1) / 2, (ny + 1) / 2)``.
    """
    g1, g2 = (float(v) for v in shear)
    ny, nx = shape
    cx, cy = (nx + 1) / 2.0, (ny + 1) / 2.0
    matrix = np.array([[1 + g1, g2], [g2, 1 - g1]]) / np.sqrt(1 - g1 * g1 - g2 * g2)
    back = np.linalg.inv(matrix) @ np.vstack([np.asarray(x) - cx, np.asarray(y) - cy])
    return back[0] + cx, back[1] + cy


def unsheared_scenes(x, y, shape, shear, scenes: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (1-based pixels) of a blendflag field taken back by its uniform shear.

    Each of the ``scenes`` square scenes side by side was sheared about its
    own centre by :func:`blendflag.simulate.field_geometry.position_matrix`.
    """
    from blendflag.simulate.field_geometry import position_matrix

    ny, nx = shape
    side = nx // scenes
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    scene = np.clip(np.floor((x - 0.5) / side), 0, scenes - 1)
    cx, cy = scene * side + (side + 1) / 2.0, (ny + 1) / 2.0
    back = np.linalg.inv(position_matrix(shear)) @ np.vstack([x - cx, y - cy])
    return back[0] + cx, back[1] + cy


def rotated_halves(header, truth) -> bool:
    """Whether a simulated image's right half is its left half turned by 90 degrees."""
    if header is not None and "ROTPAIRS" in header:
        return bool(header["ROTPAIRS"])
    return truth is not None and "ROTATED" in truth.colnames and bool(np.any(truth["ROTATED"]))


def unit_note(cell_size: int, rotated: bool) -> str:
    """What one bootstrap unit of a stamp selection is, in words (the JSON's ``bootstrap.unit``)."""
    if not cell_size:
        return "one detection"
    unit = f"the detections in one {cell_size}x{cell_size}-pixel cell of an image"
    if rotated:
        unit += " and in its 90-degree rotated twin cell"
    return unit
