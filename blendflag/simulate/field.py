"""Simulated fields with a known shear: image, weight, PSF and truth.

Galaxies from the dataset's population are placed uniformly at random (so
natural blends occur), each given its intrinsic shape, then the lensing shear
``(g1, g2)`` (``galsim`` ``.shear(g1=, g2=)`` after the intrinsic shape), then
convolved with the PSF and the pixel and added to the image; Gaussian noise of
sigma ``noise_sigma`` (ADU) is added last.

With ``rotated_pairs=True`` the image is two square halves side by side: the
right half holds the left half's scene rotated by 90 degrees about its centre
(positions rotated, each intrinsic shape rotated: ``(e1, e2) -> (-e1, -e2)``),
then sheared like the left. Intrinsic shape noise cancels in pair averages,
for blended galaxies too (their light rotates with them, and a 90-degree turn
maps the pixel grid onto itself). ``PAIR_ID`` links the two members.

``OVERLAPS`` uses the stamps' blend criterion
(:mod:`blendflag.simulate.stamp_maker`): a galaxy's footprint is where its own
noiseless image exceeds the isophote of
:func:`blendflag.simulate.galaxies.isophote_level` (``blend.isophote_nsigma``
times the preset's ``default_noise`` by default); ``OVERLAPS`` is the ``ID``
of the galaxy whose footprint shares the most pixels with it, or -1, and
``N_OVERLAPS`` how many do (:func:`blendflag.simulate.field_geometry.footprint_overlaps`).
``OVERLAPS_FIELD`` and ``N_OVERLAPS_FIELD`` are the same at the field's own
noise (the isophote at ``blend.isophote_nsigma`` times the field's sigma): the
blends this image shows, which at a deep field's low noise include galaxies the
preset's depth calls isolated. The truth's ``meta`` holds both depths
(``ISONOISE``, ``FLDNOISE``, ADU).

Positions are sheared like the shapes. Presets with number counts shear
every position about its half's centre, as lensing does, and permute the
pixel noise to follow the scene (:mod:`blendflag.simulate.scene_noise`), so
that the noise under each galaxy is the same draws in the +g and -g images
(``galaxy.counts.shear_group_link: .inf``). The original study's presets
shear about the centre of each group of neighbours (friends-of-friends,
linking length 25 px): blended separations are sheared, isolated galaxies do
not move and keep their noise pixels
(:func:`blendflag.simulate.field_geometry.shear_positions`);
:func:`blendflag.simulate.field_io.write_field` writes a field's FITS files.

GalSim is imported inside the functions, never at import time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from blendflag._runtime.parallel import _resolve_workers
from blendflag.errors import BlendflagError
from blendflag.simulate.field_geometry import field_size
from blendflag.simulate.field_image import add_noise, draw_galaxies
from blendflag.simulate.field_layout import lay_out_galaxies
from blendflag.simulate.field_stars import (
    add_stars,
    add_stars_and_psf_columns,
    centre_psf_image,
    preset_star_count,
    varying_psf_for,
)
from blendflag.simulate.field_truth import blend_overlaps, galaxy_truth
from blendflag.simulate.galaxies import isophote_level, psf_image
from blendflag.simulate.population import galaxy_density, uses_counts
from blendflag.simulate.presets import DatasetConfig, load_dataset

#: Galaxies per task when fields are drawn in worker processes.
FIELD_CHUNK = 2000
#: Below this many galaxies, ``workers=None`` draws serially.
FIELD_SERIAL_BELOW = 20000


@dataclass
class Field:
    """A simulated field with a known shear (see :func:`simulate_field`).

    Attributes
    ----------
    image : numpy.ndarray
        float32 science image, ADU, background 0.
    weight : numpy.ndarray
        float32 inverse variance, 1/ADU^2 (1 for a noiseless field).
    psf : numpy.ndarray
        float32 PSF image at the image pixel scale (pixel included), sum 1.
    truth : astropy.table.Table
        One row per galaxy (see :func:`simulate_field`).
    pixel_scale : float
        Arcsec per pixel.
    noise_sigma : float
        Gaussian noise sigma, ADU.
    shear : (float, float)
        The reduced shear applied to every galaxy.
    seed : int
    dataset : str
        The preset's name.
    config : DatasetConfig or None
        The resolved dataset config.
    sign : int
        +1, or -1 for the -g twin of a ±g pair (set by whoever makes the pair).
    varying_psf : VaryingPSF or None
        The PSF model of a field drawn with ``varying_psf`` (``psf`` is then
        the PSF at the image centre); None: one PSF everywhere.
    """

    image: np.ndarray
    weight: np.ndarray
    psf: np.ndarray
    truth: object
    pixel_scale: float
    noise_sigma: float
    shear: tuple
    seed: int = 0
    dataset: str = ""
    config: DatasetConfig | None = None
    sign: int = 1
    varying_psf: object = None

    @property
    def reference_noise(self) -> float:
        """Noise sigma (ADU) of the depth at which the blend label is defined."""
        return float(self.truth.meta.get("ISONOISE", self.noise_sigma))


def parse_shear(text) -> tuple[float, float]:
    """``"G1,G2"`` (or a pair of numbers) -> (g1, g2), checking |g| < 1.

    Raises
    ------
    BlendflagError
        Not two comma-separated numbers, not finite, or |g| >= 1.
    """
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            raise BlendflagError(f"shear must be two numbers G1,G2 (e.g. 0.02,0), got {text!r}")
        try:
            g1, g2 = float(parts[0]), float(parts[1])
        except ValueError:
            raise BlendflagError(
                f"shear must be two numbers G1,G2 (e.g. 0.02,0), got {text!r}"
            ) from None
    else:
        try:
            g1, g2 = (float(v) for v in text)
        except (TypeError, ValueError):
            raise BlendflagError(f"shear must be a pair (g1, g2), got {text!r}") from None
    if not (math.isfinite(g1) and math.isfinite(g2)):
        raise BlendflagError(f"shear must be finite, got {text!r}")
    if math.hypot(g1, g2) >= 1:
        raise BlendflagError(f"|shear| must be < 1, got |g| = {math.hypot(g1, g2):.3g}")
    return g1, g2


def simulate_field(
    dataset,
    n_galaxies=None,
    shear=(0.0, 0.0),
    seed=0,
    rotated_pairs=False,
    noise=None,
    size=None,
    workers=None,
    progress=False,
    margin=None,
    varying_psf=None,
    n_stars=None,
) -> Field:
    """Simulate a field of galaxies with a known constant shear.

    Parameters
    ----------
    dataset : str, path-like or DatasetConfig
        Preset name, YAML path or config (``"cfis"`` for the comparison runs).
    n_galaxies : int or None
        Number of galaxies; None takes the preset's ``field.n_galaxies``. Must
        be even with ``rotated_pairs``.
    shear : (float, float) or str
        Reduced shear (g1, g2) applied to every galaxy, or ``"G1,G2"``. [default: (0, 0)]
    seed : int
        Seed of ``numpy.random.default_rng``. [default: 0]
    rotated_pairs : bool
        Right half = left half with every intrinsic shape rotated by 90 degrees. [default: False]
    noise : float or None
        Gaussian noise sigma in ADU; None takes the preset's ``default_noise``;
        0 gives a noiseless image (weight 1). [default: None]
    size : int or None
        Side of the square image in pixels; None takes ``field.size`` or sizes
        the image from ``field.density`` (galaxies per arcmin^2; with
        ``galaxy.population: counts`` the density of the number counts over
        their magnitude range instead). [default: None]
    workers : int or None
        Worker processes; None is serial below 20000 galaxies. [default: None]
    progress : bool
        Progress bar on a terminal. [default: False]
    margin : int or None
        Minimum distance (pixels) of galaxy centres from the image edges (and
        from the edges of each half); None takes the preset's ``field.margin``.
        Comparison runs keep it at half a stamp so that no measurement stamp
        reaches across into the other half, which would break the symmetry of
        rotated pairs. [default: None]
    varying_psf : bool, PSFVariation or None
        Draw every source with the PSF at its position: True takes the default
        gradients of :class:`~blendflag.simulate.psf_variation.PSFVariation`.
        The truth then has ``PSF_FWHM`` (arcsec), ``PSF_G1``, ``PSF_G2`` and
        the field's ``varying_psf`` rebuilds the model. [default: None]
    n_stars : int or None
        Stars drawn with the PSF (their own random stream: the galaxies and
        the noise do not change); rows of the truth with ``STAR`` true
        (:mod:`blendflag.simulate.field_stars`). None: the preset's star
        counts, a Poisson number at ``galaxy.counts.star_density`` (none for
        log-uniform presets). [default: None]

    Returns
    -------
    Field
        ``image`` (float32, ADU), ``weight`` (float32, 1/sigma^2), ``psf``
        (float32, the PSF at the image pixel scale, pixel included, sum 1),
        ``truth`` (Table: ``ID`` (0-based row index), ``X``, ``Y`` (1-based
        pixels), ``FLUX`` (ADU), ``HLR`` (arcsec), ``E1_INTRINSIC``,
        ``E2_INTRINSIC``, ``ROTATED``, ``PAIR_ID`` (-1 without pairs),
        ``OVERLAPS``, ``N_OVERLAPS``, ``OVERLAPS_FIELD``, ``N_OVERLAPS_FIELD``,
        ``SERSIC_N``, ``B2T``, and ``MAG`` (AB) with ``galaxy.population:
        counts``), ``pixel_scale``
        (arcsec), ``noise_sigma`` (ADU), ``shear``.
    """
    config = load_dataset(dataset)
    n = _galaxy_count(config, n_galaxies, rotated_pairs)
    seed = _checked_seed(seed)
    g1, g2 = parse_shear(shear)
    sigma = _noise_sigma(config, noise)
    n_drawn = n // 2 if rotated_pairs else n
    side = _scene_side(config, size, n_drawn)
    margin = _scene_margin(config, margin, side)
    # rotated pairs: two square halves side by side, the right one the left rotated by 90 deg
    nx_img, ny_img = (2 * side, side) if rotated_pairs else (side, side)
    if n_stars is None:
        n_stars = preset_star_count(config, seed, nx_img, ny_img)
    psf_at = varying_psf_for(config, varying_psf, nx_img, ny_img, n_stars)

    rng = np.random.default_rng(seed)
    layout = lay_out_galaxies(
        rng, config, n_drawn, side, margin, rotated_pairs, (g1, g2), seed=seed
    )
    n = len(layout.params)  # fewer than drawn with galaxy.counts.drop_fainter_than
    # footprints at the field's own depth too: the truth of blends as this image shows them
    thresholds = (
        isophote_level(config, sigma if sigma > 0 else config.default_noise),
        config.blend.isophote_nsigma * sigma if sigma > 0 else None,
    )
    image = np.zeros((ny_img, nx_img), dtype=np.float32)
    footprint_lists = draw_galaxies(
        image, config, layout, (g1, g2), thresholds, psf_at, _chunking(workers, n), progress
    )
    # stars after the galaxies, so that their float32 sums do not change
    stars = add_stars(image, config, seed, n_stars, margin, psf_at, footprint_lists, thresholds)
    label_noise = thresholds[0] / config.blend.isophote_nsigma  # the label's reference sigma
    overlaps = blend_overlaps(
        *footprint_lists, n + int(n_stars), image.shape, config.blend.min_snr * label_noise
    )
    weight = add_noise(image, rng, sigma, _noise_order(layout, (g1, g2), image.shape))
    truth = galaxy_truth(layout, overlaps, thresholds[0], sigma, config)
    return Field(
        image=image,
        weight=weight,
        psf=_field_psf_image(config, psf_at),
        truth=add_stars_and_psf_columns(truth, stars, overlaps, psf_at),
        pixel_scale=config.pixel_scale,
        noise_sigma=float(sigma),
        shear=(g1, g2),
        seed=seed,
        dataset=config.name,
        config=config,
        varying_psf=psf_at,
    )


def _galaxy_count(config: DatasetConfig, n_galaxies, rotated_pairs: bool) -> int:
    """The number of galaxies (the preset's ``field.n_galaxies`` for None), checked.

    Raises
    ------
    BlendflagError
        Not a positive integer, or odd with ``rotated_pairs``.
    """
    if n_galaxies is None:
        n_galaxies = config.field.n_galaxies
    if (
        isinstance(n_galaxies, bool)
        or not isinstance(n_galaxies, (int, np.integer))
        or n_galaxies <= 0
    ):
        raise BlendflagError(f"n_galaxies must be a positive integer, got {n_galaxies!r}")
    n = int(n_galaxies)
    if rotated_pairs and n % 2:
        raise BlendflagError(f"rotated pairs need an even number of galaxies, got {n}")
    return n


def _checked_seed(seed) -> int:
    """``seed`` as an int.

    Raises
    ------
    BlendflagError
        Not a non-negative integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BlendflagError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _noise_order(layout, shear, shape):
    """The permutation that makes the noise follow a uniformly sheared scene, else None."""
    if not layout.uniform_shear or shear == (0.0, 0.0):
        return None
    from blendflag.simulate.field_geometry import position_matrix
    from blendflag.simulate.scene_noise import field_noise_order

    return field_noise_order(shape, position_matrix(shear), 2 if layout.rotated_pairs else 1)


def _noise_sigma(config: DatasetConfig, noise) -> float:
    """The noise sigma in ADU: ``noise``, or the preset's ``default_noise`` for None.

    Raises
    ------
    BlendflagError
        Not a finite number >= 0.
    """
    if noise is None:
        return config.default_noise
    try:
        sigma = float(noise)
    except (TypeError, ValueError):
        raise BlendflagError(f"noise must be a number >= 0 (ADU), got {noise!r}") from None
    if not (math.isfinite(sigma) and sigma >= 0):
        raise BlendflagError(f"noise must be a number >= 0 (ADU), got {noise!r}")
    return sigma


def _scene_side(config: DatasetConfig, size, n_drawn: int) -> int:
    """Side of the square scene (one half with rotated pairs) in pixels: ``size`` or the preset's.

    Raises
    ------
    BlendflagError
        ``size`` is not an integer >= 32.
    """
    if size is None:
        return field_size(_density_config(config), n_drawn)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise BlendflagError(f"size must be an integer >= 32 pixels, got {size!r}")
    return int(size)


def _density_config(config: DatasetConfig) -> DatasetConfig:
    """``config``, with the ``counts`` population's density (per arcmin^2) as ``field.density``."""
    if not uses_counts(config):
        return config
    density = galaxy_density(config.galaxy.counts)
    return dataclasses.replace(config, field=dataclasses.replace(config.field, density=density))


def _scene_margin(config: DatasetConfig, margin, side: int) -> int:
    """Least distance (pixels) of galaxy centres from the scene's edges: ``margin`` or the preset's.

    Raises
    ------
    BlendflagError
        ``margin`` is not a non-negative integer, or leaves no room in a
        scene of ``side`` pixels.
    """
    if margin is None:
        margin = config.field.margin
    elif isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise BlendflagError(f"margin must be a non-negative integer (pixels), got {margin!r}")
    if side - 2 * margin < 2:
        raise BlendflagError(f"field of {side} pixels is too small for margin {margin}")
    return margin


def _chunking(workers, n: int) -> tuple[int, int]:
    """Worker processes and galaxies per drawing task for ``n`` galaxies.

    ``workers=None`` is serial below :data:`FIELD_SERIAL_BELOW` galaxies;
    serial runs of more than 200 galaxies use about 20 tasks (a smooth bar),
    worker processes :data:`FIELD_CHUNK` galaxies a task.
    """
    workers = 1 if workers is None and n < FIELD_SERIAL_BELOW else _resolve_workers(workers, n)
    step = FIELD_CHUNK if workers > 1 or n <= 200 else max(100, n // 20)
    return workers, step


def _field_psf_image(config: DatasetConfig, psf_at) -> np.ndarray:
    """The field's PSF image (float32, sum 1): the preset's, or the varying PSF at the centre."""
    import galsim

    if psf_at is not None:
        return centre_psf_image(config, psf_at)
    return psf_image(config, galsim.GSParams(folding_threshold=config.folding_threshold))
