"""GalSim datasets: labelled two-galaxy postage stamps, and fields with a known shear.

Stamps
------
:func:`simulate_stamps` draws ``n`` postage stamps of ``stamp_size`` pixels
(51 for the packaged presets, the original study's size). Each holds a
*central* galaxy within half a pixel of the stamp centre and, for blends and
separated pairs, a *companion* from the same population. Galaxies are
PSF-convolved and pixel-integrated by GalSim; Gaussian noise of sigma
``NOISE_SIGMA`` (ADU) is added; the background is 0.

Blend criterion (the simulation truth)
--------------------------------------
A source's *footprint* is the set of stamp pixels where its own noiseless
image (galaxy x PSF x pixel, exactly as drawn into the stamp) exceeds the
isophote ``ISOPHOTE = k * sigma_ref``, with ``k = blend.isophote_nsigma`` (1
for every preset) and ``sigma_ref`` the preset's ``default_noise``: the pixels
inside the 1-sigma isophote at the survey's reference depth. Being a blend is
then a property of the pair, not of the noise drawn on the stamp
(``blend.isophote_reference: stamp_noise`` uses each stamp's own sigma
instead). Two sources are **blended** when their
footprints share at least one stamp pixel (``OVERLAP_PIX >= 1``), and
**separated** when they share none (``OVERLAP_PIX == 0``). Every source (the
central one, and the companion of a pair) has a non-empty footprint and an
optimal S/N of at least ``blend.min_snr`` (5): a faint draw is redrawn, so no
"blend" hides an invisible companion.

Placement: the companion's position is drawn at random until the criterion
holds (blend) or fails (separated). Blends take a position uniform in area
(a random place on the sky) between ``blend.min_separation`` (1 px) and the
*reach* ``r1 + r2 + 1`` (``ri``: the largest distance of a footprint pixel from
its source centre) from the central source, so close blends down to 1-2 px
occur at their natural rate. Separated companions take a separation uniform
between ``0.5 * reach`` and ``blend.separated_max_factor * reach`` (3x), within
the stamp, keeping only non-overlapping positions: near misses just outside
the blend distance are as frequent as far pairs, so the non-blend class is not
trivially easy. Galaxy parameters are redrawn when no placement exists (rare).

The truth table stores both sources' parameters (positions ``X1, Y1, X2, Y2``
in 1-based stamp pixels, ``HLR`` in arcsec, intrinsic shapes, fluxes in ADU)
so :func:`render_components` can redraw the noiseless images and a test can
check the criterion independently.

Randomness and workers
----------------------
``numpy.random.default_rng(seed)`` draws the order of kinds (shuffled), the
noise sigmas and one 63-bit seed per stamp; each stamp draws everything else
(parameters, positions, noise) from its own generator. The output is therefore
the same for any number of worker processes. Workers are started with the
``spawn`` method and ``OMP_NUM_THREADS=1`` (see design.md section 6).

GalSim is imported inside the functions, never at import time.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np

from blendflag.config import DatasetConfig, load_dataset_config
from blendflag.errors import BlendflagError
from blendflag.parallel import _resolve_workers, idle_cores, run_chunks  # noqa: F401

#: Default proportions of (blend, single, separated) stamps.
DEFAULT_FRACTIONS = (0.5, 0.25, 0.25)
#: Stamp kinds, in the order of ``fractions``.
KINDS = ("blend", "single", "separated")
#: Stamps per task sent to a worker process.
CHUNK_SIZE = 250

__all__ = [
    "DEFAULT_FRACTIONS",
    "KINDS",
    "Field",
    "bench_simulation",
    "load_dataset",
    "read_stamps",
    "render_components",
    "simulate_field",
    "simulate_stamps",
    "write_field",
]


def load_dataset(dataset) -> DatasetConfig:
    """A :class:`~blendflag.config.DatasetConfig` from a preset name, YAML path or config."""
    return load_dataset_config(dataset)


# ---------------------------------------------------------------------------
# Galaxy population and drawing (run in worker processes)
# ---------------------------------------------------------------------------


def _log_uniform(rng, low: float, high: float) -> float:
    if high <= low:
        return float(low)
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def sample_galaxy(rng, spec) -> dict:
    """Draw one galaxy's parameters from a :class:`~blendflag.config.GalaxySpec`.

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


