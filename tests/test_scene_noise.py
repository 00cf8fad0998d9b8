"""Pixel noise that follows a uniformly sheared scene (blendflag.simulate.scene_noise)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blendflag.simulate.field_geometry import position_matrix
from blendflag.simulate.scene_noise import field_noise_order, scene_noise_order

PRESET = "cfis_survey"


@settings(max_examples=40, deadline=None)
@given(
    ny=st.integers(2, 40),
    nx=st.integers(2, 40),
    g1=st.floats(-0.2, 0.2),
    g2=st.floats(-0.2, 0.2),
    fx=st.floats(0, 1),
    fy=st.floats(0, 1),
)
def test_the_noise_order_is_a_permutation(ny, nx, g1, g2, fx, fy):
    """Every pixel takes exactly one pixel's noise: the statistics stay exact."""
    order = scene_noise_order((ny, nx), position_matrix((g1, g2)), (fx * nx, fy * ny))
    assert np.array_equal(np.sort(order), np.arange(nx * ny))


@pytest.mark.parametrize(("shear", "tolerance"), [((0.02, 0.0), 1.0), ((0.0, 0.02), 1.5)])
def test_the_noise_follows_the_inverse_shear(shear, tolerance):
    """Away from the edges, pixel p takes the noise of centre + A^-1 (p - centre)."""
    side, centre = 301, 150.0
    matrix = position_matrix(shear)
    order = scene_noise_order((side, side), matrix, (centre, centre))
    y, x = np.mgrid[40 : side - 40, 40 : side - 40]
    sy, sx = np.divmod(order.reshape(side, side)[40 : side - 40, 40 : side - 40], side)
    ex, ey = np.linalg.inv(matrix) @ np.stack([x.ravel() - centre, y.ravel() - centre])
    error = np.hypot(sx.ravel() - centre - ex, sy.ravel() - centre - ey)
    assert error.max() <= tolerance
    assert np.median(error) < 0.75
    # far from the centre the positions move by pixels: following matters
    assert np.hypot(*(ex - (x.ravel() - centre), ey - (y.ravel() - centre))).max() > 2


def test_each_scene_of_a_field_is_permuted_within_itself():
    """Rotated pairs: the left scene's pixels take left noise, the right's right noise."""
    ny, side = 50, 50
    order = field_noise_order((ny, 2 * side), position_matrix((0.05, 0.0)), 2).reshape(ny, -1)
    assert np.array_equal(np.sort(order.ravel()), np.arange(2 * side * ny))
    assert np.all(order[:, :side] % (2 * side) < side)
    assert np.all(order[:, side:] % (2 * side) >= side)


@functools.lru_cache(maxsize=4)
def _field_noise(shear):
    """Pixel noise (in sigma) and truth of a default ``cfis_survey`` field of 400 galaxies."""
    from blendflag.simulate.field import simulate_field

    kw = {"seed": 3, "rotated_pairs": True, "n_stars": 0, "shear": shear}
    noisy = simulate_field(PRESET, 400, **kw)
    clean = simulate_field(PRESET, 400, noise=0.0, **kw)
    return (noisy.image - clean.image) / noisy.noise_sigma, noisy.truth


def _boxes(noise, truth, rows):
    """5x5 pixel boxes of ``noise`` at the galaxies ``rows`` of ``truth``, flattened."""
    boxes = []
    for i in rows:
        x, y = (int(np.rint(truth[c][i])) - 1 for c in ("X", "Y"))
        boxes.append(noise[y - 2 : y + 3, x - 2 : x + 3].ravel())
    return np.concatenate(boxes)


def test_a_uniformly_sheared_pair_keeps_its_noise_at_each_galaxy():
    """±g fields with the default uniform shear: the same noise values in both
    images, and at each bright galaxy nearly the same noise (it cancels in
    the pair), although the galaxies move by pixels between the two."""
    from blendflag.simulate.presets import load_dataset

    plus, truth_plus = _field_noise((0.02, 0.0))
    minus, truth_minus = _field_noise((-0.02, 0.0))
    unsheared, _ = _field_noise((0.0, 0.0))  # the draws in place
    np.testing.assert_allclose(np.sort(plus.ravel()), np.sort(minus.ravel()), atol=1e-3)
    assert abs(plus.std() - 1.0) < 0.01
    moved = np.hypot(truth_plus["X"] - truth_minus["X"], truth_plus["Y"] - truth_minus["Y"])
    bright = np.asarray(truth_plus["MAG"]) <= load_dataset(PRESET).galaxy.counts.depth
    rows = np.flatnonzero(bright & (moved > 2.0))
    assert len(rows) > 20
    at_minus = _boxes(minus, truth_minus, rows)
    # boxes on the rounded positions: a galaxy's rounding differs by up to a
    # pixel between +g and -g, so about half the box pixels coincide (0.51 on
    # this field), against none with static noise
    assert np.corrcoef(_boxes(plus, truth_plus, rows), at_minus)[0, 1] > 0.4
    # static noise would not cancel there
    assert abs(np.corrcoef(_boxes(unsheared, truth_plus, rows), at_minus)[0, 1]) < 0.2


def _correction_field(truth, shear, shape, sign):
    """:func:`context_correction_field` of one image of a ±g field (seed 11)."""
    from types import SimpleNamespace

    from blendflag.shear.inputs import context_correction_field

    context = SimpleNamespace(
        truth=truth,
        image=np.zeros(shape),
        image_header=None,
        true_shear=shear,
        shear_sign=sign,
        seed=11,
        results={},
    )
    return context_correction_field(context)


def test_an_image_engines_correction_field_follows_the_scene():
    """Metadetection's correction field of a uniformly sheared ±g field: one set
    of draws in both images, nearly the same values at each galaxy under +g
    and -g (as the pixel noise), and the right half's the left half's turned
    for the rotated twins; none for an image without a scene shear."""
    from blendflag.simulate.presets import load_dataset

    plus_noise, truth_plus = _field_noise((0.02, 0.0))
    _, truth_minus = _field_noise((-0.02, 0.0))
    shape = plus_noise.shape
    plus = _correction_field(truth_plus, (0.02, 0.0), shape, 1)
    minus = _correction_field(truth_minus, (0.02, 0.0), shape, -1)
    np.testing.assert_array_equal(np.sort(plus.ravel()), np.sort(minus.ravel()))
    moved = np.hypot(truth_plus["X"] - truth_minus["X"], truth_plus["Y"] - truth_minus["Y"])
    bright = np.asarray(truth_plus["MAG"]) <= load_dataset(PRESET).galaxy.counts.depth
    rows = np.flatnonzero(bright & (moved > 2.0))
    at_minus = _boxes(minus, truth_minus, rows)
    assert np.corrcoef(_boxes(plus, truth_plus, rows), at_minus)[0, 1] > 0.4
    # unsheared, the right half is the left half turned as the twins are
    flat = _correction_field(truth_plus, (0.0, 0.0), shape, 1)
    side = shape[1] // 2
    np.testing.assert_array_equal(flat[:, side:], np.rot90(flat[:, :side], -1))
    static = truth_plus.copy()
    static.meta["SHRSCENE"] = False  # positions sheared in groups: the engine seeds its cells
    assert _correction_field(static, (0.02, 0.0), shape, 1) is None
