"""Pixel noise that follows a uniformly sheared scene (blendflag.simulate.scene_noise)."""

from __future__ import annotations

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