class StampMaker:
    """Draws the stamps of one dataset (holds the PSF and GSParams).

    Parameters
    ----------
    config : DatasetConfig
    """

    def __init__(self, config: DatasetConfig):
        import galsim

        self.config = config
        self.size = config.stamp_size
        self.centre = config.stamp_size // 2  # 0-based index of the central pixel
        self.gsparams = galsim.GSParams(folding_threshold=config.folding_threshold)
        self.psf = make_psf(config, self.gsparams)

    def draw(self, params: dict, offset, size: int) -> np.ndarray:
        """Noiseless image of one galaxy, ``size`` x ``size`` pixels (odd), in ADU.

        ``offset`` (pixels, x then y) is the galaxy centre relative to the
        central pixel's centre.
        """
        import galsim

        gal = galaxy_object(params, self.config.galaxy, self.gsparams)
        image = galsim.ImageF(size, size, scale=self.config.pixel_scale)
        galsim.Convolve(gal, self.psf, gsparams=self.gsparams).drawImage(
            image=image, offset=(float(offset[0]), float(offset[1]))
        )
        return image.array

    def _footprint_radius(self, mask: np.ndarray, cx: float, cy: float) -> float:
        ys, xs = np.nonzero(mask)
        return float(np.sqrt(((xs - cx) ** 2 + (ys - cy) ** 2).max()))

    def make(self, kind: str, sigma: float, rng) -> tuple[np.ndarray, dict]:
        """One noisy stamp of ``kind`` and its truth record.

        Parameters
        ----------
        kind : str
            ``"blend"``, ``"single"`` or ``"separated"``.
        sigma : float
            Gaussian noise sigma, in ADU.
        rng : numpy.random.Generator
        """
        cfg, size, c = self.config, self.size, self.centre
        thresh = isophote_level(cfg, sigma)
        for _ in range(200):
            p1 = sample_galaxy(rng, cfg.galaxy)
            off1 = rng.uniform(-0.5, 0.5, 2)
            img1 = self.draw(p1, off1, size)
            mask1 = img1 > thresh
            snr = float(np.sqrt(np.sum(img1.astype(np.float64) ** 2)) / sigma)
            if not mask1.any() or snr < cfg.blend.min_snr:
                continue  # invisible at this noise: not a usable central source
            rec = {
                "p1": p1,
                "x1": c + off1[0],
                "y1": c + off1[1],
                "p2": None,
                "x2": 0.0,
                "y2": 0.0,
                "overlap": 0,
                "snr2": 0.0,
                "snr": snr,
            }
            if kind == "single":
                return self._finish(img1, sigma, rng), rec
            r1 = self._footprint_radius(mask1, c + off1[0], c + off1[1])
            for _ in range(10):
                placed = self._companion(kind, mask1, r1, off1, thresh, sigma, rng)
                if placed is None:
                    continue
                img2, p2, pos2, overlap = placed
                rec.update(
                    p2=p2,
                    x2=c + pos2[0],
                    y2=c + pos2[1],
                    overlap=overlap,
                    snr2=float(np.sqrt(np.sum(img2.astype(np.float64) ** 2)) / sigma),
                )
                return self._finish(img1 + img2, sigma, rng), rec
        raise BlendflagError(  # pragma: no cover - only for absurd configs
            f"could not place a {kind} in 200 tries: check the dataset's flux, hlr and noise"
        )

    def _companion(self, kind, mask1, r1, off1, thresh, sigma, rng):
        """Draw a companion and a position meeting (blend) or failing (separated) the criterion."""
        cfg, size, c = self.config, self.size, self.centre
        spec = cfg.blend
        p2 = sample_galaxy(rng, cfg.galaxy)
        frac = rng.uniform(-0.5, 0.5, 2)
        big = self.draw(p2, frac, 2 * size - 1)
        mask2 = big > thresh
        if not mask2.any() or np.sqrt(np.sum(big.astype(np.float64) ** 2)) < spec.min_snr * sigma:
            return None  # an invisible companion makes neither a blend nor a pair
        r2 = self._footprint_radius(mask2, size - 1 + frac[0], size - 1 + frac[1])
        reach = r1 + r2 + 1.0
        limit = c - spec.edge_margin  # largest |dx|, |dy| of the companion's pixel
        if kind == "blend":
            lo, hi = spec.min_separation, max(reach, spec.min_separation + 1.0)
        else:
            lo = max(spec.min_separation, 0.5 * reach)
            hi = max(lo + 1.0, spec.separated_max_factor * reach)
            hi = min(hi, math.sqrt(2.0) * (limit + 1))
            if hi <= lo:
                return None
        want_overlap = kind == "blend"
        for _ in range(100):
            # blends: uniform in area (random sky position); pairs: uniform in distance
            s = math.sqrt(rng.uniform(lo * lo, hi * hi)) if want_overlap else rng.uniform(lo, hi)
            theta = rng.uniform(0.0, 2.0 * math.pi)
            tx, ty = off1[0] + s * math.cos(theta), off1[1] + s * math.sin(theta)
            dx, dy = round(tx - frac[0]), round(ty - frac[1])
            if abs(dx) > limit or abs(dy) > limit:
                continue
            pos = (dx + frac[0], dy + frac[1])
            if math.hypot(pos[0] - off1[0], pos[1] - off1[1]) < spec.min_separation:
                continue
            window = mask2[c - dy : c - dy + size, c - dx : c - dx + size]
            overlap = int(np.count_nonzero(mask1 & window))
            if (overlap > 0) == want_overlap:
                img2 = big[c - dy : c - dy + size, c - dx : c - dx + size]
                if not (window.any()):
                    continue  # companion's footprint falls outside the stamp
                return img2, p2, pos, overlap
        return None

    def _finish(self, image, sigma, rng) -> np.ndarray:
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        noise *= np.float32(sigma)
        return (image + noise).astype(np.float32, copy=False)


