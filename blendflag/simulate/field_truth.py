"""The truth table of a simulated field: its galaxies' columns and their blend overlaps.

``OVERLAPS`` and ``N_OVERLAPS`` come from the footprints at the depth of the
blend label, ``OVERLAPS_FIELD`` and ``N_OVERLAPS_FIELD`` from those at the
field's own noise (see :mod:`blendflag.simulate.field`). Stars and the PSF
columns are added by :func:`blendflag.simulate.field_stars.add_stars_and_psf_columns`.
"""

from __future__ import annotations

import numpy as np

from blendflag.simulate.field_geometry import footprint_overlaps
from blendflag.simulate.field_layout import GalaxyLayout
from blendflag.simulate.presets import DatasetConfig


def blend_overlaps(footprints: list, field_footprints, n_sources: int, shape) -> tuple:
    """Overlaps of the sources' footprints at the label's depth and at the field's depth.

    Parameters
    ----------
    footprints : list
        Per source (galaxies, then stars) ``(fx0, fy0, mask)`` at the label's depth.
    field_footprints : list or None
        The same at the field's own depth; None for a noiseless field, whose
        overlaps at its own depth are then those at the label's.
    n_sources : int
        Galaxies plus stars.
    shape : (int, int)
        The image's (ny, nx), pixels.

    Returns
    -------
    (best, count, best_field, count_field)
        Per source: the ``ID`` it overlaps most (-1: none) and how many it
        overlaps, at either depth.
    """
    ny, nx = shape
    best, count = footprint_overlaps(footprints, n_sources, nx, ny)
    if field_footprints is not None:
        best_field, count_field = footprint_overlaps(field_footprints, n_sources, nx, ny)
    else:
        best_field, count_field = best, count
    return best, count, best_field, count_field


def galaxy_truth(
    layout: GalaxyLayout, overlaps: tuple, thresh: float, sigma: float, config: DatasetConfig
):
    """The truth table of a field's galaxies (see :func:`~blendflag.simulate.field.simulate_field`).

    Parameters
    ----------
    layout : GalaxyLayout
        The galaxies' parameters and positions (1-based pixels).
    overlaps : tuple
        :func:`blend_overlaps` of galaxies and stars; the galaxies' rows are kept.
    thresh : float
        Isophote of the blend label's footprints, ADU per pixel.
    sigma : float
        The field's noise sigma, ADU.
    config : DatasetConfig
        The preset (``blend.isophote_nsigma``; with ``galaxy.population:
        counts`` the truth also has ``MAG``, AB mag, and ``B2T`` is the drawn
        bulge-to-total ratio).

    Returns
    -------
    astropy.table.Table
        One row per galaxy; ``meta`` holds ``ISONOISE`` and ``FLDNOISE`` (ADU).
    """
    from astropy.table import Table

    params = layout.params
    n = len(params)
    best, count, best_field, count_field = (a[:n] for a in overlaps)
    truth = Table()
    truth["ID"] = np.arange(n, dtype=np.int32)
    truth["X"] = layout.xs
    truth["Y"] = layout.ys
    truth["FLUX"] = np.array([p["flux"] for p in params])
    truth["HLR"] = np.array([p["hlr"] for p in params])
    truth["E1_INTRINSIC"] = np.array([p["g1"] for p in params])
    truth["E2_INTRINSIC"] = np.array([p["g2"] for p in params])
    truth["ROTATED"] = layout.rotated
    truth["PAIR_ID"] = layout.pair_id
    truth["OVERLAPS"] = best
    truth["N_OVERLAPS"] = count
    truth["OVERLAPS_FIELD"] = best_field
    truth["N_OVERLAPS_FIELD"] = count_field
    truth.meta["ISONOISE"] = float(thresh / config.blend.isophote_nsigma)
    truth.meta["FLDNOISE"] = float(sigma)
    truth["SERSIC_N"] = np.array([p["n"] for p in params])
    truth["B2T"] = np.array([p["b2t"] for p in params])
    if config.galaxy.population == "counts":
        truth["MAG"] = np.array([p["mag"] for p in params])
        truth["MAG"].unit = "mag"
    for name, unit in (("X", "pix"), ("Y", "pix"), ("FLUX", "adu"), ("HLR", "arcsec")):
        truth[name].unit = unit
    return truth
