"""Galaxy populations: today's log-uniform draw, or a survey's sky from number counts.

A preset chooses its population with ``galaxy.population``:

``loguniform`` (the default of every packaged preset but ``cfis_survey``)
    :func:`blendflag.simulate.galaxies.sample_galaxy`, unchanged: fluxes and
    half-light radii log-uniform in the preset's ranges.

``counts``
    Galaxy by galaxy as a survey sees the sky, every number from the preset's
    ``galaxy.counts`` (:class:`~blendflag.simulate.presets.CountsSpec`; the
    sources of the packaged values are cited in ``configs/cfis_survey.yaml``):

    - **magnitudes** (AB, the survey's band) from differential number counts,
      a broken power law ``log10 n(m)`` (``n`` in galaxies per arcmin^2 per mag)
      through ``counts_pivot`` with slopes ``counts_slopes`` changing at
      ``counts_breaks``, from ``bright_mag`` down to the faint limit
      ``max(depth + faint_below_depth, faint_min)`` (2.5 mag below the 5-sigma
      point-source depth and at least 27 by default): galaxies far below the
      detection limit are in every image. The number per arcmin^2 is the
      counts integrated over that range (:func:`galaxy_density`).
    - **fluxes** in ADU with the survey's zero point, gain and exposure time
      from ``surveycodex`` (:mod:`blendflag.simulate.survey_photometry`).
    - **sizes**: the median exponential-disk scale length ``r_d`` follows
      ``ln(r_d / arcsec) = a + b (m - m0)`` (``size_relation``; Miller et al.
      2013, MNRAS 429, 2858, appendix B1: ``a = -1.145``, ``b = -0.269``,
      ``m0 = 23`` in HST's F814W, from Simard et al. 2002's HST disk fits); the
      disk's half-light radius is ``1.678 r_d`` and scatters log-normally about
      that median (``size_scatter`` in ln, truncated at ``size_clip`` sigmas).
    - **bulge + disk**: a fraction ``bulge_dominated`` of galaxies are pure
      de Vaucouleurs bulges, the others have a bulge-to-total ratio
      ``|N(0, bulge_sigma)|`` (the CFHTLenS image simulations' choice, Miller
      et al. 2013: 10% pure bulges, sigma 0.1); the bulge's half-light radius
      is ``bulge_size_ratio`` times the disk's (0.596: equal to the disk's
      scale length, as in lensfit's bulge + disk model).
    - **ellipticities** ``|e| = (a - b) / (a + b)`` (GalSim's reduced shear g)
      from the distributions Miller et al. 2013 measured and used as lensfit's
      priors: disks ``p(e) ~ e (1 - exp((e - e_max) / a)) / ((1 + e)
      sqrt(e^2 + e_0^2))`` (``e_max = 0.804``, ``e_0 = 0.0256``,
      ``a = 0.2539``), bulge-dominated galaxies (bulge-to-total >= 0.5)
      ``p(e) ~ e exp(-b e - c e^2)`` (``b = 2.368``, ``c = 6.691``); position
      angles uniform.
    - **star-forming knots**: a fraction ``knot_galaxies`` of the galaxies with
      a disk carry ``knot_flux`` of the disk's light in ``knot_number``
      ``galsim.RandomKnots`` point sources laid out like the disk, seeded from
      the rng passed in.

:func:`draw_galaxy_params` draws a field's galaxies from the preset's
population (either kind); :func:`draw_population` draws N ``counts``
galaxies (one parameter dict each, the keys of
:func:`~blendflag.simulate.galaxies.sample_galaxy` plus ``mag``,
``bulge_hlr``, ``knot_frac``, ``n_knots``, ``knot_seed``);
:func:`galaxy_object` builds the GalSim profile of one. Magnitudes in AB
mag, sizes in arcsec, fluxes in ADU. GalSim is imported inside the functions.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np

from blendflag.simulate.galaxies import galaxy_object as loguniform_galaxy_object
from blendflag.simulate.galaxies import sample_galaxy
from blendflag.simulate.survey_photometry import mag_to_adu

#: Half-light radius of an exponential profile over its scale length.
EXP_HLR_PER_SCALE = 1.6783469900166608
#: Points of the tabulated ellipticity distributions (their inverse CDFs).
_E_GRID = 4001


# ---------------------------------------------------------------------------
# Number counts
# ---------------------------------------------------------------------------


def log10_counts(mag, spec) -> np.ndarray:
    """log10 of the differential counts ``n(m)``, galaxies per arcmin^2 per mag.

    A continuous broken power law: slope ``counts_slopes[k]`` between
    ``counts_breaks[k-1]`` and ``counts_breaks[k]``, through ``counts_pivot``.

    Parameters
    ----------
    mag : float or array_like
        AB magnitudes.
    spec : CountsSpec

    Returns
    -------
    numpy.ndarray
        log10(galaxies per arcmin^2 per mag).
    """
    mag = np.asarray(mag, dtype=np.float64)
    pivot_mag, pivot_n = spec.counts_pivot
    edges = [-np.inf, *spec.counts_breaks, np.inf]
    out = np.full(mag.shape, math.log10(pivot_n))
    for k, slope in enumerate(spec.counts_slopes):
        lo, hi = edges[k], edges[k + 1]
        out = out + slope * (np.clip(mag, lo, hi) - min(max(pivot_mag, lo), hi))
    return out


def _segments(spec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The counts' power-law pieces between ``bright_mag`` and the faint limit.

    Returns
    -------
    edges : numpy.ndarray
        Their magnitude limits (one more than pieces).
    slopes : numpy.ndarray
        d log10 n / dm of each piece.
    numbers : numpy.ndarray
        Galaxies per arcmin^2 in each piece.
    """
    inner = [b for b in spec.counts_breaks if spec.bright_mag < b < spec.faint_mag]
    edges = np.array([spec.bright_mag, *inner, spec.faint_mag])
    mids = 0.5 * (edges[1:] + edges[:-1])
    slopes = np.asarray(spec.counts_slopes)[np.searchsorted(spec.counts_breaks, mids)]
    n_lo, n_hi = 10.0 ** log10_counts(edges[:-1], spec), 10.0 ** log10_counts(edges[1:], spec)
    numbers = (n_hi - n_lo) / (slopes * math.log(10.0))
    return edges, slopes, numbers