_MAKERS: dict = {}


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


def _maker(config: DatasetConfig) -> StampMaker:
    key = repr(config)
    maker = _MAKERS.get(key)
    if maker is None:
        _MAKERS.clear()
        maker = _MAKERS[key] = StampMaker(config)
    return maker


def _simulate_chunk(config: DatasetConfig, kinds, sigmas, seeds):
    """Draw a chunk of stamps (run in a worker or serially). Returns (stamps, columns)."""
    maker = _maker(config)
    n, size = len(kinds), config.stamp_size
    stamps = np.empty((n, size, size), dtype=np.float32)
    cols = {name: np.zeros(n, dtype=np.float64) for name in _FLOAT_COLUMNS}
    cols["OVERLAP_PIX"] = np.zeros(n, dtype=np.int32)
    for i in range(n):
        rng = np.random.default_rng(int(seeds[i]))
        stamps[i], rec = maker.make(KINDS[int(kinds[i])], float(sigmas[i]), rng)
        cols["ISOPHOTE"][i] = isophote_level(config, float(sigmas[i]))
        p1, p2 = rec["p1"], rec["p2"]
        cols["X1"][i], cols["Y1"][i] = rec["x1"] + 1.0, rec["y1"] + 1.0
        cols["FLUX1"][i], cols["HLR1"][i] = p1["flux"], p1["hlr"]
        cols["E1_1"][i], cols["E2_1"][i] = p1["g1"], p1["g2"]
        cols["SERSIC_N1"][i], cols["B2T1"][i] = p1["n"], p1["b2t"]
        cols["SNR"][i] = rec["snr"]
        if p2 is not None:
            cols["X2"][i], cols["Y2"][i] = rec["x2"] + 1.0, rec["y2"] + 1.0
            cols["FLUX2"][i], cols["HLR2"][i] = p2["flux"], p2["hlr"]
            cols["E1_2"][i], cols["E2_2"][i] = p2["g1"], p2["g2"]
            cols["SERSIC_N2"][i], cols["B2T2"][i] = p2["n"], p2["b2t"]
            cols["SNR2"][i] = rec["snr2"]
            cols["SEPARATION"][i] = math.hypot(rec["x2"] - rec["x1"], rec["y2"] - rec["y1"])
            cols["OVERLAP_PIX"][i] = rec["overlap"]
    return stamps, cols


_FLOAT_COLUMNS = (
    "ISOPHOTE",
    "SEPARATION",
    "FLUX1",
    "FLUX2",
    "SNR",
    "SNR2",
    "X1",
    "Y1",
    "X2",
    "Y2",
    "HLR1",
    "HLR2",
    "E1_1",
    "E2_1",
    "E1_2",
    "E2_2",
    "SERSIC_N1",
    "SERSIC_N2",
    "B2T1",
    "B2T2",
)

#: Units of the truth columns.
TRUTH_UNITS = {
    "SEPARATION": "pix",
    "ISOPHOTE": "adu",
    "FLUX1": "adu",
    "FLUX2": "adu",
    "NOISE_SIGMA": "adu",
    "X1": "pix",
    "Y1": "pix",
    "X2": "pix",
    "Y2": "pix",
    "HLR1": "arcsec",
    "HLR2": "arcsec",
}


