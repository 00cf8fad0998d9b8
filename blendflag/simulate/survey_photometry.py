"""A survey band's photometry from ``surveycodex``: magnitudes to ADU, sky level, pixel noise.

The ``counts`` galaxy population (:mod:`blendflag.simulate.population`) turns
magnitudes into fluxes with a real survey's numbers, never hand-typed ones:
the zero point, sky brightness, gain, pixel scale and exposure time of
``galaxy.counts.survey`` / ``galaxy.counts.filter`` come from ``surveycodex``
(``CFHTLS``, ``Euclid_VIS``, ``LSST``, ``HSC``, ``DES``, ...). A preset
overrides only what differs for its survey (``galaxy.counts.exposure_time``:
CFIS r is 3 x 200 s on MegaCam, Ibata et al. 2017, ApJ 848, 128, where the
CFHTLS ``r`` entry has 2000 s).

surveycodex's zero point ``zp`` is the AB magnitude giving one electron per
second, so a source of magnitude ``m`` gives ``10**(-0.4 (m - zp)) * t``
electrons in an exposure of ``t`` seconds (``surveycodex.utilities.mag2counts``)
and that over the survey's ``gain`` (electrons per ADU) in ADU. The noise of
an empty pixel is the Poisson noise of the sky (read noise and dark current
neglected: the images are sky-dominated): ``sqrt(S) / gain`` ADU for a mean
sky of ``S`` electrons per pixel (``surveycodex.utilities.mean_sky_level``).

``spec`` below is a :class:`~blendflag.simulate.presets.CountsSpec` (read by
attribute: ``survey``, ``filter``, ``exposure_time``). ``surveycodex`` (and
astropy's units) is imported inside the functions.
"""

from __future__ import annotations

import functools
import math

import numpy as np


def survey_band(spec):
    """The ``surveycodex`` survey and filter of ``spec``, with its exposure time applied.

    Parameters
    ----------
    spec : CountsSpec
        ``survey``, ``filter`` and ``exposure_time`` (seconds, or None for
        surveycodex's ``full_exposure_time``).

    Returns
    -------
    survey : surveycodex.survey.Survey
    band : surveycodex.filter.Filter
        The filter, its ``full_exposure_time`` replaced by ``spec.exposure_time``
        when that is given.
    """
    exposure = None if spec.exposure_time is None else float(spec.exposure_time)
    return _survey_band(spec.survey, spec.filter, exposure)


@functools.lru_cache(maxsize=32)
def _survey_band(survey_name: str, filter_name: str, exposure: float | None):
    """:func:`survey_band`, looked up once per survey, filter and exposure (s)."""
    import dataclasses

    import astropy.units as u
    from surveycodex import get_survey

    survey = get_survey(survey_name)
    band = survey.get_filter(filter_name)
    if exposure is not None:
        band = dataclasses.replace(band, full_exposure_time=exposure * u.s)
    return survey, band


def exposure_seconds(spec) -> float:
    """The exposure time (s) of ``spec``: its own, or surveycodex's ``full_exposure_time``."""
    import astropy.units as u

    return float(survey_band(spec)[1].full_exposure_time.to_value(u.s))


def gain(spec) -> float:
    """The survey's gain, electrons per ADU (surveycodex)."""
    import astropy.units as u

    return float(survey_band(spec)[0].gain.to_value(u.electron / u.adu))


def mag_to_electrons(mag, spec) -> np.ndarray:
    """Electrons collected from sources of AB magnitude ``mag`` in the exposure.

    ``10**(-0.4 (mag - zp)) * t`` with surveycodex's zero point ``zp`` (AB
    magnitude of 1 electron/s) and exposure time ``t`` (s): what
    ``surveycodex.utilities.mag2counts`` gives, without its rounding to an integer.

    Parameters
    ----------
    mag : float or array_like
        AB magnitudes.
    spec : CountsSpec

    Returns
    -------
    numpy.ndarray
        float64 electrons.
    """
    import astropy.units as u

    _, band = survey_band(spec)
    zp = float(band.zeropoint.to_value(u.mag))
    t = float(band.full_exposure_time.to_value(u.s))
    return np.power(10.0, -0.4 * (np.asarray(mag, dtype=np.float64) - zp)) * t