def galaxy_density(spec) -> float:
    """Galaxies per arcmin^2 between ``bright_mag`` and the faint limit: the counts integrated."""
    return float(_segments(spec)[2].sum())


def magnitude_cdf(mag, spec) -> np.ndarray:
    """Fraction of galaxies brighter than ``mag``: 0 at ``bright_mag``, 1 at the faint limit."""
    mag = np.clip(np.asarray(mag, dtype=np.float64), spec.bright_mag, spec.faint_mag)
    edges, slopes, numbers = _segments(spec)
    below = np.concatenate([[0.0], np.cumsum(numbers)])
    k = np.clip(np.searchsorted(edges, mag, side="right") - 1, 0, len(numbers) - 1)
    inside = (10.0 ** log10_counts(mag, spec) - 10.0 ** log10_counts(edges[k], spec)) / (
        slopes[k] * math.log(10.0)
    )
    return (below[k] + inside) / below[-1]


def draw_power_law(rng: np.random.Generator, n: int, mags, slope: float) -> np.ndarray:
    """``n`` magnitudes in ``mags`` (bright, faint) with counts ``log10 N = const + slope m``.

    Star counts (:func:`draw_star_magnitudes`) use it; inverse CDF of one uniform each.
    """
    lo, hi = mags
    grow = 10.0 ** (slope * (hi - lo)) - 1.0
    return lo + np.log10(1.0 + rng.uniform(0.0, 1.0, n) * grow) / slope


def star_count(spec, area_arcmin2: float, rng: np.random.Generator) -> int:
    """Poisson number of stars in ``area_arcmin2`` at ``spec.star_density``."""
    return int(rng.poisson(spec.star_density * area_arcmin2)) if spec.star_density > 0 else 0


