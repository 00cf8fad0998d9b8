"""The metacalibration operators on GalSim: deconvolve, shear, reconvolve.

Shared by the engines that make metacal images, of stamps (``metacal``) or of
whole cells (metadetection). Method (Huff & Mandelbaum 2017; Sheldon & Huff
2017): ``galsim.InterpolatedImage`` of the image and the PSF image (both
already contain the pixel response), Lanczos-15 interpolation; deconvolve the
PSF; shear by ``(±step, 0)`` and ``(0, ±step)`` (or not at all for noshear);
reconvolve with a round Gaussian below the PSF in Fourier space, dilated by
``1 + 2 step`` (:func:`round_target_psf`); draw on the input grid with
``method="no_pixel"`` (the kernel stands for the pixelated PSF).

Noise correction ("fixnoise", :func:`add_noise_correction`): a pure-noise
image of the same sigma is rotated by 90 degrees, run through the same
operations, rotated back and added, so its anisotropic correlations cancel
those of the image's own sheared noise (the noise variance doubles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from blendflag.shear.results import METACAL_VERSIONS, VERSION_SHEARS

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


def fitgauss_target_psf(psf: np.ndarray, pixel_scale: float, max_dilation: float = 1.1):
    """A round Gaussian from the PSF image's adaptive moments (ngmix's ``fitgauss``).

    The adaptive-moments Gaussian of the pixelised PSF image has size ``T``
    and ellipticity ``e``; it is made round without shrinking its major axis
    by ``T_round = T d`` with ``d = 1 + 2 (sqrt(lambda_max / (T / 2)) - 1)``
    (at most ``max_dilation``), ``lambda_max`` the larger eigenvalue of its
    second-moment matrix. The pixel is already in the image and is not added
    again.

    Parameters
    ----------
    psf : numpy.ndarray
        PSF image, centred.
    pixel_scale : float
        arcsec per pixel.

    Returns
    -------
    galsim.Gaussian
        Unit flux; ``sigma`` in arcsec.

    Raises
    ------
    ValueError
        The adaptive moments fail.
    """
    import galsim

    moments = galsim.hsm.FindAdaptiveMom(galsim.ImageD(psf, scale=pixel_scale), strict=False)
    if moments.moments_status != 0:
        raise ValueError(f"adaptive moments of the PSF failed: {moments.error_message}")
    e1, e2 = moments.observed_shape.e1, moments.observed_shape.e2
    esq = e1 * e1 + e2 * e2
    T = 2.0 * moments.moments_sigma**2 / math.sqrt(1.0 - esq) * pixel_scale**2
    ixx, iyy, ixy = 0.5 * T * (1 + e1), 0.5 * T * (1 - e1), 0.5 * T * e2
    lam_max = 0.5 * (ixx + iyy) + math.sqrt(0.25 * (ixx - iyy) ** 2 + ixy**2)
    dilation = min(1.0 + 2.0 * (math.sqrt(lam_max / (T / 2.0)) - 1.0), max_dilation)
    return galsim.Gaussian(sigma=math.sqrt(T * dilation / 2.0), flux=1.0)


@dataclass
class MetacalOperators:
    """What every metacal image of one PSF shares.

    Attributes
    ----------
    psf_inverse : galsim.GSObject
        The deconvolution by the PSF image.
    target : galsim.Gaussian
        The round, dilated reconvolution kernel (arcsec).
    shears : dict
        ``{version: galsim.Shear or None}``.
    pixel_scale : float
        arcsec per pixel.
    """

    psf_inverse: object
    target: object
    shears: dict
    pixel_scale: float

    @classmethod
    def from_psf(
        cls, psf: np.ndarray, pixel_scale: float, step: float, kernel: str = "kspace"
    ) -> MetacalOperators:
        """Build the operators of a PSF image (sum 1, centred) for a shear ``step``.

        Parameters
        ----------
        kernel : str
            The round Gaussian before dilation: ``"kspace"`` (below the PSF
            in Fourier space, :func:`round_target_psf`) or ``"fitgauss"``
            (ngmix's choice: the adaptive-moments Gaussian of the PSF image,
            :func:`fitgauss_target_psf`). [default: "kspace"]

        Raises
        ------
        ValueError
            No reconvolution kernel fits the PSF (undersampled PSF), or an
            unknown ``kernel``.
        """
        import galsim

        psf_ii = galsim.InterpolatedImage(
            galsim.ImageD(psf, scale=pixel_scale), x_interpolant=INTERPOLANT
        )
        if kernel == "kspace":
            base = round_target_psf(psf_ii)
        elif kernel == "fitgauss":
            base = fitgauss_target_psf(psf, pixel_scale)
        else:
            raise ValueError(f"unknown reconvolution kernel {kernel!r} (kspace or fitgauss)")
        # dilating a unit-flux Gaussian = a Gaussian of larger sigma
        target = galsim.Gaussian(sigma=base.sigma * (1.0 + 2.0 * step), flux=1.0)
        return cls(galsim.Deconvolve(psf_ii), target, _version_shears(step), float(pixel_scale))

    @classmethod
    def for_gaussian_psf(cls, sigma: float, pixel_scale: float, step: float) -> MetacalOperators:
        """The operators of images whose PSF is a round Gaussian of ``sigma`` arcsec.

        The images of :func:`homogenised`: the Gaussian is deconvolved
        exactly and the reconvolution kernel is the same Gaussian dilated by
        ``1 + 2 step`` (its Fourier profile covers the sheared one everywhere).
        """
        import galsim

        gaussian = galsim.Gaussian(sigma=float(sigma), flux=1.0)
        target = galsim.Gaussian(sigma=float(sigma) * (1.0 + 2.0 * step), flux=1.0)
        return cls(galsim.Deconvolve(gaussian), target, _version_shears(step), float(pixel_scale))

    def images(
        self, array: np.ndarray, out_image=None, fixed_grid: bool = False
    ) -> dict[str, np.ndarray]:
        """The five metacal versions of a 2-d array, ``{version: ndarray}`` of its shape.

        ``fixed_grid``: GalSim's Fourier grid follows from the array's size
        alone, not from its content (``calculate_stepk`` and ``calculate_maxk``
        off), so the result is exactly linear in the pixels
        (:mod:`blendflag.shear.metacal_matrix` relies on it).
        """
        import galsim

        ny, nx = array.shape
        if out_image is None or out_image.array.shape != (ny, nx):
            out_image = galsim.ImageD(nx, ny, scale=self.pixel_scale)
        ii = galsim.InterpolatedImage(
            galsim.ImageD(array, scale=self.pixel_scale),
            x_interpolant=INTERPOLANT,
            calculate_stepk=not fixed_grid,
            calculate_maxk=not fixed_grid,
        )
        deconv = galsim.Convolve(ii, self.psf_inverse)
        images = {}
        for version in METACAL_VERSIONS:
            shear = self.shears[version]
            obj = deconv if shear is None else deconv.shear(shear)
            galsim.Convolve(obj, self.target).drawImage(image=out_image, method="no_pixel")
            images[version] = out_image.array.copy()
        return images

    def add_noise_correction(
        self, images: dict, noise: np.ndarray, fixed_grid: bool = False
    ) -> None:
        """Add the 90-degree rotated, metacal-processed ``noise`` to ``images`` in place.

        ``noise`` is a pure-noise array of the images' shape (ADU), drawn at
        the image's noise sigma; afterwards the images' noise variance is twice
        the input's.
        """
        rotated = np.ascontiguousarray(np.rot90(noise, 1))
        processed = self.images(rotated, fixed_grid=fixed_grid)
        for version in METACAL_VERSIONS:
            images[version] += np.rot90(processed[version], -1)

    def target_image(self, size: int) -> np.ndarray:
        """The reconvolution kernel drawn on a ``size`` x ``size`` grid (sum 1)."""
        import galsim

        image = galsim.ImageD(size, size, scale=self.pixel_scale)
        self.target.drawImage(image=image, method="no_pixel")
        return image.array / image.array.sum()


def _version_shears(step: float) -> dict:
    """``{version: galsim.Shear or None}`` of the five metacal versions for ``step``."""
    import galsim

    return {
        v: galsim.Shear(g1=s1 * step, g2=s2 * step) if (s1 or s2) else None
        for v, (s1, s2) in VERSION_SHEARS.items()
    }


def common_target_sigma(psf_images, pixel_scale: float) -> float:
    """The round Gaussian every PSF of ``psf_images`` can be brought to (sigma, arcsec).

    The widest of their :func:`round_target_psf` kernels: below each PSF in
    Fourier space, so :func:`homogenised` divides by no PSF where it is small.

    Parameters
    ----------
    psf_images : sequence of numpy.ndarray
        PSF images (pixel included), e.g. a PSF model over its whole image.
    pixel_scale : float
        arcsec per pixel.

    Raises
    ------
    ValueError
        A PSF has no such kernel (undersampled).
    """
    import galsim

    sigmas = [
        round_target_psf(
            galsim.InterpolatedImage(
                galsim.ImageD(np.asarray(p, dtype=np.float64), scale=pixel_scale),
                x_interpolant=INTERPOLANT,
            )
        ).sigma
        for p in psf_images
    ]
    return float(max(sigmas))


def homogenised(arrays, psf: np.ndarray, sigma: float, pixel_scale: float) -> np.ndarray:
    """Images brought from their PSF image ``psf`` to a round Gaussian PSF of ``sigma`` arcsec.

    Each of ``arrays`` (``(k, ny, nx)``, e.g. a stamp and its noise field)
    is interpolated (Lanczos-15), deconvolved by the PSF, convolved with the
    Gaussian and drawn on the same grid (``method="no_pixel"``: the
    Gaussian stands for the pixelated PSF), on a Fourier grid fixed by the
    array's size, so the result is linear in the pixels. With ``sigma``
    from :func:`common_target_sigma` the Gaussian lies below the PSF at
    every k where the PSF matters.

    Returns
    -------
    numpy.ndarray
        ``(k, ny, nx)`` float64.
    """
    import galsim

    arrays = np.asarray(arrays, dtype=np.float64)
    _, ny, nx = arrays.shape
    psf_ii = galsim.InterpolatedImage(
        galsim.ImageD(np.asarray(psf, dtype=np.float64), scale=pixel_scale),
        x_interpolant=INTERPOLANT,
    )
    kernel = galsim.Convolve(galsim.Deconvolve(psf_ii), galsim.Gaussian(sigma=sigma, flux=1.0))
    out = galsim.ImageD(nx, ny, scale=pixel_scale)
    result = np.empty_like(arrays)
    for k, array in enumerate(arrays):
        ii = galsim.InterpolatedImage(
            galsim.ImageD(array, scale=pixel_scale),
            x_interpolant=INTERPOLANT,
            calculate_stepk=False,
            calculate_maxk=False,
        )
        galsim.Convolve(ii, kernel).drawImage(image=out, method="no_pixel")
        result[k] = out.array
    return result
