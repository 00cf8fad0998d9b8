"""The built-in metacalibration engine ``metacal``, on plain GalSim.

Method (Huff & Mandelbaum 2017; Sheldon & Huff 2017), per stamp:

1. ``galsim.InterpolatedImage`` of the stamp and of the PSF image (both
   already contain the pixel response), Lanczos-15 interpolation;
2. deconvolve the PSF (``galsim.Deconvolve``): this removes PSF and pixel;
3. shear by ``(±step, 0)`` and ``(0, ±step)`` (and not at all for noshear);
4. reconvolve with the *reconvolution PSF*: a round Gaussian whose Fourier
   profile lies below the PSF's (see :func:`round_target_psf`), dilated by
   ``1 + 2 step`` so that shearing by ``step`` does not push the sheared
   image's power past the PSF's at any k. The same kernel is used for all
   five versions, so the response is a pure shear response (no PSF term);
5. draw on the stamp grid (``method="no_pixel"``: the kernel stands for the
   pixelated PSF) and measure adaptive moments (``galsim.hsm.FindAdaptiveMom``).
   The ellipticity is the distortion ``e = (Ixx - Iyy, 2 Ixy) / (Ixx + Iyy)``
   of the adaptive Gaussian, the quantity ngmix's Admom reports as ``e``.

Noise correction ("fixnoise"): deconvolving and shearing turns the pixel
noise into a sheared, correlated field that biases the response. For each
object a pure-noise image of the same sigma is rotated by 90 degrees, run
through the same operations, rotated back and added: its anisotropic
correlations cancel those of the image's own noise (the noise variance
doubles). Noiseless stamps (sigma 0) skip it.

The PSF objects (interpolated PSF, its inverse, the reconvolution kernel)
are built once per call and shared by every stamp; given one PSF image per
stamp (a varying PSF evaluated at each object, ``takes_psf_per_object``) they
are built per stamp, each object with its own reconvolution kernel.
"""

from __future__ import annotations

import math
import time

import numpy as np

from blendflag import hookimpl
from blendflag.errors import BlendflagError
from blendflag.shear.engine import StampShearEngine
from blendflag.shear.results import (
    MCAL_ENGINE_FAILED,
    MCAL_MOMENTS_FAILED,
    MCAL_NONFINITE_RESULT,
    MCAL_RENDER_FAILED,
    METACAL_VERSIONS,
    SHAPE_COLUMNS,
    VERSION_SHEARS,
    MetacalResult,
    empty_result_table,
)

#: Real-space interpolant of the stamps and the PSF (ngmix uses the same).
INTERPOLANT = "lanczos15"
#: The reconvolution Gaussian is pinned where the PSF's azimuthally averaged
#: Fourier profile falls to SMALL_KVAL of its flux, at SMALLER_KVAL there.
SMALL_KVAL = 3.0e-2
SMALLER_KVAL = 9.0e-3


