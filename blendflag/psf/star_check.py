"""The PSF model checked against the stars: size and ellipticity where the stars are.

A wrong PSF model biases every shape measured with it, and the shear
statistics do not show it: a SExtractor + PSFEx chain with PSFEx's own star
selection on a field with a varying PSF gave ``compare`` m = +10.9 +- 12.2
and no sign of the model being wrong. So before measuring, ``compare`` with a
catalogue measures the stars of its stellar locus
(:func:`blendflag.psf.stars.catalogue_stars`) and the PSF model at the same
positions (:meth:`blendflag.psf.model.PSFModel.image_at`) alike, with GalSim's
HSM adaptive moments (``galsim.hsm.FindAdaptiveMom``) on stamps of
:data:`STAMP_SIZE` pixels:

- size ``sigma = sqrt(T / 2)``, ``T = Mxx + Myy`` (pixels^2), of the model
  over that of the star, per star; the check uses its median;
- ellipticity ``e = (Mxx - Myy, 2 Mxy) / T`` (the distortion), model minus
  star, per star; the check uses the mean of each component, without the
  stars more than :data:`CLIP` robust standard deviations (1.4826 x the
  median absolute deviation) from the median (a star with a close neighbour).

It passes when the median size ratio is within :data:`SIZE_TOLERANCE` (3 %)
of 1 and the mean ellipticity difference has a modulus
``sqrt(de1^2 + de2^2)`` of at most :data:`ELLIPTICITY_TOLERANCE` (0.01: ten
times the error of that mean over a few tens of bright stars, about 0.001,
and a third of the PSF ellipticity a varying PSF reaches at the edges of the
simulated tiles, 0.03). On a simulated field with stars (SExtractor's
catalogue, its stellar locus: 29 stars) the PSF it was drawn with gave a size
ratio of 1.001 and ``|de|`` 0.001, as did PSFEx's model of it; the same PSF
10 % larger gave 1.104 and fails.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

#: Largest relative difference between the median size ratio (model / star) and 1.
SIZE_TOLERANCE = 0.03
#: Largest modulus of the mean ellipticity difference (model - star).
ELLIPTICITY_TOLERANCE = 0.01
#: Side of the stamps measured (star and model), pixels.
STAMP_SIZE = 31
#: Fewest stars measured for a check.
MIN_STARS = 3
#: Ellipticity differences further than this many robust sigmas from the median are
#: left out of the mean.
CLIP = 4.0

log = logging.getLogger(__name__)


@dataclass
class PSFCheck:
    """The PSF model against the stars (see the module's description).

    Attributes
    ----------
    n_stars : int
        Stars measured (star and model both).
    size_ratio, size_ratio_err : float
        Median of sigma(model) / sigma(star), and its error (1.2533 x the
        standard deviation / sqrt(n)).
    de1, de2, de1_err, de2_err : float
        Mean ellipticity difference, model minus star, and their errors.
    tolerance : dict
        ``{"size": SIZE_TOLERANCE, "e": ELLIPTICITY_TOLERANCE}``.
    passed : bool
        Both within their tolerance.
    stars : str
        How the stars were chosen.
    """

    n_stars: int
    size_ratio: float
    size_ratio_err: float
    de1: float
    de2: float
    de1_err: float
    de2_err: float
    tolerance: dict
    passed: bool
    stars: str = "stellar locus"

    def document(self) -> dict:
        """The JSON record (``psf_check`` of ``compare``)."""
        return asdict(self)


def passes(size_ratio: float, de1: float, de2: float, tolerance: dict) -> bool:
    """Whether a size ratio and ellipticity differences are within ``tolerance``."""
    return bool(abs(size_ratio - 1.0) <= tolerance["size"] and np.hypot(de1, de2) <= tolerance["e"])


def check_message(check: dict) -> str:
    """One line with the figures of a failed check (a ``psf_check`` record)."""
    tol = check["tolerance"]
    return (
        f"the PSF model does not match the stars: median size ratio model/star "
        f"{check['size_ratio']:.3f} +- {check['size_ratio_err']:.3f} (tolerance "
        f"{tol['size']:.0%}), mean e1, e2 difference model - star {check['de1']:+.4f}, "
        f"{check['de2']:+.4f} (tolerance {tol['e']} in |de|), {check['n_stars']} stars "
        f"({check['stars']})"
    )


def report_check(check: dict | None, strict: bool) -> None:
    """Nothing for a passed check or none; else one warning, or an error when ``strict``.

    Raises
    ------
    blendflag.errors.BlendflagError
        ``strict`` and the check failed.
    """
    if check is None or check["passed"]:
        return
    if strict:
        from blendflag.errors import BlendflagError

        raise BlendflagError(f"{check_message(check)} (strict PSF check)")
    log.warning(check_message(check))


def adaptive_moments(images) -> np.ndarray:
    """``(n, 3)``: sigma = sqrt(T / 2) (pixels), e1, e2 of each image; NaN where HSM fails."""
    import galsim

    out = np.full((len(images), 3), np.nan)
    for k, image in enumerate(images):
        try:
            res = galsim.hsm.FindAdaptiveMom(galsim.ImageD(np.asarray(image, dtype=np.float64)))
        except galsim.GalSimError:
            continue
        if res.moments_status != 0:
            continue
        e1, e2 = res.observed_shape.e1, res.observed_shape.e2
        # sigma_HSM = det(M)^(1/4); T = 2 sigma_HSM^2 / sqrt(1 - e^2)
        out[k] = (res.moments_sigma / (1.0 - e1 * e1 - e2 * e2) ** 0.25, e1, e2)
    return out


def star_stamps(image, x, y, size: int = STAMP_SIZE, weight=None):
    """Stamps around the stars, background (border median) removed; which are usable.

    Parameters
    ----------
    image : array_like
        The image (ADU); a memory map is read only where the stars are.
    x, y : numpy.ndarray
        1-based positions, pixels.
    size : int
        Stamp side, pixels (odd).
    weight : array_like or None
        A star with a pixel of weight 0 in its stamp is not used.

    Returns
    -------
    stamps : numpy.ndarray
        ``(n, size, size)`` float64 (zero where not usable).
    usable : numpy.ndarray
        bool: inside the image, finite, unmasked.
    """
    from blendflag.io.stamps import stamp_border_median

    ny, nx = image.shape
    half = size // 2
    stamps = np.zeros((len(x), size, size))
    usable = np.zeros(len(x), dtype=bool)
    ix, iy = np.rint(np.asarray(x) - 1).astype(int), np.rint(np.asarray(y) - 1).astype(int)
    for k, (i, j) in enumerate(zip(ix, iy, strict=True)):
        if i - half < 0 or j - half < 0 or i + half >= nx or j + half >= ny:
            continue
        box = (slice(j - half, j + half + 1), slice(i - half, i + half + 1))
        cut = np.asarray(image[box], dtype=np.float64)
        masked = weight is not None and bool((np.asarray(weight[box]) <= 0).any())
        if np.all(np.isfinite(cut)) and not masked:
            stamps[k], usable[k] = cut, True
    if usable.any():
        stamps[usable] -= stamp_border_median(stamps[usable])[:, None, None]
    return stamps, usable


def model_moments(psf_model, x, y, size: int = STAMP_SIZE, pixel_scale=None) -> np.ndarray:
    """:func:`adaptive_moments` of the PSF model at each position (once for a constant model)."""
    if not getattr(psf_model, "varies", True) and len(x):
        one = adaptive_moments([psf_model.image_at(x[0], y[0], size, pixel_scale)])
        return np.repeat(one, len(x), axis=0)
    return adaptive_moments(psf_model.images_at(x, y, size, pixel_scale))


def check_psf(image, psf_model, x, y, weight=None, pixel_scale=None) -> PSFCheck | None:
    """The PSF model against the stars at ``x``, ``y`` (None: fewer than :data:`MIN_STARS`).

    Parameters
    ----------
    image : array_like
        The image (ADU), background subtracted or flat.
    psf_model : blendflag.psf.model.PSFModel
    x, y : numpy.ndarray
        The stars' positions, 1-based pixels.
    weight : array_like or None
        Inverse-variance weight (0: masked).
    pixel_scale : float or None
        Arcsec per pixel, for models in sky units.
    """
    stamps, usable = star_stamps(image, x, y, STAMP_SIZE, weight)
    x, y = np.asarray(x, dtype=np.float64)[usable], np.asarray(y, dtype=np.float64)[usable]
    star = adaptive_moments(stamps[usable])
    model = model_moments(psf_model, x, y, STAMP_SIZE, pixel_scale)
    ok = np.all(np.isfinite(star), axis=1) & np.all(np.isfinite(model), axis=1)
    n = int(ok.sum())
    if n < MIN_STARS:
        return None
    ratio = model[ok, 0] / star[ok, 0]
    size_ratio = float(np.median(ratio))
    (de1, de1_err), (de2, de2_err) = (_clipped_mean(model[ok, k] - star[ok, k]) for k in (1, 2))
    tolerance = {"size": SIZE_TOLERANCE, "e": ELLIPTICITY_TOLERANCE}
    return PSFCheck(
        n_stars=n,
        size_ratio=size_ratio,
        size_ratio_err=float(1.2533 * ratio.std(ddof=1) / np.sqrt(n)),
        de1=de1,
        de2=de2,
        de1_err=de1_err,
        de2_err=de2_err,
        tolerance=tolerance,
        passed=passes(size_ratio, de1, de2, tolerance),
    )


def _clipped_mean(values: np.ndarray) -> tuple[float, float]:
    """Mean and its error of ``values`` within :data:`CLIP` robust sigmas of their median."""
    median = np.median(values)
    sigma = 1.4826 * np.median(np.abs(values - median))
    kept = values[np.abs(values - median) <= CLIP * sigma] if sigma > 0 else values
    error = kept.std(ddof=1) / np.sqrt(len(kept)) if len(kept) > 1 else np.nan
    return float(kept.mean()), float(error)


def check_psf_at_locus(image, psf_model, table, weight=None, pixel_scale=None) -> dict | None:
    """:func:`check_psf` at the catalogue's stellar-locus stars, as its JSON record.

    None when the catalogue lacks the locus columns or has too few stars on it.
    """
    from blendflag.psf.stars import catalogue_stars

    stars, _ = catalogue_stars(table)
    if stars is None or not stars.any():
        return None
    x = np.asarray(table["X_IMAGE"], dtype=np.float64)[stars]
    y = np.asarray(table["Y_IMAGE"], dtype=np.float64)[stars]
    check = check_psf(image, psf_model, x, y, weight, pixel_scale)
    return None if check is None else check.document()


def combine_checks(checks: list) -> dict | None:
    """One record from several images' (tiles') ``psf_check`` records (None: none checked).

    The figures are the star-weighted means of the images' (the size ratio a
    weighted mean of medians); it passes when every image passed.
    """
    checks = [c for c in checks if c]
    if len(checks) <= 1:
        return checks[0] if checks else None
    n = np.array([c["n_stars"] for c in checks], dtype=np.float64)
    w = n / n.sum()

    def mean(key):
        return float(np.sum(w * [c[key] for c in checks]))

    def error(key):
        return float(np.sqrt(np.sum((w * [c[key] for c in checks]) ** 2)))

    return {
        "n_stars": int(n.sum()),
        "size_ratio": mean("size_ratio"),
        "size_ratio_err": error("size_ratio_err"),
        "de1": mean("de1"),
        "de2": mean("de2"),
        "de1_err": error("de1_err"),
        "de2_err": error("de2_err"),
        "tolerance": checks[0]["tolerance"],
        "passed": all(c["passed"] for c in checks),
        "stars": checks[0]["stars"],
    }
