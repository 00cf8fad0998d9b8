"""Drawing a field's ``counts``-population galaxies (in worker processes): stamps and footprints.

The counterpart of :func:`blendflag.simulate.field_draw.draw_field_task` for
presets with ``galaxy.population: counts``: the same stamps (noiseless,
PSF-convolved, pixel-integrated, the same side for a given half-light radius)
and footprints, with each galaxy built by
:func:`blendflag.simulate.population.galaxy_object` (bulge + disk + knots).
GalSim is imported inside the functions.
"""

from __future__ import annotations

from blendflag.simulate.field_draw import _stamp_side, footprint
from blendflag.simulate.galaxies import make_psf
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
    import galsim

    gsparams = galsim.GSParams(folding_threshold=config.folding_threshold)
    psf = make_psf(config, gsparams)
    out = []
    for p, x, y in zip(params, xs, ys, strict=True):
        gal = galaxy_object(p, gsparams, shear=shear)
        side = _stamp_side(config, p["hlr"])
        if psf_at is not None:
            psf = psf_at.profile_at(x, y, gsparams)
        stamp = galsim.Convolve(gal, psf, gsparams=gsparams).drawImage(
            nx=side, ny=side, scale=config.pixel_scale, center=galsim.PositionD(x, y)
        )
        arr = stamp.array
        x0, y0 = stamp.bounds.xmin, stamp.bounds.ymin
        out.append((x0, y0, arr, *footprint(arr, x0, y0, thresh)))
    return out


def draw_population_task(start: int, *args):
    """``(start, chunk)``: the first galaxy's index travels with the drawn stamps."""
    return start, _draw_population_chunk(*args)
