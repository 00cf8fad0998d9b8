"""One labelled stamp: the blend criterion and the placement of a companion.

:class:`StampMaker` draws a stamp of one kind (``"blend"``, ``"single"`` or
``"separated"``) of ``stamp_size`` pixels: a *central* galaxy within half a
pixel of the stamp centre and, for blends and separated pairs, a *companion*
from the same population, PSF-convolved and pixel-integrated by GalSim, plus
Gaussian noise (ADU, background 0). :mod:`blendflag.simulate.stamps` makes
labelled sets of them.

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

GalSim is imported inside the functions, never at import time.
"""

from __future__ import annotations

import math

import numpy as np

from blendflag.errors import BlendflagError
from blendflag.simulate.galaxies import isophote_level, make_psf, psf_image
from blendflag.simulate.population import draw_one_galaxy, galaxy_profile, uses_counts
from blendflag.simulate.presets import DatasetConfig, load_dataset


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
        # A counts population reaches far below the noise: a galaxy whose
        # flux x ||PSF||_2 (the largest optimal S/N its flux can give, a point
        # source's) is under min_snr is skipped before it is drawn. 10% slack
        # for the pixel grid; loguniform presets never skip (their stamps
        # stay bit-identical).
        psf_norm = float(np.sqrt(np.sum(psf_image(config).astype(np.float64) ** 2)))
        self.snr_per_flux = 1.1 * psf_norm if uses_counts(config) else math.inf

    def draw(self, params: dict, offset, size: int) -> np.ndarray:
        """Noiseless image of one galaxy, ``size`` x ``size`` pixels (odd), in ADU.

        ``offset`` (pixels, x then y) is the galaxy centre relative to the
        central pixel's centre.
        """
        import galsim

        gal = galaxy_profile(params, self.config, self.gsparams)
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
            p1 = draw_one_galaxy(rng, cfg)
            off1 = rng.uniform(-0.5, 0.5, 2)
            if p1["flux"] * self.snr_per_flux < cfg.blend.min_snr * sigma:
                continue  # too faint to be seen at any size
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
        p2 = draw_one_galaxy(rng, cfg)
        frac = rng.uniform(-0.5, 0.5, 2)
        if p2["flux"] * self.snr_per_flux < spec.min_snr * sigma:
            return None  # too faint to be seen at any size
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


def cached_maker(config: DatasetConfig) -> StampMaker:
    """The :class:`StampMaker` of ``config``, kept for the next call (one per process)."""
    key = repr(config)
    maker = _MAKERS.get(key)
    if maker is None:
        _MAKERS.clear()
        maker = _MAKERS[key] = StampMaker(config)
    return maker


def render_components(dataset, row) -> tuple[np.ndarray, np.ndarray | None]:
    """Redraw the noiseless images of a stamp's sources from its truth row.

    Parameters
    ----------
    dataset : str, path-like or DatasetConfig
        The dataset the stamps were simulated with.
    row : astropy.table.Row or mapping
        One row of the truth table of
        :func:`blendflag.simulate.stamps.simulate_stamps`.

    Returns
    -------
    central, companion : numpy.ndarray
        float32 noiseless images in ADU, each the stamp's shape; ``companion``
        is None for singles. The blend criterion is
        ``((central > ISOPHOTE) & (companion > ISOPHOTE)).any()``.
    """
    config = load_dataset(dataset)
    maker = cached_maker(config)
    c = maker.centre

    def params(i):
        out = {
            "flux": float(row[f"FLUX{i}"]),
            "hlr": float(row[f"HLR{i}"]),
            "g1": float(row[f"E1_{i}"]),
            "g2": float(row[f"E2_{i}"]),
            "n": float(row[f"SERSIC_N{i}"]),
            "b2t": float(row[f"B2T{i}"]),
        }
        if uses_counts(config):  # the counts population's further parameters
            out.update(
                mag=float(row[f"MAG{i}"]),
                bulge_hlr=float(row[f"BULGE_HLR{i}"]),
                knot_frac=float(row[f"KNOT_FRAC{i}"]),
                n_knots=int(row[f"N_KNOTS{i}"]),
                knot_seed=int(row[f"KNOT_SEED{i}"]),
            )
        return out

    central = maker.draw(params(1), (row["X1"] - 1 - c, row["Y1"] - 1 - c), maker.size)
    if int(row["N_SOURCES"]) < 2:
        return central.copy(), None
    companion = maker.draw(params(2), (row["X2"] - 1 - c, row["Y2"] - 1 - c), maker.size)
    return central.copy(), companion.copy()
