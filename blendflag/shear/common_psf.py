"""Metacalibration with a varying PSF through one round Gaussian PSF common to the image.

With a PSF that varies (a PSFEx model), each object has its own PSF image,
and metacalibrating it directly renders every version per object (about
35 ms per object and noise field on one core). Here each object is first
brought to one round Gaussian PSF of ``sigma`` arcsec common to the whole
image (:func:`blendflag.shear.metacal_ops.homogenised`: deconvolve the
object's PSF, convolve the Gaussian), then all objects share one metacal
operator (:meth:`MetacalOperators.for_gaussian_psf`: deconvolve the
Gaussian, shear, reconvolve it dilated by ``1 + 2 step``), applied through
the one-PSF matrices of :mod:`blendflag.shear.metacal_matrix` when they pay.

In Fourier space this is the same operation as metacalibration with the
object's own PSF and the common Gaussian as reconvolution kernel
(``T(k) I(S k) / P(S k)``), because ``G(S k) / G(S k)`` cancels; the
Gaussian is the widest of the PSFs' own kernels
(:func:`common_target_sigma`), so no PSF is divided where it is small.
Objects with a sharper PSF than the widest are reconvolved more than their
own kernel would (some S/N lost). The noise-correction field of an object
is rotated by 90 degrees, homogenised with the object's PSF, metacal-
processed and rotated back: the same operator as its image's.
"""

from __future__ import annotations

import numpy as np

from blendflag.shear.metacal_matrix import when_worth
from blendflag.shear.metacal_ops import MetacalOperators, common_target_sigma, homogenised
from blendflag.shear.results import MCAL_RENDER_FAILED, METACAL_VERSIONS

#: PSF images of a per-object stack used to find the common Gaussian when no
#: PSF model over the whole image is given (evenly spaced in the stack).
STACK_SAMPLE = 200


def stack_sigma(psf_stack: np.ndarray, pixel_scale: float) -> float:
    """The common Gaussian of a PSF stack (:data:`STACK_SAMPLE` of its images), arcsec."""
    n = len(psf_stack)
    picks = np.unique(np.linspace(0, n - 1, min(n, STACK_SAMPLE)).astype(int))
    return common_target_sigma(psf_stack[picks], pixel_scale)


def common_psf_images(data, flags, sigma, step, fixnoise, rng, noise_fields, key, expected=0):
    """The five metacal images of every stamp through the common Gaussian PSF.

    Parameters
    ----------
    data : blendflag.shear.engine.PreparedInput
        ``stamps (n, S, S)``, ``psf (n, P, P)``, ``noise_sigma (n,)``, ``pixel_scale``.
    flags : numpy.ndarray
        Per-object flags; objects with flags are skipped, failures are
        flagged :data:`MCAL_RENDER_FAILED` here (in place).
    sigma : float
        The common Gaussian PSF, arcsec (:func:`common_target_sigma`).
    step : float
        The metacal shear step.
    fixnoise : bool
        Add the noise correction to objects with noise sigma > 0.
    rng : numpy.random.Generator
        Draws the noise-correction fields (in object order) unless given.
    noise_fields : numpy.ndarray or None
        ``(n, S, S)`` noise-correction fields.
    key : str
        Names the common operator's matrices
        (:func:`blendflag.shear.metacal_matrix.operator_key`); they are used
        when built already or when they pay, else every stamp is rendered.
    expected : int
        Stamps the whole run renders (decides whether matrices pay).

    Returns
    -------
    ops : MetacalOperators
        The common operator (its ``target`` is the reconvolution kernel).
    images : dict
        ``{version: (n, S, S) float64}``; zero for flagged objects.
    matrices : bool
        Whether the matrices were used.
    """
    n, ny, nx = data.stamps.shape
    ops = MetacalOperators.for_gaussian_psf(sigma, data.pixel_scale, step)
    flat, noise_flat, noisy = _homogenised_stamps(data, flags, sigma, fixnoise, rng, noise_fields)
    good = np.flatnonzero(flags == 0)
    noisy_rows = np.flatnonzero(noisy & (flags == 0))
    images = {v: np.zeros((n, ny, nx)) for v in METACAL_VERSIONS}
    linear = when_worth(ops, key, (ny, nx), max(len(good) + len(noisy_rows), expected))
    if linear is not None:
        _metacal_by_matrices(linear, flat, noise_flat, good, noisy_rows, images)
        return ops, images, True
    _metacal_stamp_by_stamp(ops, flat, noise_flat, good, noisy_rows, images)
    return ops, images, False


