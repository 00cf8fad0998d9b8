"""Metacal through matrices equals the per-stamp GalSim rendering."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from blendflag.shear import metacal_matrix as mm
from blendflag.shear.metacal_ops import MetacalOperators
from blendflag.shear.results import METACAL_VERSIONS


def _psf(side: int = 15, scale: float = 0.3) -> np.ndarray:
    import galsim

    img = galsim.Moffat(beta=2.5, fwhm=0.9).shear(g1=0.03).drawImage(nx=side, ny=side, scale=scale)
    return img.array / img.array.sum()


def _stamps(n: int, side: int, scale: float, rng) -> np.ndarray:
    import galsim

    psf = galsim.Moffat(beta=2.5, fwhm=0.9).shear(g1=0.03)
    out = np.empty((n, side, side))
    for k in range(n):
        gal = galsim.Exponential(half_light_radius=rng.uniform(0.3, 0.8), flux=1e3)
        gal = gal.shear(g1=rng.normal(0, 0.2), g2=rng.normal(0, 0.2))
        img = galsim.Convolve(gal, psf).drawImage(
            nx=side, ny=side, scale=scale, offset=rng.uniform(-0.5, 0.5, 2)
        )
        out[k] = img.array + rng.normal(0.0, 1.0, (side, side))
    return out


def test_matrices_equal_the_per_stamp_rendering():
    rng = np.random.default_rng(5)
    side, scale = 17, 0.3
    ops = MetacalOperators.from_psf(_psf(), scale, 0.01)
    linear = mm.LinearMetacal.build(ops, (side, side))
    stamps = _stamps(3, side, scale, rng)
    noise = rng.normal(0.0, 1.0, stamps.shape)
    batch = linear.images(stamps)
    linear.add_noise_correction(batch, noise)
    for k in range(len(stamps)):
        direct = ops.images(stamps[k], fixed_grid=True)
        ops.add_noise_correction(direct, noise[k], fixed_grid=True)
        for version in METACAL_VERSIONS:
            scale_k = np.abs(direct[version]).max()
            np.testing.assert_allclose(batch[version][k], direct[version], atol=1e-12 * scale_k)
    # the fixed grid is what makes it linear: the sheared versions do differ from noshear
    assert not np.allclose(batch["1p"], batch["1m"])


def test_engine_gives_the_same_table_either_way(monkeypatch):
    from blendflag.config import ShearConfig
    from blendflag_plugins.metacal_galsim import GalSimMetacal

    rng = np.random.default_rng(8)
    side, scale = 17, 0.3
    stamps = _stamps(6, side, scale, rng)
    stamps[2, 3, 3] = np.nan  # a flagged stamp keeps its place
    engine = GalSimMetacal(ShearConfig())
    direct = engine.measure(stamps, _psf(), scale, 1.0, np.random.default_rng(1))
    assert not direct.meta["matrices"]
    engine.expected_stamps = side * side  # worth building now
    linear = engine.measure(stamps, _psf(), scale, 1.0, np.random.default_rng(1))
    assert linear.meta["matrices"]
    for col in direct.table.colnames:
        np.testing.assert_allclose(
            np.asarray(linear.table[col], dtype=float),
            np.asarray(direct.table[col], dtype=float),
            rtol=1e-9,
            atol=1e-12,
            equal_nan=True,
            err_msg=col,
        )
    assert direct.table["MCAL_FLAGS"][2] != 0


@pytest.mark.parametrize(
    ("n", "shape", "worth"),
    [(100, (51, 51), False), (2601, (51, 51), True), (10**6, (61, 61), False)],
)
def test_matrices_only_when_they_pay(n, shape, worth):
    assert mm.worth_building(n, shape) is worth


def test_operator_is_stored_once_and_memory_mapped(tmp_path, monkeypatch):
    """Built on the run's workers, stored, then found by a new process (here: a cleared cache)."""
    monkeypatch.setenv("BLENDFLAG_CACHE_DIR", str(tmp_path))
    side, scale = 11, 0.3
    psf = _psf(side, scale)
    calls = []

    def run_tasks(func, tasks):
        calls.append(len(tasks))
        return [func(*t) for t in tasks]

    key = mm.operator_key(psf, scale, 0.01, "kspace", (side, side))
    make_ops = partial(MetacalOperators.from_psf, psf, scale, 0.01, "kspace")
    assert mm.store_operator(make_ops, key, (side, side), run_tasks, 3)
    assert calls == [3] and len(list(tmp_path.glob("metacal-*.npy"))) == 1
    assert mm.store_operator(make_ops, key, (side, side), run_tasks, 3)
    assert calls == [3]  # found on disk: nothing built again
    mm._CACHE.clear()
    ops = MetacalOperators.from_psf(psf, scale, 0.01)
    linear = mm.linear_metacal(ops, (side, side), key)
    assert isinstance(linear.matrices["1p"], np.memmap)
    stamp = np.random.default_rng(2).normal(size=(1, side, side))
    direct = ops.images(stamp[0], fixed_grid=True)
    np.testing.assert_allclose(linear.images(stamp)["2m"][0], direct["2m"], atol=1e-12)
    monkeypatch.setenv("BLENDFLAG_CACHE_DIR", "none")
    assert not mm.store_operator(make_ops, key, (side, side), run_tasks, 3)
