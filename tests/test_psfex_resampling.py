"""Undoing PSFEx's star resampling: the theory against a direct simulation of it."""

from __future__ import annotations

import numpy as np
import pytest

from blendflag.psf.psfex_resampling import lanczos3, transfer_function, undo_resampling


def _sigma(image) -> float:
    import galsim

    return galsim.hsm.FindAdaptiveMom(galsim.ImageD(np.asarray(image, float))).moments_sigma


def _psf(side: int, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """A CFIS-like pixelated PSF (Moffat, 3.5 px FWHM) centred at (dx, dy) from the centre."""
    import galsim

    psf = galsim.Moffat(beta=2.5, fwhm=3.5).shear(g1=0.02)
    return psf.drawImage(nx=side, ny=side, scale=1.0, offset=(dx, dy)).array


def _resample_like_psfex(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Shift by (-dx, -dy) with a Lanczos-3 kernel normalised at every output sample (vignet.c)."""
    n = image.shape[0]
    taps = np.arange(-5, 6)

    def weights(shift):  # output sample j reads input j + shift
        w = lanczos3(taps - (shift - np.floor(shift)))
        return np.floor(shift).astype(int), w / w.sum()

    out = np.zeros_like(image)
    (ix, wx), (iy, wy) = weights(dx), weights(dy)
    for j in range(6, n - 6):
        for i in range(6, n - 6):
            rows = image[j + iy + taps, :][:, i + ix + taps]
            out[j, i] = wy @ rows @ wx
    return out / out.sum() * image.sum()  # PSFEx normalises each star too


def test_the_kernel_conserves_flux_and_sharpens_the_middle_frequencies():
    t = transfer_function([0.0, 1.5, np.pi])
    assert t[0] == pytest.approx(1.0, abs=1e-6)
    assert 1.005 < t[1] < 1.02  # above 1: the model comes out sharper
    assert 0.5 < t[2] < 0.65


def test_undoing_the_average_resampling_restores_the_size():
    """Stars at random phases, resampled as PSFEx does, averaged: 0.3 % small, then restored."""
    rng = np.random.default_rng(3)
    side = 41
    truth = _psf(side)
    stack = [
        _resample_like_psfex(_psf(side, dx, dy), dx, dy)
        for dx, dy in rng.uniform(-0.5, 0.5, size=(300, 2))
    ]
    model = np.mean(stack, axis=0)
    before = _sigma(model) / _sigma(truth)
    after = _sigma(undo_resampling(model, 1.0)) / _sigma(truth)
    assert before < 0.998  # the sharpening this module undoes (0.9969 here)
    assert abs(after - 1.0) < 5e-4  # 1.00005 here: left by 300 phases' scatter
    assert undo_resampling(model, 1.0).sum() == pytest.approx(model.sum(), rel=1e-3)
