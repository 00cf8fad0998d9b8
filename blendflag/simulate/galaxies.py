"""Simulation primitives: galaxy parameters, GalSim galaxies and PSFs, the label isophote.

Every simulated stamp and field is built from these: :func:`sample_galaxy`
draws a galaxy's parameters from a preset's population
(:class:`~blendflag.simulate.presets.GalaxySpec`), :func:`galaxy_object` makes
the GalSim profile (intrinsic shape, then an optional lensing shear),
:func:`make_psf` and :func:`psf_image` give the preset's PSF, and
:func:`isophote_level` is the surface brightness whose isophote defines a
source's footprint, hence the blend label (at the preset's reference depth,
:func:`label_reference_noise`, unless ``blend.isophote_reference`` is
``stamp_noise``).

Sizes are in arcsec, fluxes and surface brightness in ADU. GalSim is imported
inside the functions, never at import time.
"""

from __future__ import annotations

import math

import numpy as np

from blendflag.simulate.presets import DatasetConfig


def _log_uniform(rng, low: float, high: float) -> float:
    if high <= low:
        return float(low)
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def sample_galaxy(rng, spec) -> dict:
    """Draw one galaxy's parameters from a :class:`~blendflag.simulate.presets.GalaxySpec`.

    Returns
    -------
    dict
        ``flux`` (ADU), ``hlr`` (arcsec), ``g1``, ``g2`` (intrinsic reduced
        shear), ``n`` (Sersic index; 1 unless ``profile`` is ``sersic``) and
        ``b2t`` (bulge-to-total flux; 0 unless ``profile`` is ``bulge_disk``).
    """
    flux = _log_uniform(rng, *spec.flux)
    hlr = _log_uniform(rng, *spec.hlr)
    g1 = g2 = 0.0
    if spec.ellipticity_sigma > 0:
        for _ in range(100):
            g1, g2 = rng.normal(0.0, spec.ellipticity_sigma, 2)
            if g1 * g1 + g2 * g2 < spec.ellipticity_max**2:
                break
        else:  # pragma: no cover - needs sigma >> max
            g1 = g2 = 0.0
    n = float(rng.choice(spec.sersic_n)) if spec.profile == "sersic" else 1.0
    b2t = float(rng.uniform(*spec.bulge_fraction)) if spec.profile == "bulge_disk" else 0.0
    return {"flux": flux, "hlr": hlr, "g1": float(g1), "g2": float(g2), "n": n, "b2t": b2t}


def make_psf(config: DatasetConfig, gsparams=None):
    """The dataset's PSF as a GalSim object (sizes in arcsec)."""
    import galsim

    spec = config.psf
    if spec.type == "moffat":
        psf = galsim.Moffat(beta=spec.beta, fwhm=spec.fwhm, gsparams=gsparams)
    elif spec.type == "airy":
        psf = galsim.Airy(
            lam_over_diam=spec.lam_over_diam, obscuration=spec.obscuration, gsparams=gsparams
        )
    else:
        psf = galsim.Gaussian(fwhm=spec.fwhm, gsparams=gsparams)
    if spec.g1 or spec.g2:
        psf = psf.shear(g1=spec.g1, g2=spec.g2)
    return psf


def psf_image(config: DatasetConfig, gsparams=None) -> np.ndarray:
    """The dataset's PSF drawn at its pixel scale (pixel included), sum 1, float32.

    ``config.psf.image_size`` pixels on a side.
    """
    side = config.psf.image_size
    image = make_psf(config, gsparams).drawImage(nx=side, ny=side, scale=config.pixel_scale)
    return (image.array / image.array.sum()).astype(np.float32)


def galaxy_object(params: dict, spec, gsparams=None, shear=None):
    """A GalSim galaxy (not PSF-convolved) from :func:`sample_galaxy` parameters.

    Parameters
    ----------
    params : dict
        ``flux`` (ADU), ``hlr`` (arcsec), ``g1``, ``g2``, ``n``, ``b2t``.
    spec : GalaxySpec
        Gives the profile type and the bulge size ratio.
    shear : (float, float) or None
        A lensing shear applied after the intrinsic shape.
    """
    import galsim

    flux, hlr = params["flux"], params["hlr"]
    if spec.profile == "sersic":
        gal = galsim.Sersic(n=params["n"], half_light_radius=hlr, flux=flux, gsparams=gsparams)
    elif spec.profile == "bulge_disk" and params["b2t"] > 0:
        b2t = params["b2t"]
        disk = galsim.Exponential(half_light_radius=hlr, flux=flux * (1 - b2t), gsparams=gsparams)
        bulge = galsim.DeVaucouleurs(
            half_light_radius=hlr * spec.bulge_size_ratio, flux=flux * b2t, gsparams=gsparams
        )
        gal = galsim.Add([disk, bulge], gsparams=gsparams)
    else:
        gal = galsim.Exponential(half_light_radius=hlr, flux=flux, gsparams=gsparams)
    if params["g1"] or params["g2"]:
        gal = gal.shear(g1=params["g1"], g2=params["g2"])
    if shear is not None and (shear[0] or shear[1]):
        gal = gal.shear(g1=shear[0], g2=shear[1])
    return gal


def label_reference_noise(config: DatasetConfig) -> float | None:
    """The noise sigma (ADU) at whose depth a preset's blend labels are defined.

    The preset's ``default_noise`` (``isophote_reference: default_noise``, the
    default), or None when the labels follow each stamp's own noise
    (``stamp_noise``).
    """
    if config.blend.isophote_reference == "default_noise":
        return float(config.default_noise)
    return None


def isophote_level(config: DatasetConfig, sigma: float) -> float:
    """The surface brightness (ADU per pixel) of the isophote defining footprints.

    ``blend.isophote_nsigma`` times the preset's ``default_noise`` (the default,
    ``isophote_reference: default_noise``: labels do not depend on the stamp's
    noise) or times the stamp's own ``sigma`` (``stamp_noise``).
    """
    ref = label_reference_noise(config)
    return float(config.blend.isophote_nsigma * (sigma if ref is None else ref))