def mag_to_adu(mag, spec) -> np.ndarray:
    """Total flux in ADU of sources of AB magnitude ``mag``: electrons over the gain.

    Parameters
    ----------
    mag : float or array_like
        AB magnitudes.
    spec : CountsSpec

    Returns
    -------
    numpy.ndarray
        float64 fluxes, ADU.
    """
    return mag_to_electrons(mag, spec) / gain(spec)


def adu_zero_point(spec) -> float:
    """The AB magnitude of a source of 1 ADU in the exposure: ``m = ZP - 2.5 log10(flux_ADU)``."""
    return float(2.5 * math.log10(float(mag_to_adu(0.0, spec))))


def sky_level_adu(spec) -> float:
    """Mean sky per pixel in the exposure, ADU (``surveycodex.utilities.mean_sky_level`` / gain).

    The sky brightness (mag per arcsec^2) and the pixel scale are surveycodex's.
    """
    import astropy.units as u
    from surveycodex.utilities import mean_sky_level

    survey, band = survey_band(spec)
    electrons = float(mean_sky_level(survey, band).to_value(u.electron))
    return electrons / gain(spec)


def pixel_noise_sigma(spec) -> float:
    """Noise sigma of a pixel of empty sky, ADU: ``sqrt(S) / gain`` for S sky electrons.

    Sky-dominated Poisson noise of the whole exposure (read noise neglected).

    Parameters
    ----------
    spec : CountsSpec

    Returns
    -------
    float
        ADU.
    """
    return math.sqrt(sky_level_adu(spec) * gain(spec)) / gain(spec)


def point_source_depth(spec, aperture: float = 2.0, nsigma: float = 5.0) -> float:
    """Magnitude of a point source detected at ``nsigma`` in a circular aperture.

    Sky noise only, all the source's light inside the aperture (the usual
    definition of a survey's "5-sigma point-source depth in a 2 arcsec
    aperture"); a consistency check of surveycodex's numbers against a
    survey's published depth.

    Parameters
    ----------
    spec : CountsSpec
    aperture : float
        Aperture diameter, arcsec. [default: 2.0]
    nsigma : float
        Detection threshold, in noise sigmas. [default: 5.0]

    Returns
    -------
    float
        AB magnitude.
    """
    import astropy.units as u

    scale = float(survey_band(spec)[0].pixel_scale.to_value(u.arcsec))
    npix = math.pi * (aperture / 2.0) ** 2 / scale**2
    flux = nsigma * pixel_noise_sigma(spec) * math.sqrt(npix)
    return adu_zero_point(spec) - 2.5 * math.log10(flux)


def survey_problem(spec, pixel_scale: float) -> tuple[str, str] | None:
    """What is wrong with ``spec``'s survey for a preset of ``pixel_scale``, or None.

    Returns
    -------
    (key, message) or None
        ``key`` is ``"survey"``, ``"filter"`` (keys of ``galaxy.counts``) or
        ``"pixel_scale"`` (the preset's: the sky per pixel is surveycodex's).
    """
    import astropy.units as u
    from surveycodex import available_surveys, get_survey

    if spec.survey not in available_surveys:
        names = ", ".join(sorted(available_surveys))
        return "survey", f"unknown survey {spec.survey!r} (surveycodex has: {names})"
    survey = get_survey(spec.survey)
    if spec.filter not in survey.available_filters:
        names = ", ".join(survey.available_filters)
        return "filter", f"{spec.survey} has no filter {spec.filter!r} (it has: {names})"
    scale = float(survey.pixel_scale.to_value(u.arcsec))
    if abs(scale - pixel_scale) > 1e-6:
        return "pixel_scale", (
            f"{pixel_scale} arcsec differs from {spec.survey}'s {scale} "
            "(galaxy.population: counts takes the sky per pixel from surveycodex)"
        )
    return None