def _noise_sigmas(config: DatasetConfig, noise, n: int, rng) -> np.ndarray:
    if noise is None:
        return np.full(n, config.default_noise, dtype=np.float64)
    if isinstance(noise, (list, tuple, np.ndarray)):
        choices = np.asarray([_noise_sigmas(config, s, 1, rng)[0] for s in noise], np.float64)
        if choices.size == 0:
            raise BlendflagError("noise: give at least one sigma (ADU)")
        return choices[rng.integers(0, len(choices), size=n)]
    if isinstance(noise, str):
        if noise.strip().lower() == "grid":
            grid = np.asarray(config.noise_grid, dtype=np.float64)
            return grid[rng.integers(0, len(grid), size=n)]
        try:
            noise = float(noise)
        except ValueError:
            raise BlendflagError(
                f"noise must be a positive number (ADU) or 'grid', got {noise!r}"
            ) from None
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating, np.integer)):
        raise BlendflagError(f"noise must be a positive number (ADU) or 'grid', got {noise!r}")
    if not (math.isfinite(float(noise)) and float(noise) > 0):
        raise BlendflagError(f"noise sigma must be positive and finite, got {noise!r}")
    return np.full(n, float(noise), dtype=np.float64)


def kind_counts(n: int, fractions=DEFAULT_FRACTIONS) -> dict:
    """Exact numbers of (blend, single, separated) stamps: rounded, remainder to blends."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or sum(fr) <= 0:
        raise BlendflagError(
            f"fractions must be three non-negative numbers (blend, single, separated), got "
            f"{fractions!r}"
        )
    if abs(sum(fr) - 1.0) > 1e-6:
        raise BlendflagError(f"fractions must sum to 1, got {fractions!r} (sum {sum(fr):g})")
    n_single = round(n * fr[1])
    n_sep = round(n * fr[2])
    if n_single + n_sep > n:
        n_sep = n - n_single
    return {"blend": n - n_single - n_sep, "single": n_single, "separated": n_sep}


def simulate_stamps(
    dataset, n, seed, noise=None, fractions=DEFAULT_FRACTIONS, workers=None, progress=False
):
    """Simulate labelled postage stamps of blends, singles and separated pairs.

    Parameters
    ----------
    dataset : str, path-like or DatasetConfig
        Preset name (``"great3"``, ``"euclid"``, ``"cfis"``), YAML path, or config.
    n : int
        Number of stamps (> 0).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives identical arrays.
    noise : None, float, "grid" or list of float
        None: the preset's ``default_noise``; a number: that Gaussian sigma in
        ADU for every stamp; ``"grid"``: each stamp draws its sigma uniformly
        from the preset's ``noise_grid``; a list: each stamp draws one of these
        sigmas (ADU) uniformly. [default: None]
    fractions : (float, float, float)
        Proportions of (blend, single, separated) stamps, summing to 1. Counts
        are rounded, the remainder going to blends. [default: (0.5, 0.25, 0.25)]
    workers : int or None
        Worker processes; None runs serially below 2000 stamps, else uses the
        idle cores (``os.cpu_count()`` minus the load average, at least 1).
        The result does not depend on it. [default: None]
    progress : bool
        Show a progress bar on a terminal. [default: False]

    Returns
    -------
    stamps : numpy.ndarray
        float32, shape (n, S, S) with S the preset's ``stamp_size``, in ADU,
        noise added, background 0.
    truth : astropy.table.Table
        One row per stamp: ``LABEL`` (int16, 1 blend / 0 not), ``KIND``
        (blend / single / separated), ``N_SOURCES``, ``SEPARATION`` (pixels, 0
        for singles), ``FLUX1``, ``FLUX2`` (ADU, 0 for singles), ``SNR``
        (optimal signal-to-noise of the central source, sqrt(sum I^2) / sigma),
        ``NOISE_SIGMA`` (ADU), then ``OVERLAP_PIX`` (pixels above the isophote
        in both sources), ``SNR2``, positions ``X1, Y1, X2, Y2`` (1-based stamp
        pixels), ``HLR1, HLR2`` (arcsec), intrinsic shapes ``E1_1, E2_1, E1_2,
        E2_2`` (reduced shear), ``SERSIC_N1/2``, ``B2T1/2`` and ``STAMP_SEED``.

    Raises
    ------
    BlendflagError
        Bad ``n``, ``noise``, ``fractions`` or ``workers``; ConfigError for a bad dataset.
    """
    from astropy.table import Table

    config = load_dataset(dataset)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise BlendflagError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BlendflagError(f"seed must be a non-negative integer, got {seed!r}")
    n = int(n)
    counts = kind_counts(n, fractions)
    workers = _resolve_workers(workers, n)

    rng = np.random.default_rng(int(seed))
    kinds = np.repeat(
        np.arange(3, dtype=np.int8), [counts["blend"], counts["single"], counts["separated"]]
    )
    kinds = rng.permutation(kinds)
    sigmas = _noise_sigmas(config, noise, n, rng)
    seeds = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)

    tasks = [
        (config, kinds[i : i + CHUNK_SIZE], sigmas[i : i + CHUNK_SIZE], seeds[i : i + CHUNK_SIZE])
        for i in range(0, n, CHUNK_SIZE)
    ]
    bar = None
    if progress:
        from blendflag.progress import progress as make_bar

        bar = make_bar(total=n, desc="simulate", unit="stamp")
    try:
        results = run_chunks(
            _simulate_chunk,
            tasks,
            workers,
            on_done=(lambda r: bar.update(len(r[0]))) if bar else None,
        )
    finally:
        if bar is not None:
            bar.close()

    stamps = np.concatenate([r[0] for r in results]) if len(results) > 1 else results[0][0]
    cols = {k: np.concatenate([r[1][k] for r in results]) for k in results[0][1]}
    kind_names = np.array(KINDS)[kinds]
    truth = Table()
    truth["LABEL"] = (kinds == 0).astype(np.int16)
    truth["KIND"] = kind_names.astype("U9")
    truth["N_SOURCES"] = np.where(kinds == 1, 1, 2).astype(np.int16)
    truth["SEPARATION"] = cols["SEPARATION"].astype(np.float32)
    truth["FLUX1"] = cols["FLUX1"]
    truth["FLUX2"] = cols["FLUX2"]
    truth["SNR"] = cols["SNR"].astype(np.float32)
    truth["NOISE_SIGMA"] = sigmas.astype(np.float32)
    truth["OVERLAP_PIX"] = cols["OVERLAP_PIX"]
    truth["ISOPHOTE"] = cols["ISOPHOTE"].astype(np.float32)
    truth["SNR2"] = cols["SNR2"].astype(np.float32)
    for name in (
        "X1",
        "Y1",
        "X2",
        "Y2",
        "HLR1",
        "HLR2",
        "E1_1",
        "E2_1",
        "E1_2",
        "E2_2",
        "SERSIC_N1",
        "SERSIC_N2",
        "B2T1",
        "B2T2",
    ):
        truth[name] = cols[name]  # float64: render_components redraws them exactly
    truth["STAMP_SEED"] = seeds
    for name, unit in TRUTH_UNITS.items():
        truth[name].unit = unit
    truth.meta.update(
        {
            "DATASET": config.name,
            "SEED": int(seed),
            "NSTAMPS": n,
            "ISOSIG": config.blend.isophote_nsigma,
            "ISOREF": config.blend.isophote_reference,
        }
    )
    return stamps, truth


def render_components(dataset, row) -> tuple[np.ndarray, np.ndarray | None]:
    """Redraw the noiseless images of a stamp's sources from its truth row.

    Parameters
    ----------
    dataset : str, path-like or DatasetConfig
        The dataset the stamps were simulated with.
    row : astropy.table.Row or mapping
        One row of the truth table of :func:`simulate_stamps`.

    Returns
    -------
    central, companion : numpy.ndarray
        float32 noiseless images in ADU, each the stamp's shape; ``companion``
        is None for singles. The blend criterion is
        ``((central > ISOPHOTE) & (companion > ISOPHOTE)).any()``.
    """
    config = load_dataset(dataset)
    maker = _maker(config)
    c = maker.centre

    def params(i):
        return {
            "flux": float(row[f"FLUX{i}"]),
            "hlr": float(row[f"HLR{i}"]),
            "g1": float(row[f"E1_{i}"]),
            "g2": float(row[f"E2_{i}"]),
            "n": float(row[f"SERSIC_N{i}"]),
            "b2t": float(row[f"B2T{i}"]),
        }

    central = maker.draw(params(1), (row["X1"] - 1 - c, row["Y1"] - 1 - c), maker.size)
    if int(row["N_SOURCES"]) < 2:
        return central.copy(), None
    companion = maker.draw(params(2), (row["X2"] - 1 - c, row["Y2"] - 1 - c), maker.size)
    return central.copy(), companion.copy()


def bench_simulation(n: int = 4000, workers=None, dataset="cfis", seed: int = 0) -> dict:
    """Throughput of two-galaxy stamps (half blends, half separated pairs).

    Parameters
    ----------
    n : int
        Stamps to draw. [default: 4000]
    workers : int or None
        Worker processes; None uses every core. [default: None]
    dataset : str or DatasetConfig
        [default: "cfis"]

    Returns
    -------
    dict
        ``stamps_per_s`` (including worker start-up), ``seconds``, ``n``,
        ``workers``, ``cores`` (``os.cpu_count()``), ``dataset``.
    """
    config = load_dataset(dataset)
    cores = os.cpu_count() or 1
    workers = cores if workers is None else workers
    start = time.perf_counter()
    simulate_stamps(config, n, seed, fractions=(0.5, 0.0, 0.5), workers=workers)
    seconds = time.perf_counter() - start
    return {
        "stamps_per_s": n / seconds,
        "seconds": seconds,
        "n": n,
        "workers": workers,
        "cores": cores,
        "dataset": config.name,
    }


# ---------------------------------------------------------------------------
# Fields
# ---------------------------------------------------------------------------


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
        One row per galaxy (see :func:`blendflag.simulate_field.simulate_field`).
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
) -> Field:
    """Simulate a field with a known shear; see :func:`blendflag.simulate_field.simulate_field`."""
    from blendflag.simulate_field import simulate_field as _impl

    return _impl(
        dataset,
        n_galaxies,
        shear=shear,
        seed=seed,
        rotated_pairs=rotated_pairs,
        noise=noise,
        size=size,
        workers=workers,
        progress=progress,
        margin=margin,
    )


def write_field(field: Field, outdir):
    """Write a field's FITS files; see :func:`blendflag.simulate_field.write_field`."""
    from blendflag.simulate_field import write_field as _impl

    return _impl(field, outdir)


