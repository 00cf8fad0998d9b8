"""Drawing a field's ``counts``-population galaxies (in worker processes): stamps and footprints.

The counterpart of :func:`blendflag.simulate.field_draw.draw_field_task` for
presets with ``galaxy.population: counts``: the same stamps (noiseless,
PSF-convolved, pixel-integrated, the same side for a given half-light radius)
and footprints, with each galaxy built by
:func:`blendflag.simulate.population.galaxy_object` (bulge + disk + knots).
GalSim is imported inside the functions.
"""

from __future__ import annotations

from blendflag.simulate.field_draw import _draw_field_chunk
from blendflag.simulate.population import galaxy_object


def _draw_population_chunk(config, params: list, xs, ys, shear, thresh: float, psf_at=None):
    """Draw ``counts`` galaxies (in a worker).

    Parameters
    ----------
    config : DatasetConfig
    params : list of dict
        :func:`~blendflag.simulate.population.draw_population` parameters.
    xs, ys : array_like
        1-based pixel positions.
    shear : (float, float)
        Reduced lensing shear.
    thresh : float
        Isophote of the footprints, ADU per pixel.
    psf_at : VaryingPSF or None
        The PSF at each position; None: the preset's PSF.

    Returns
    -------
    list of (x0, y0, image, fx0, fy0, footprint)
        As :func:`blendflag.simulate.field_draw.draw_field_task`'s chunks.
    """
    return _draw_field_chunk(config, params, xs, ys, shear, thresh, psf_at, _population_galaxy)


def _population_galaxy(params: dict, gsparams, shear):
    """One ``counts`` galaxy's GalSim profile (bulge + disk + knots), sheared."""
    return galaxy_object(params, gsparams, shear=shear)


def draw_population_task(start: int, *args):
    """``(start, chunk)``: the first galaxy's index travels with the drawn stamps."""
    return start, _draw_population_chunk(*args)