def round_target_psf(psf_obj, small_kval: float = SMALL_KVAL, smaller_kval: float = SMALLER_KVAL):
    """A round Gaussian reconvolution kernel below the PSF in Fourier space.

    Let ``k0`` be the wavenumber where the azimuthally averaged real part of
    the PSF's Fourier transform first drops below ``small_kval`` (relative to
    its flux). The Gaussian is chosen to be ``smaller_kval`` there, so it
    falls faster than the PSF beyond: ``exp(-k0^2 sigma^2 / 2) = smaller_kval``.
    The azimuthal average (not a pixel-wise minimum) makes the kernel
    insensitive to noise in the PSF image and to its ellipticity only through
    the average profile.

    Parameters
    ----------
    psf_obj : galsim.GSObject
        The PSF (including the pixel), e.g. an InterpolatedImage, flux 1.

    Returns
    -------
    galsim.Gaussian
        Unit flux; ``sigma`` in the PSF's units (arcsec).
    """
    import galsim

    dk = psf_obj.stepk / 4.0
    kimage = psf_obj.drawKImage(scale=dk)
    kreal = kimage.real.array
    nk = kreal.shape[0]
    ky, kx = np.indices(kreal.shape)
    kr = np.hypot(kx - nk // 2, ky - nk // 2)
    rings = np.rint(kr).astype(np.int64).ravel()
    counts = np.bincount(rings)
    sums = np.bincount(rings, weights=kreal.ravel())
    # only full rings inside the k image
    n_full = nk // 2
    profile = sums[:n_full] / np.maximum(counts[:n_full], 1) / psf_obj.flux
    below = np.flatnonzero(profile < small_kval)
    if below.size == 0 or below[0] == 0:
        raise ValueError(
            "cannot derive a reconvolution PSF: the PSF's Fourier profile "
            "does not fall below threshold inside the k image"
        )
    i = int(below[0])
    p0, p1 = profile[i - 1], profile[i]
    if p0 > 0 and p1 > 0:
        frac = math.log(small_kval / p0) / math.log(p1 / p0)
    else:
        frac = (small_kval - p0) / (p1 - p0)
    k0 = (i - 1 + frac) * dk
    sigma = math.sqrt(-2.0 * math.log(smaller_kval)) / k0
    return galsim.Gaussian(sigma=sigma, flux=1.0)


class GalSimMetacal(StampShearEngine):
    """Metacalibration with GalSim: deconvolve, shear, reconvolve, adaptive moments.

    Parameters
    ----------
    config : blendflag.config.ShearConfig or None
        ``step`` is the shear step. [default step: 0.01]
    fixnoise : bool
        Add the 90-degree rotated, metacal-processed noise field to cancel
        the correlated-noise bias (only for objects with noise sigma > 0).
        [default: True]
    """

    name = "metacal"
    #: ``--engine auto`` preference (built on GalSim alone: runs everywhere).
    priority = 10
    takes_psf_per_object = True

    def __init__(self, config=None, *, fixnoise: bool = True):
        super().__init__(config)
        self.fixnoise = bool(fixnoise)

    @classmethod
    def available(cls) -> bool:
        """GalSim is installed (found without importing it: `plugins` stays light)."""
        import importlib.util

        return importlib.util.find_spec("galsim") is not None

    # -- metacal operators --------------------------------------------------

    def _setup(self, psf: np.ndarray, pixel_scale: float):
        """Per-call objects shared by every stamp."""
        import galsim

        psf_ii = galsim.InterpolatedImage(
            galsim.ImageD(psf, scale=pixel_scale), x_interpolant=INTERPOLANT
        )
        psf_inv = galsim.Deconvolve(psf_ii)
        base = round_target_psf(psf_ii)
        # dilating a unit-flux Gaussian = a Gaussian of larger sigma
        target = galsim.Gaussian(sigma=base.sigma * (1.0 + 2.0 * self.step), flux=1.0)
        shears = {
            v: galsim.Shear(g1=s1 * self.step, g2=s2 * self.step) if (s1 or s2) else None
            for v, (s1, s2) in VERSION_SHEARS.items()
        }
        return psf_inv, target, shears

    def _metacal_images(self, array, pixel_scale, psf_inv, target, shears, out_image):
        """The five metacal versions of one 2-d array, as ``{version: ndarray}``."""
        import galsim

        ii = galsim.InterpolatedImage(
            galsim.ImageD(array, scale=pixel_scale), x_interpolant=INTERPOLANT
        )
        deconv = galsim.Convolve(ii, psf_inv)
        images = {}
        for version in METACAL_VERSIONS:
            shear = shears[version]
            obj = deconv if shear is None else deconv.shear(shear)
            galsim.Convolve(obj, target).drawImage(image=out_image, method="no_pixel")
            images[version] = out_image.array.copy()
        return images

    # -- engine ---------------------------------------------------------------

    def measure(
        self, stamps, psf, pixel_scale, noise_sigma, rng, return_images=False, noise_fields=None
    ):
        """Metacal ellipticities of every stamp (see :meth:`StampShearEngine.measure`).

        ``rng`` draws the noise-correction fields (one per noisy object)
        unless ``noise_fields`` gives them;
        ``meta`` records the reconvolution kernel and the time per object.
        """
        import galsim

        start = time.perf_counter()
        data = self.prepare(stamps, psf, pixel_scale, noise_sigma)
        n, ny, nx = data.stamps.shape
        if noise_fields is not None:
            noise_fields = np.asarray(noise_fields, dtype=np.float64).reshape(-1, ny, nx)
            if len(noise_fields) != n:
                raise ValueError(f"{len(noise_fields)} noise fields for {n} stamps")
        table = empty_result_table(n)
        flags = data.flags.copy()
        per_object = data.psf.ndim == 3
        try:
            setup = None if per_object else self._setup(data.psf, data.pixel_scale)
        except ValueError as exc:  # the whole image, not one object: bad input
            raise BlendflagError(
                f"metacalibration cannot use this PSF: {exc} (is it undersampled?)"
            ) from None
        kernel_sigma = np.full(n, np.nan)  # reconvolution sigma per object, arcsec
        out_image = galsim.ImageD(nx, ny, scale=data.pixel_scale)
        images = (
            {v: np.zeros((n, ny, nx), dtype=np.float32) for v in METACAL_VERSIONS}
            if return_images
            else None
        )
        shape = np.full((len(METACAL_VERSIONS), 2, n), np.nan)
        sigma_pix = np.full(n, np.nan)  # adaptive sigma of noshear, pixels
        cen = np.full((n, 2), np.nan)  # noshear centroid, 0-based (x, y)
        s2n_num = np.full(n, np.nan)
        s2n_den = np.full(n, np.nan)
        noise_var = data.noise_sigma**2
        for i in range(n):
            if flags[i]:
                continue
            if per_object:
                try:
                    setup = self._setup(data.psf[i], data.pixel_scale)
                except (galsim.GalSimError, RuntimeError, ValueError, MemoryError):
                    flags[i] |= MCAL_RENDER_FAILED
                    continue
            psf_inv, target, shears = setup
            kernel_sigma[i] = target.sigma
            # first guess of the adaptive sigma (pixels): a bit more than the kernel
            guess_default = max(1.0, 1.5 * target.sigma / data.pixel_scale)
            try:
                mc = self._metacal_images(
                    data.stamps[i], data.pixel_scale, psf_inv, target, shears, out_image
                )
                sigma_i = data.noise_sigma[i]
                if self.fixnoise and sigma_i > 0:
                    noise = (
                        noise_fields[i]
                        if noise_fields is not None
                        else rng.normal(0.0, sigma_i, size=(ny, nx))
                    )
                    rotated = np.ascontiguousarray(np.rot90(noise, 1))
                    nmc = self._metacal_images(
                        rotated, data.pixel_scale, psf_inv, target, shears, out_image
                    )
                    for version in METACAL_VERSIONS:
                        mc[version] += np.rot90(nmc[version], -1)
                    noise_var[i] *= 2.0
            except (galsim.GalSimError, RuntimeError, ValueError, MemoryError):
                flags[i] |= MCAL_RENDER_FAILED
                continue
            except Exception:  # noqa: BLE001 - one bad object never stops a catalogue
                flags[i] |= MCAL_ENGINE_FAILED
                continue
            if images is not None:
                for version in METACAL_VERSIONS:
                    images[version][i] = mc[version]
            guess = guess_default
            for k, version in enumerate(METACAL_VERSIONS):
                moments = galsim.hsm.FindAdaptiveMom(
                    galsim.ImageD(mc[version], scale=data.pixel_scale),
                    guess_sig=guess,
                    strict=False,
                )
                if moments.moments_status != 0 or moments.error_message:
                    flags[i] |= MCAL_MOMENTS_FAILED
                    break
                shape[k, 0, i] = moments.observed_shape.e1
                shape[k, 1, i] = moments.observed_shape.e2
                if version == "noshear":
                    guess = moments.moments_sigma
                    sigma_pix[i] = moments.moments_sigma
                    # hsm centroids are in image coordinates (1-based)
                    cen[i] = (moments.moments_centroid.x - 1.0, moments.moments_centroid.y - 1.0)
                    num, den = _weighted_flux(
                        mc[version],
                        cen[i],
                        moments.moments_sigma,
                        moments.observed_shape.e1,
                        moments.observed_shape.e2,
                    )
                    s2n_num[i], s2n_den[i] = num, den
        ok = flags == 0
        for k, version in enumerate(METACAL_VERSIONS):
            c1, c2 = SHAPE_COLUMNS[version]
            table[c1] = np.where(ok, shape[k, 0], np.nan)
            table[c2] = np.where(ok, shape[k, 1], np.nan)
        e2sq = shape[0, 0] ** 2 + shape[0, 1] ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            T = 2.0 * sigma_pix**2 / np.sqrt(1.0 - e2sq) * data.pixel_scale**2
            s2n = s2n_num / (np.sqrt(noise_var) * s2n_den)
        s2n = np.where(ok & (noise_var == 0) & (s2n_num > 0), np.inf, s2n)
        table["T_NOSHEAR"] = np.where(ok, T, np.nan)
        table["S2N_NOSHEAR"] = np.where(ok, s2n, np.nan)
        measured = np.all(np.isfinite(shape), axis=(0, 1)) & np.isfinite(T)
        flags[ok & ~measured] |= MCAL_NONFINITE_RESULT
        table["MCAL_FLAGS"] = flags
        for col in table.colnames:
            if col != "MCAL_FLAGS":
                table[col][flags != 0] = np.nan
        elapsed = time.perf_counter() - start
        sigma_k = (
            setup[1].sigma
            if not per_object
            else float(np.nanmedian(kernel_sigma))
            if np.isfinite(kernel_sigma).any()
            else float("nan")
        )
        meta = {
            "reconvolution_psf": f"round Gaussian, sigma {sigma_k:.4f} arcsec "
            f"(dilated by 1 + 2 step{'; median of the per-object kernels' if per_object else ''})",
            "reconvolution_sigma_arcsec": float(sigma_k),
            "fixnoise": self.fixnoise,
            "noise_fields": "given" if noise_fields is not None else "drawn",
            "interpolant": INTERPOLANT,
            "seconds": elapsed,
            "ms_per_object": 1e3 * elapsed / max(n, 1),
        }
        return MetacalResult(
            table=table, images=images, engine=self.name, step=self.step, meta=meta
        )


def _weighted_flux(array, cen, sigma, e1, e2):
    """Adaptive-Gaussian weighted flux ``sum(w I)`` and ``sqrt(sum(w^2))``.

    The S/N of the weighted flux with white noise sigma is
    ``sum(w I) / (sigma sqrt(sum w^2))`` (the Admom definition); the weight
    is the adaptive elliptical Gaussian of distortion (e1, e2) and
    ``det(M)^(1/4) = sigma`` pixels, centred at ``cen`` (0-based x, y).
    """
    ny, nx = array.shape
    y, x = np.mgrid[0:ny, 0:nx]
    dx = x - cen[0]
    dy = y - cen[1]
    esq = e1 * e1 + e2 * e2
    if not esq < 1.0:
        return np.nan, np.nan
    # second moments of the weight: T (1 + e1)/2, T (1 - e1)/2, T e2 / 2
    T = 2.0 * sigma * sigma / math.sqrt(1.0 - esq)
    ixx = 0.5 * T * (1.0 + e1)
    iyy = 0.5 * T * (1.0 - e1)
    ixy = 0.5 * T * e2
    det = ixx * iyy - ixy * ixy
    rho2 = (iyy * dx * dx - 2.0 * ixy * dx * dy + ixx * dy * dy) / det
    w = np.exp(-0.5 * rho2)
    return float((w * array).sum()), float(np.sqrt((w * w).sum()))


@hookimpl
def blendflag_register_shear_engines():
    return [GalSimMetacal]