def draw_magnitudes(rng: np.random.Generator, n: int, spec) -> np.ndarray:
    """``n`` AB magnitudes drawn from the counts (inverse CDF of one uniform each).

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
    spec : CountsSpec

    Returns
    -------
    numpy.ndarray
        float64 magnitudes in ``[bright_mag, faint limit]``.
    """
    edges, slopes, numbers = _segments(spec)
    cum = np.concatenate([[0.0], np.cumsum(numbers)]) / numbers.sum()
    u = rng.uniform(0.0, 1.0, n)
    k = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, len(numbers) - 1)
    frac = (u - cum[k]) / (cum[k + 1] - cum[k])  # position within piece k, in number
    width = edges[k + 1] - edges[k]
    grow = np.power(10.0, slopes[k] * width) - 1.0
    return edges[k] + np.log10(1.0 + frac * grow) / slopes[k]


# ---------------------------------------------------------------------------
# Sizes, ellipticities, bulges, knots
# ---------------------------------------------------------------------------


def median_hlr(mag, spec) -> np.ndarray:
    """Median disk half-light radius (arcsec) at ``mag``: 1.678 r_d of ``size_relation``."""
    a, b, m0 = spec.size_relation
    return EXP_HLR_PER_SCALE * np.exp(a + b * (np.asarray(mag, dtype=np.float64) - m0))


def _truncated_normal(rng: np.random.Generator, n: int, clip: float) -> np.ndarray:
    """``n`` standard normal deviates, those beyond ``clip`` redrawn."""
    z = rng.standard_normal(n)
    bad = np.abs(z) > clip
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > clip
    return z


def draw_sizes(rng: np.random.Generator, mags: np.ndarray, spec) -> np.ndarray:
    """Disk half-light radii (arcsec): log-normal about :func:`median_hlr`."""
    z = _truncated_normal(rng, len(mags), spec.size_clip)
    return median_hlr(mags, spec) * np.exp(spec.size_scatter * z)


def disc_ellipticity_pdf(e, spec) -> np.ndarray:
    """Unnormalised disk ellipticity density (Miller et al. 2013); 0 at and above ``e_max``."""
    e = np.asarray(e, dtype=np.float64)
    e_max, e_0, a = spec.ellipticity_disc
    pdf = e * (1.0 - np.exp((e - e_max) / a)) / ((1.0 + e) * np.sqrt(e * e + e_0 * e_0))
    return np.where(e < e_max, pdf, 0.0)


def bulge_ellipticity_pdf(e, spec) -> np.ndarray:
    """Unnormalised bulge ellipticity density ``e exp(-b e - c e^2)`` for e < 1 (Miller 2013)."""
    e = np.asarray(e, dtype=np.float64)
    b, c = spec.ellipticity_bulge
    return np.where(e < 1.0, e * np.exp(-b * e - c * e * e), 0.0)


