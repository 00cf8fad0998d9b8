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
from blendflag.shear.metacal_ops import INTERPOLANT, MetacalOperators, round_target_psf  # noqa: F401 (re-exported)
from blendflag.shear.results import (
    MCAL_ENGINE_FAILED,
    MCAL_MOMENTS_FAILED,
    MCAL_NONFINITE_RESULT,
    MCAL_RENDER_FAILED,
    METACAL_VERSIONS,
    SHAPE_COLUMNS,
    MetacalResult,
    empty_result_table,
)

#: The reconvolution kernel (:meth:`MetacalOperators.from_psf`); also part of the
#: key of the stored matrices, so both always name the same operator.
KERNEL = "kspace"


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
            ops = (
                None
                if per_object
                else MetacalOperators.from_psf(data.psf, data.pixel_scale, self.step, KERNEL)
            )
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
        batch = self._matrix_images(ops, data, flags, rng, noise_fields) if ops else None
        for i in range(n):
            if flags[i]:
                continue
            if per_object:
                try:
                    ops = MetacalOperators.from_psf(
                        data.psf[i], data.pixel_scale, self.step, KERNEL
                    )
                except (galsim.GalSimError, RuntimeError, ValueError, MemoryError):
                    flags[i] |= MCAL_RENDER_FAILED
                    continue
            kernel_sigma[i] = ops.target.sigma
            # first guess of the adaptive sigma (pixels): a bit more than the kernel
            guess_default = max(1.0, 1.5 * ops.target.sigma / data.pixel_scale)
            corrected = self.fixnoise and data.noise_sigma[i] > 0
            if batch is not None:
                mc = {v: batch[v][i] for v in METACAL_VERSIONS}
            else:
                try:
                    mc = ops.images(data.stamps[i], out_image, fixed_grid=True)
                    if corrected:
                        noise = (
                            noise_fields[i]
                            if noise_fields is not None
                            else rng.normal(0.0, data.noise_sigma[i], size=(ny, nx))
                        )
                        ops.add_noise_correction(mc, noise, fixed_grid=True)
                except (galsim.GalSimError, RuntimeError, ValueError, MemoryError):
                    flags[i] |= MCAL_RENDER_FAILED
                    continue
                except Exception:  # noqa: BLE001 - one bad object never stops a catalogue
                    flags[i] |= MCAL_ENGINE_FAILED
                    continue
            if corrected:
                noise_var[i] *= 2.0
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
            ops.target.sigma
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
            "matrices": batch is not None,  # blendflag.shear.metacal_matrix
            "seconds": elapsed,
            "ms_per_object": 1e3 * elapsed / max(n, 1),
        }
        return MetacalResult(
            table=table, images=images, engine=self.name, step=self.step, meta=meta
        )

    def before_measuring(self, stamps, psf, pixel_scale, noise_sigma, run_tasks, parts) -> None:
        """Store the matrices of a run's one PSF, built on its workers, when they pay.

        See :mod:`blendflag.shear.metacal_matrix`; the chunks then memory-map them.
        """
        from blendflag.shear import metacal_matrix as mm

        if np.ndim(psf) != 2 or not len(stamps):
            return
        data = self.prepare(stamps[:1], psf, pixel_scale, np.atleast_1d(noise_sigma)[:1])
        shape = data.stamps.shape[1:]
        if mm.worth_building(len(stamps) * (2 if self.fixnoise else 1), shape):
            mm.store_operator(
                data.psf, data.pixel_scale, self.step, KERNEL, shape, run_tasks, parts
            )

    def _matrix_images(self, ops, data, flags, rng, noise_fields):
        """All stamps' metacal images at once through matrices, or None when they do not pay.

        See :mod:`blendflag.shear.metacal_matrix`: the same images as the
        per-stamp rendering (to rounding), and the noise-correction fields
        drawn from ``rng`` in the same order. Used when this process renders
        at least as many stamps (this call's or ``expected_stamps``) as a stamp
        has pixels, or when the operator of this PSF is already built.
        """
        from blendflag.shear import metacal_matrix as mm

        n, ny, nx = data.stamps.shape
        good = np.flatnonzero(flags == 0)
        noisy = good[data.noise_sigma[good] > 0] if self.fixnoise else good[:0]
        renderings = max(len(good) + len(noisy), self.expected_stamps * (2 if len(noisy) else 1))
        key = mm.operator_key(data.psf, data.pixel_scale, self.step, KERNEL, (ny, nx))
        if not len(good) or not (mm.cached(key) or mm.worth_building(renderings, (ny, nx))):
            return None
        linear = mm.linear_metacal(ops, (ny, nx), key)
        batch = {v: np.zeros((n, ny, nx)) for v in METACAL_VERSIONS}
        for version, arr in linear.images(data.stamps[good]).items():
            batch[version][good] = arr
        if len(noisy):
            fields = np.empty((len(noisy), ny, nx))
            for k, i in enumerate(noisy):  # the per-stamp path's draws, in its order
                fields[k] = (
                    noise_fields[i]
                    if noise_fields is not None
                    else rng.normal(0.0, data.noise_sigma[i], size=(ny, nx))
                )
            part = {v: batch[v][noisy] for v in METACAL_VERSIONS}
            linear.add_noise_correction(part, fields)
            for version in METACAL_VERSIONS:
                batch[version][noisy] = part[version]
        return batch


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
