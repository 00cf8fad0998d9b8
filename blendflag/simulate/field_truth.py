"""The truth table of a simulated field: its galaxies' columns and their blend overlaps.

``OVERLAPS`` and ``N_OVERLAPS`` come from the footprints at the depth of the
blend label, ``OVERLAPS_FIELD`` and ``N_OVERLAPS_FIELD`` from those at the
field's own noise (see :mod:`blendflag.simulate.field`). ``OVERLAPS_VISIBLE``
and ``N_OVERLAPS_VISIBLE`` are those at the label's depth among the *visible*
sources only: optimal S/N (sqrt(sum I^2) / sigma of the noiseless source, at
the label's reference noise) of at least ``blend.min_snr``, the rule of the
study's stamps, where no blend hides an invisible companion. Stars and the PSF
columns are added by :func:`blendflag.simulate.field_stars.add_stars_and_psf_columns`.
"""

from __future__ import annotations

import numpy as np

from blendflag.simulate.field_geometry import footprint_overlaps
from blendflag.simulate.field_layout import GalaxyLayout
from blendflag.simulate.presets import DatasetConfig

#: Truth columns of :func:`blend_overlaps`'s results, in its order.
OVERLAP_COLUMNS = (
    "OVERLAPS",
    "N_OVERLAPS",
    "OVERLAPS_FIELD",
    "N_OVERLAPS_FIELD",
    "OVERLAPS_VISIBLE",
    "N_OVERLAPS_VISIBLE",
)


def blend_overlaps(
    footprints: list, field_footprints, signals, n_sources: int, shape, min_signal: float
) -> tuple:
    """Overlaps of the sources' footprints at the label's depth and at the field's depth.

    Parameters
    ----------
    footprints : list
        Per source (galaxies, then stars) ``(fx0, fy0, mask)`` at the label's depth.
    field_footprints : list or None
        The same at the field's own depth; None for a noiseless field, whose
        overlaps at its own depth are then those at the label's.
    signals : sequence of float
        Per source, sqrt(sum I^2) of its noiseless stamp, ADU.
    n_sources : int
        Galaxies plus stars.
    shape : (int, int)
        The image's (ny, nx), pixels.
    min_signal : float
        A source is visible when its signal is at least this (ADU:
        ``blend.min_snr`` times the label's reference noise).

    Returns
    -------
    tuple
        Per source, in the order of :data:`OVERLAP_COLUMNS`: the ``ID`` it
        overlaps most (-1: none) and how many it overlaps, at the label's depth,
        at the field's depth, and at the label's depth among visible sources
        (an invisible source overlaps nothing there).
    """
    ny, nx = shape
    best, count = footprint_overlaps(footprints, n_sources, nx, ny)
    if field_footprints is not None:
        best_field, count_field = footprint_overlaps(field_footprints, n_sources, nx, ny)
    else:
        best_field, count_field = best, count
    empty = np.zeros((0, 0), dtype=bool)
    visible = [
        fp if signal >= min_signal else (fp[0], fp[1], empty)
        for fp, signal in zip(footprints, signals, strict=True)
    ]
    best_visible, count_visible = footprint_overlaps(visible, n_sources, nx, ny)
    return best, count, best_field, count_field, best_visible, count_visible


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
        One row per galaxy; ``meta`` holds ``ISONOISE`` and ``FLDNOISE`` (ADU),
        and ``SHRSCENE``: positions were sheared about each scene's centre
        (a uniform shear), not in groups.
    """
    from astropy.table import Table

    params = layout.params
    n = len(params)
    overlaps = dict(zip(OVERLAP_COLUMNS, (a[:n] for a in overlaps), strict=True))
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
    for name, values in overlaps.items():
        truth[name] = values
    truth.meta["ISONOISE"] = float(thresh / config.blend.isophote_nsigma)
    truth.meta["FLDNOISE"] = float(sigma)
    truth.meta["SHRSCENE"] = bool(layout.uniform_shear)
    truth["SERSIC_N"] = np.array([p["n"] for p in params])
    truth["B2T"] = np.array([p["b2t"] for p in params])
    if config.galaxy.population == "counts":
        truth["MAG"] = np.array([p["mag"] for p in params])
        truth["MAG"].unit = "mag"
    for name, unit in (("X", "pix"), ("Y", "pix"), ("FLUX", "adu"), ("HLR", "arcsec")):
        truth[name].unit = unit
    return truth
