"""Undo the sharpening that PSFEx's star resampling leaves in its PSF model.

PSFEx fits its model to star vignets that it first resamples onto the
model's grid, centred on each star (``vignet_resample`` in its ``vignet.c``):
a separable Lanczos-3 kernel, ``sinc(x) sinc(x / 3)`` for ``|x| < 3`` in
units of ``max(PSF_SAMPLING, 1)`` image pixels, normalised to unit sum at
every output sample. Stars sit at random sub-pixel phases, so on average
the model is the true (pixelated) PSF convolved with that kernel, the
normalisation included. The kernel's transfer function is above 1 between
about 0.5 and 1.8 radians per pixel (1.3 % at 1.5) and falls to 0.58 at
Nyquist: it sharpens a PSF of 3-4 pixels FWHM, and the model's adaptive
size comes out 0.3-0.4 % small (docs/results.md, "A varying PSF"), which
is m of about -0.003 for CFIS-like galaxies.

:func:`undo_resampling` divides every component of the model by that
transfer function (per axis, in Fourier space, gains capped at
:data:`MAX_GAIN`). Since the correction is linear and the same everywhere,
correcting each polynomial component corrects the model at every position.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Half-width of PSFEx's Lanczos kernel (``INTERPLIM``, ``INTERPFAC``), kernel units.
LANCZOS_ORDER = 3.0
#: Largest gain of the correction (where the kernel has taken out most of the power).
MAX_GAIN = 2.0


def lanczos3(x) -> np.ndarray:
    """PSFEx's interpolant ``INTERPF``: ``sinc(x) sinc(x / 3)`` for ``|x| <= 3``, else 0."""
    x = np.asarray(x, dtype=np.float64)
    a = LANCZOS_ORDER
    safe = np.where(x == 0.0, 1.0, x)
    value = np.sin(np.pi * safe) * np.sin(np.pi * safe / a) / (np.pi**2 / a * safe * safe)
    return np.where(np.abs(x) > a, 0.0, np.where(x == 0.0, 1.0, value))


@lru_cache(maxsize=1)
def _effective_kernel(n_phase: int = 2000, step: float = 1.0 / 4000):
    """The phase-averaged kernel: ``L(x) / N(phase(x))`` on a fine grid (kernel units)."""
    phases = (np.arange(n_phase) + 0.5) / n_phase - 0.5
    taps = np.arange(-int(LANCZOS_ORDER) - 2, int(LANCZOS_ORDER) + 3)
    norms = lanczos3(taps[None, :] + phases[:, None]).sum(axis=1)
    x = np.arange(-LANCZOS_ORDER, LANCZOS_ORDER + step / 2, step)
    phase = (x + 0.5) % 1.0 - 0.5
    return x, lanczos3(x) / np.interp(phase, phases, norms), step


def transfer_function(k) -> np.ndarray:
    """Fourier transform of the phase-averaged, normalised kernel at ``k`` (rad per kernel unit).

    1 at k = 0 (the kernel conserves flux); real (the kernel is even).
    """
    x, kernel, step = _effective_kernel()
    k = np.atleast_1d(np.asarray(k, dtype=np.float64))
    return (kernel[None, :] * np.cos(np.outer(np.abs(k), x))).sum(axis=1) * step


def undo_resampling(images, sampling: float) -> np.ndarray:
    """PSFEx model components with the average resampling kernel divided out.

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, ny, nx)`` (or one 2-d) model samples, e.g. ``DES_PSFEx.basis``.
    sampling : float
        The model's sample step in image pixels (``PSF_SAMP``); the kernel
        spans ``max(sampling, 1)`` image pixels per unit.

    Returns
    -------
    numpy.ndarray
        The corrected components, same shape, each with its input's sum.
    """
    images = np.asarray(images, dtype=np.float64)
    flat = images.reshape(-1, *images.shape[-2:])
    _, ny, nx = flat.shape
    pad_y, pad_x = 4 * ny, 4 * nx
    scale = float(sampling) / max(float(sampling), 1.0)  # kernel units per model sample

    def gains(n):
        k = 2.0 * np.pi * np.fft.fftfreq(n) * scale
        return 1.0 / np.maximum(transfer_function(k), 1.0 / MAX_GAIN)

    gain = np.outer(gains(pad_y), gains(pad_x))
    out = np.empty_like(flat)
    for i, image in enumerate(flat):
        big = np.zeros((pad_y, pad_x))
        big[:ny, :nx] = image
        big = np.roll(big, (-(ny // 2), -(nx // 2)), axis=(0, 1))  # centre at pixel 0
        corrected = np.fft.ifft2(np.fft.fft2(big) * gain).real
        out[i] = np.roll(corrected, (ny // 2, nx // 2), axis=(0, 1))[:ny, :nx]
    return out.reshape(images.shape)