#: TRUTH columns every consumer of a stamp file relies on.
REQUIRED_TRUTH = ("LABEL", "KIND", "SEPARATION", "NOISE_SIGMA")


def read_stamps(path):
    """Read a ``simulate`` output file (HDUs ``STAMPS`` and ``TRUTH``).

    Returns
    -------
    stamps : numpy.ndarray
        float32 (n, S, S), ADU.
    truth : astropy.table.Table
    config : DatasetConfig or None
        The resolved dataset config stored in HDU ``CONFIG`` (None if absent).

    Raises
    ------
    CatalogueError
        Missing, unreadable or truncated file; no STAMPS / TRUTH HDU; a TRUTH
        table without the required columns or of the wrong length; NaN pixels.
    """
    from pathlib import Path

    import yaml
    from astropy.table import Table

    from blendflag.catalog import open_fits
    from blendflag.config import from_mapping
    from blendflag.errors import CatalogueError

    path = Path(path)
    hdul = open_fits(path, "stamps file")
    names = [h.name for h in hdul]
    for need in ("STAMPS", "TRUTH"):
        if need not in names:
            raise CatalogueError(f"{path.name} has no {need} HDU: not a `simulate` output")
    cube = hdul["STAMPS"].data
    if cube is None or cube.ndim != 3:
        raise CatalogueError(f"{path.name}: STAMPS must be an (n, S, S) cube")
    stamps = np.asarray(cube, dtype=np.float32)
    truth = Table(hdul["TRUTH"].data)
    missing = [c for c in REQUIRED_TRUTH if c not in truth.colnames]
    if missing:
        raise CatalogueError(f"{path.name}: TRUTH has no column {missing[0]}")
    if len(truth) != len(stamps):
        raise CatalogueError(f"{path.name}: {len(stamps)} stamps but {len(truth)} TRUTH rows")
    if not np.all(np.isfinite(stamps)):
        raise CatalogueError(f"{path.name}: STAMPS holds NaN or inf pixels")
    config = None
    if "CONFIG" in names:
        data = yaml.safe_load(str(hdul["CONFIG"].data["YAML"][0]))
        config = from_mapping(DatasetConfig, data, "")
    return stamps, truth, config