@functools.lru_cache(maxsize=16)
def _cdf_table(kind: str, params: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``(cdf, grid)`` of the disk or bulge ellipticity density, tabulated once per parameters.

    ``kind`` is ``"disc"`` or ``"bulge"``; ``params`` the distribution's
    numbers (``ellipticity_disc`` or ``ellipticity_bulge``). Stamps draw one
    galaxy at a time, so the table is kept instead of rebuilt per draw.
    """
    pdf = disc_ellipticity_pdf if kind == "disc" else bulge_ellipticity_pdf
    spec = SimpleNamespace(**{f"ellipticity_{kind}": params})
    grid = np.linspace(0.0, 1.0, _E_GRID)
    p = pdf(grid, spec)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(grid))])
    keep = np.concatenate([[True], np.diff(cdf) > 0])  # strictly increasing for np.interp
    return cdf[keep], grid[keep]


def _inverse_cdf(kind: str, params, u: np.ndarray) -> np.ndarray:
    """Values in [0, 1) of the ``kind`` ellipticity density at quantiles ``u``."""
    cdf, grid = _cdf_table(kind, tuple(float(x) for x in params))
    return np.interp(u * cdf[-1], cdf, grid)


def draw_ellipticities(rng: np.random.Generator, bulgy: np.ndarray, spec):
    """Intrinsic (g1, g2): |g| from the disk or bulge distribution, uniform position angle.

    Parameters
    ----------
    rng : numpy.random.Generator
    bulgy : numpy.ndarray
        bool, True for the galaxies whose |g| follows the bulge distribution.
    spec : CountsSpec

    Returns
    -------
    g1, g2 : numpy.ndarray
    """
    u = rng.uniform(0.0, 1.0, len(bulgy))
    angle = rng.uniform(0.0, math.pi, len(bulgy))
    size = np.where(
        bulgy,
        _inverse_cdf("bulge", spec.ellipticity_bulge, u),
        _inverse_cdf("disc", spec.ellipticity_disc, u),
    )
    return size * np.cos(2.0 * angle), size * np.sin(2.0 * angle)


def draw_bulge_fractions(rng: np.random.Generator, n: int, spec) -> np.ndarray:
    """Bulge-to-total flux ratios: 1 for ``bulge_dominated`` of them, else ``|N(0, sigma)|``."""
    pure = rng.uniform(0.0, 1.0, n) < spec.bulge_dominated
    b2t = np.abs(spec.bulge_sigma * rng.standard_normal(n))
    high = b2t > 1.0
    while high.any():
        b2t[high] = np.abs(spec.bulge_sigma * rng.standard_normal(int(high.sum())))
        high = b2t > 1.0
    return np.where(pure, 1.0, b2t)


def draw_knots(rng: np.random.Generator, b2t: np.ndarray, spec, mags=None):
    """Star-forming knots of the galaxies with a disk (``b2t < 1``).

    Galaxies fainter than ``spec.smooth_mag`` (``mags`` given) get none: the
    drawing shortcut of :class:`~blendflag.simulate.presets.CountsSpec`; the
    same numbers are drawn either way.

    Returns
    -------
    knot_frac : numpy.ndarray
        Fraction of the disk's flux in knots (0: none).
    n_knots : numpy.ndarray
        int64 number of knots (0: none).
    knot_seed : numpy.ndarray
        int64 seeds of ``galsim.BaseDeviate`` for their positions.
    """
    n = len(b2t)
    lit = (rng.uniform(0.0, 1.0, n) < spec.knot_galaxies) & (b2t < 1.0)
    if mags is not None:
        lit &= np.asarray(mags) <= spec.smooth_mag
    frac = rng.uniform(spec.knot_flux[0], spec.knot_flux[1], n)
    number = rng.integers(spec.knot_number[0], spec.knot_number[1] + 1, n)
    seeds = rng.integers(1, 2**31 - 1, n)
    return np.where(lit, frac, 0.0), np.where(lit, number, 0), seeds


def draw_population(rng: np.random.Generator, n: int, spec) -> list[dict]:
    """Draw ``n`` galaxies of the ``counts`` population.

    The stream is used in a fixed order: magnitudes, sizes, bulge fractions,
    ellipticities, knots.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
    spec : CountsSpec

    Returns
    -------
    list of dict
        Per galaxy: ``mag`` (AB), ``flux`` (ADU), ``hlr`` (disk half-light
        radius, arcsec), ``bulge_hlr`` (arcsec), ``g1``, ``g2`` (intrinsic
        reduced shear), ``n`` (1.0), ``b2t`` (bulge-to-total flux),
        ``knot_frac`` (of the disk's flux), ``n_knots``, ``knot_seed``.
    """
    mags = draw_magnitudes(rng, n, spec)
    hlr = draw_sizes(rng, mags, spec)
    b2t = draw_bulge_fractions(rng, n, spec)
    g1, g2 = draw_ellipticities(rng, b2t >= 0.5, spec)
    knot_frac, n_knots, seeds = draw_knots(rng, b2t, spec, mags)
    flux = mag_to_adu(mags, spec)
    return [
        {
            "mag": float(mags[i]),
            "flux": float(flux[i]),
            "hlr": float(hlr[i]),
            "bulge_hlr": float(hlr[i] * spec.bulge_size_ratio),
            "g1": float(g1[i]),
            "g2": float(g2[i]),
            "n": 1.0,
            "b2t": float(b2t[i]),
            "knot_frac": float(knot_frac[i]),
            "n_knots": int(n_knots[i]),
            "knot_seed": int(seeds[i]),
        }
        for i in range(n)
    ]


def draw_galaxy_params(rng: np.random.Generator, n: int, config) -> list[dict]:
    """Parameters of ``n`` galaxies from the preset's ``galaxy.population``.

    ``loguniform``: ``n`` calls of :func:`~blendflag.simulate.galaxies.sample_galaxy`
    (exactly the draws fields made before populations existed); ``counts``:
    :func:`draw_population`.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
    config : DatasetConfig

    Returns
    -------
    list of dict
    """
    if config.galaxy.population == "counts":
        return draw_population(rng, n, config.galaxy.counts)
    return [sample_galaxy(rng, config.galaxy) for _ in range(n)]


def uses_counts(config) -> bool:
    """True when the preset's galaxies are the ``counts`` population."""
    return config.galaxy.population == "counts"


def draw_one_galaxy(rng: np.random.Generator, config) -> dict:
    """One galaxy of the preset's population (the stamps' draw).

    ``loguniform``: exactly :func:`~blendflag.simulate.galaxies.sample_galaxy`
    (the stamps of the original study's presets are unchanged); ``counts``:
    :func:`draw_population` of one.
    """
    if uses_counts(config):
        return draw_population(rng, 1, config.galaxy.counts)[0]
    return sample_galaxy(rng, config.galaxy)


def galaxy_profile(params: dict, config, gsparams=None, shear=None):
    """The GalSim profile (not PSF-convolved) of one galaxy of the preset's population.

    :func:`galaxy_object` for ``counts``, else
    :func:`blendflag.simulate.galaxies.galaxy_object` with the preset's
    ``galaxy`` section.
    """
    if uses_counts(config):
        return galaxy_object(params, gsparams, shear=shear)
    return loguniform_galaxy_object(params, config.galaxy, gsparams, shear=shear)


# ---------------------------------------------------------------------------
# One galaxy's profile
# ---------------------------------------------------------------------------


def _disk(params: dict, gsparams):
    """The disk: a smooth exponential plus its knots (None without a disk)."""
    import galsim

    disk_flux = params["flux"] * (1.0 - params["b2t"])
    if disk_flux <= 0:
        return None
    hlr, frac = params["hlr"], params["knot_frac"]
    smooth = galsim.Exponential(
        half_light_radius=hlr, flux=disk_flux * (1.0 - frac), gsparams=gsparams
    )
    if frac <= 0 or params["n_knots"] <= 0:
        return smooth
    knots = galsim.RandomKnots(
        params["n_knots"],
        profile=galsim.Exponential(half_light_radius=hlr, flux=disk_flux * frac, gsparams=gsparams),
        rng=galsim.BaseDeviate(params["knot_seed"]),
        gsparams=gsparams,
    )
    return galsim.Add([smooth, knots], gsparams=gsparams)


def galaxy_object(params: dict, gsparams=None, shear=None):
    """The GalSim profile (not PSF-convolved) of one :func:`draw_population` galaxy.

    Disk (exponential, with knots) plus de Vaucouleurs bulge, given the
    intrinsic shape, then the lensing ``shear``. A galaxy with ``rot90`` true
    (the rotated twin of a rotated-pair field) is turned by 90 degrees before
    its (already negated) intrinsic shape, so that its knots turn with it.

    Parameters
    ----------
    params : dict
        ``flux`` (ADU), ``hlr``, ``bulge_hlr`` (arcsec), ``b2t``, ``g1``, ``g2``,
        ``knot_frac``, ``n_knots``, ``knot_seed``, optionally ``rot90``.
    gsparams : galsim.GSParams or None
    shear : (float, float) or None
        Reduced lensing shear applied after the intrinsic shape.

    Returns
    -------
    galsim.GSObject
    """
    import galsim

    parts = [p for p in (_disk(params, gsparams),) if p is not None]
    if params["b2t"] > 0:
        bulge_flux = params["flux"] * params["b2t"]
        parts.append(
            galsim.DeVaucouleurs(
                half_light_radius=params["bulge_hlr"], flux=bulge_flux, gsparams=gsparams
            )
        )
    gal = parts[0] if len(parts) == 1 else galsim.Add(parts, gsparams=gsparams)
    if params.get("rot90"):
        gal = gal.rotate(90.0 * galsim.degrees)
    if params["g1"] or params["g2"]:
        gal = gal.shear(g1=params["g1"], g2=params["g2"])
    if shear is not None and (shear[0] or shear[1]):
        gal = gal.shear(g1=shear[0], g2=shear[1])
    return gal
