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

Positions are sheared like the shapes, about the centre of each group of
neighbours (friends-of-friends, linking length 25 px): blended separations are
sheared, isolated galaxies do not move, so fields of the same seed sheared by
+g and -g put every galaxy on the same noise pixels
(:func:`blendflag.simulate.field_geometry.shear_positions`);
:func:`blendflag.simulate.field_io.write_field` writes a field's FITS files.

GalSim is imported inside the functions, never at import time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from blendflag._runtime.parallel import _resolve_workers, run_chunks
from blendflag.errors import BlendflagError
from blendflag.simulate.field_draw import draw_field_task, footprint
from blendflag.simulate.field_geometry import (
    field_size,
    footprint_overlaps,
    friends_of_friends,
    shear_positions,
)
from blendflag.simulate.field_stars import (
    add_stars,
    add_stars_and_psf_columns,
    centre_psf_image,
    paste,
    varying_psf_for,
)
from blendflag.simulate.galaxies import isophote_level, psf_image, sample_galaxy
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
    n_stars=0,
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
        the image from ``field.density`` (galaxies per arcmin^2). [default: None]
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
    n_stars : int
        Stars drawn with the PSF (their own random stream: the galaxies and
        the noise do not change); rows of the truth with ``STAR`` true
        (:mod:`blendflag.simulate.field_stars`). [default: 0]

    Returns
    -------
    Field
        ``image`` (float32, ADU), ``weight`` (float32, 1/sigma^2), ``psf``
        (float32, the PSF at the image pixel scale, pixel included, sum 1),
        ``truth`` (Table: ``ID`` (0-based row index), ``X``, ``Y`` (1-based
        pixels), ``FLUX`` (ADU), ``HLR`` (arcsec), ``E1_INTRINSIC``,
        ``E2_INTRINSIC``, ``ROTATED``, ``PAIR_ID`` (-1 without pairs),
        ``OVERLAPS``, ``N_OVERLAPS``, ``OVERLAPS_FIELD``, ``N_OVERLAPS_FIELD``,
        ``SERSIC_N``, ``B2T``), ``pixel_scale``
        (arcsec), ``noise_sigma`` (ADU), ``shear``.
    """
    import galsim
    from astropy.table import Table

    config = load_dataset(dataset)
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
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BlendflagError(f"seed must be a non-negative integer, got {seed!r}")
    g1, g2 = parse_shear(shear)
    if noise is None:
        sigma = config.default_noise
    else:
        try:
            sigma = float(noise)
        except (TypeError, ValueError):
            raise BlendflagError(f"noise must be a number >= 0 (ADU), got {noise!r}") from None
        if not (math.isfinite(sigma) and sigma >= 0):
            raise BlendflagError(f"noise must be a number >= 0 (ADU), got {noise!r}")
    n_draw = n // 2 if rotated_pairs else n
    if size is None:
        side = field_size(config, n_draw)
    else:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
            raise BlendflagError(f"size must be an integer >= 32 pixels, got {size!r}")
        side = int(size)
    if margin is None:
        margin = config.field.margin
    elif isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise BlendflagError(f"margin must be a non-negative integer (pixels), got {margin!r}")
    # rotated pairs: two square halves side by side, the right one the left rotated by 90 deg
    nx_img, ny_img = (2 * side, side) if rotated_pairs else (side, side)
    if side - 2 * margin < 2:
        raise BlendflagError(f"field of {side} pixels is too small for margin {margin}")
    psf_at = varying_psf_for(config, varying_psf, nx_img, ny_img, n_stars)

    rng = np.random.default_rng(int(seed))
    params = [sample_galaxy(rng, config.galaxy) for _ in range(n_draw)]
    xs = rng.uniform(margin + 0.5, side - margin + 0.5, n_draw)
    ys = rng.uniform(margin + 0.5, side - margin + 0.5, n_draw)
    rotated = np.zeros(n, dtype=bool)
    pair_id = np.full(n, -1, dtype=np.int32)
    if rotated_pairs:
        # the whole left scene rotated by 90 degrees about its centre (a pixel
        # corner or centre, so the pixel grid maps onto itself): shapes e -> -e,
        # and blends rotate with their galaxies, so blended shapes cancel too
        centre = (side + 1) / 2.0
        params = params + [dict(p, g1=-p["g1"], g2=-p["g2"]) for p in params]
        xs, ys = (
            np.concatenate([xs, side + centre - (ys - centre)]),
            np.concatenate([ys, centre + (xs - centre)]),
        )
        rotated[n_draw:] = True
        pair_id[:] = np.tile(np.arange(n_draw, dtype=np.int32), 2)
    groups = friends_of_friends(xs, ys, keys=rotated)
    xs, ys = shear_positions(xs, ys, (g1, g2), groups)

    thresh = isophote_level(config, sigma if sigma > 0 else config.default_noise)
    workers = 1 if workers is None and n < FIELD_SERIAL_BELOW else _resolve_workers(workers, n)
    step = FIELD_CHUNK if workers > 1 or n <= 200 else max(100, n // 20)  # smooth bar
    tasks = [
        (i, config, params[i : i + step], xs[i : i + step], ys[i : i + step], (g1, g2), thresh)
        + ((psf_at,) if psf_at is not None else ())
        for i in range(0, n, step)
    ]
    bar = None
    if progress:
        from blendflag._runtime.progress import progress as make_bar

        bar = make_bar(total=n, desc="field", unit="gal")
    image = np.zeros((ny_img, nx_img), dtype=np.float32)
    footprints = [None] * n
    # footprints at the field's own depth too: the truth of blends as this image shows them
    thresh_field = config.blend.isophote_nsigma * sigma if sigma > 0 else None
    field_footprints = [None] * n
    waiting = {}  # chunks that finished early, keyed by first galaxy index
    state = {"next": 0}

    def add(result):
        # Stamps are added in galaxy order whatever order the chunks finish in,
        # so the float32 sums (and the output bytes) never depend on the workers.
        waiting[result[0]] = result[1]
        while state["next"] in waiting:
            start = state["next"]
            chunk = waiting.pop(start)
            for k, (x0, y0, arr, fx0, fy0, mask) in enumerate(chunk):
                footprints[start + k] = (fx0, fy0, mask)
                if thresh_field is not None:
                    field_footprints[start + k] = footprint(arr, x0, y0, thresh_field)
                # each half is its own scene: light is clipped at its edges, so the
                # right half stays an exact 90-degree turn of the left
                lo, hi = (
                    (1, nx_img)
                    if not rotated_pairs
                    else ((1, side) if start + k < n_draw else (side + 1, nx_img))
                )
                paste(image, arr, x0, y0, lo, hi)
            state["next"] = start + len(chunk)
        if bar is not None:
            bar.update(len(result[1]))

    try:
        run_chunks(draw_field_task, tasks, workers, on_done=add, keep=False)
    finally:
        if bar is not None:
            bar.close()
    # stars after the galaxies, so that their float32 sums do not change
    footprint_lists, thresholds = (footprints, field_footprints), (thresh, thresh_field)
    stars = add_stars(image, config, seed, n_stars, margin, psf_at, footprint_lists, thresholds)
    n_all = n + int(n_stars)
    best, count = footprint_overlaps(footprints, n_all, nx_img, ny_img)
    if thresh_field is not None:
        best_field, count_field = footprint_overlaps(field_footprints, n_all, nx_img, ny_img)
    else:
        best_field, count_field = best, count
    if sigma > 0:
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    if sigma > 0:
        weight = np.full(image.shape, 1.0 / sigma**2, dtype=np.float32)
    else:
        weight = np.ones(image.shape, dtype=np.float32)

    gsparams = galsim.GSParams(folding_threshold=config.folding_threshold)
    psf_img = psf_image(config, gsparams) if psf_at is None else centre_psf_image(config, psf_at)
    overlaps = (best, count, best_field, count_field)  # galaxies, then stars
    best, count, best_field, count_field = (a[:n] for a in overlaps)

    truth = Table()
    truth["ID"] = np.arange(n, dtype=np.int32)
    truth["X"] = xs
    truth["Y"] = ys
    truth["FLUX"] = np.array([p["flux"] for p in params])
    truth["HLR"] = np.array([p["hlr"] for p in params])
    truth["E1_INTRINSIC"] = np.array([p["g1"] for p in params])
    truth["E2_INTRINSIC"] = np.array([p["g2"] for p in params])
    truth["ROTATED"] = rotated
    truth["PAIR_ID"] = pair_id
    truth["OVERLAPS"] = best
    truth["N_OVERLAPS"] = count
    truth["OVERLAPS_FIELD"] = best_field
    truth["N_OVERLAPS_FIELD"] = count_field
    truth.meta["ISONOISE"] = float(thresh / config.blend.isophote_nsigma)
    truth.meta["FLDNOISE"] = float(sigma)
    truth["SERSIC_N"] = np.array([p["n"] for p in params])
    truth["B2T"] = np.array([p["b2t"] for p in params])
    for name, unit in (("X", "pix"), ("Y", "pix"), ("FLUX", "adu"), ("HLR", "arcsec")):
        truth[name].unit = unit
    truth = add_stars_and_psf_columns(truth, stars, overlaps, psf_at)
    return Field(
        image=image,
        weight=weight,
        psf=psf_img,
        truth=truth,
        pixel_scale=config.pixel_scale,
        noise_sigma=float(sigma),
        shear=(g1, g2),
        seed=int(seed),
        dataset=config.name,
        config=config,
        varying_psf=psf_at,
    )