def _homogenised_stamps(data, flags, sigma, fixnoise, rng, noise_fields):
    """Every unflagged stamp (and its noise-correction field) brought to the common Gaussian PSF.

    Parameters
    ----------
    data : blendflag.shear.engine.PreparedInput
        ``stamps (n, S, S)``, ``psf (n, P, P)``, ``noise_sigma (n,)`` (flux
        units), ``pixel_scale`` (arcsec).
    flags : numpy.ndarray
        Per-object flags; failures are flagged :data:`MCAL_RENDER_FAILED` (in place).
    sigma : float
        The common Gaussian PSF, arcsec.
    fixnoise : bool
        Make noise-correction fields for objects with noise sigma > 0.
    rng : numpy.random.Generator
        Draws the noise-correction fields (in object order) unless given.
    noise_fields : numpy.ndarray or None
        ``(n, S, S)`` noise-correction fields.

    Returns
    -------
    flat : numpy.ndarray
        ``(n, S, S)`` homogenised stamps (zero where skipped or failed).
    noise_flat : numpy.ndarray
        ``(n, S, S)`` homogenised noise fields, rotated by 90 degrees.
    noisy : numpy.ndarray
        bool ``(n,)``: the object has a noise-correction field.
    """
    import galsim

    n, ny, nx = data.stamps.shape
    flat = np.zeros((n, ny, nx))
    noise_flat = np.zeros((n, ny, nx))
    noisy = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(flags == 0):
        arrays = [data.stamps[i]]
        if fixnoise and data.noise_sigma[i] > 0:
            noisy[i] = True
            noise = (
                noise_fields[i]
                if noise_fields is not None
                else rng.normal(0.0, data.noise_sigma[i], size=(ny, nx))
            )
            arrays.append(np.rot90(noise, 1))
        try:
            out = homogenised(np.stack(arrays), data.psf[i], sigma, data.pixel_scale)
        except (galsim.GalSimError, RuntimeError, ValueError, MemoryError):
            flags[i] |= MCAL_RENDER_FAILED
            noisy[i] = False
            continue
        flat[i] = out[0]
        if noisy[i]:
            noise_flat[i] = out[1]
    return flat, noise_flat, noisy


def _metacal_by_matrices(linear, flat, noise_flat, good, noisy_rows, images: dict) -> None:
    """Fill ``images`` (in place) through the common operator's matrices, all stamps at once.

    ``good`` and ``noisy_rows`` are the rows of the stamps and of the noise
    fields to process; the noise fields' images are rotated back and added.
    """
    for version, arr in linear.images(flat[good]).items():
        images[version][good] = arr
    for version, arr in linear.images(noise_flat[noisy_rows]).items():
        images[version][noisy_rows] += np.rot90(arr, -1, axes=(1, 2))


def _metacal_stamp_by_stamp(ops, flat, noise_flat, good, noisy_rows, images: dict) -> None:
    """Fill ``images`` (in place) by rendering every stamp with the common operator ``ops``.

    ``good`` and ``noisy_rows`` are the rows of the stamps and of the noise
    fields to process; the noise fields' images are rotated back and added.
    """
    for i in good:
        for version, arr in ops.images(flat[i], fixed_grid=True).items():
            images[version][i] = arr
    for i in noisy_rows:
        for version, arr in ops.images(noise_flat[i], fixed_grid=True).items():
            images[version][i] += np.rot90(arr, -1)
