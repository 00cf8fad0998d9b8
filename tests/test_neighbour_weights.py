"""``shear.neighbour_pixels: model``: neighbours down-weighted by models sheared per version."""

from __future__ import annotations

import numpy as np
import pytest

from blendflag.config import DetectConfig, PipelineConfig, ShearConfig
from blendflag.errors import BlendflagError
from blendflag.io.stamps import cut_stamps
from blendflag.pipeline.stages import Context
from blendflag.plugins import get_plugin_manager
from blendflag.shear import neighbour_weights as nw
from blendflag.shear.inputs import engine_inputs, stamp_offsets
from blendflag_plugins.metacal_galsim import GalSimMetacal
from blendflag_plugins.sep_detect import detect_with_sep
from tests.conftest import gaussian_image

SIZE = 41
SCALE = 0.2  # arcsec per pixel: the 1.2 arcsec weight is 6 px wide
ROUND = [100.0, 2.0, 2.0, 0.0]  # FLUX_AUTO, A, B (pixels), THETA (degrees)
PSF = gaussian_image((25, 25), [(12.0, 12.0)], 1.0, 1.5, 0.0, np.random.default_rng(0))


def _pair_models(separation=8.0, neighbour=ROUND):
    x, y = np.array([100.0, 100.0 + separation]), np.array([100.0, 100.0])
    models = np.array([ROUND, neighbour], dtype=float)
    return nw.neighbour_models(x, y, models, np.zeros((2, 2)), SIZE)


def test_the_weight_is_one_on_the_object_and_falls_to_zero_on_a_neighbour():
    """Two equal round sources 8 px apart: 1 at the object, 1/2 halfway, 0 at the neighbour."""
    w = nw.version_weight(_pair_models()[0], np.eye(2), (SIZE, SIZE))
    c = SIZE // 2
    assert w[c, c] == pytest.approx(1.0, abs=1e-6)
    assert w[c, c + 4] == pytest.approx(0.5, abs=1e-12)  # the bisector
    assert w[c, c + 8] < 1e-6
    assert np.all((w >= 0) & (w <= 1))
    # a brighter neighbour moves the boundary towards the object
    bright = nw.version_weight(_pair_models(neighbour=[400, 2, 2, 0])[0], np.eye(2), (SIZE, SIZE))
    assert bright[c, c + 4] < 0.5 and bright[c, c + 3] < w[c, c + 3]


def test_an_isolated_object_keeps_its_whole_weight():
    models = nw.neighbour_models([50.0], [50.0], np.array([ROUND]), np.zeros((1, 2)), SIZE)
    assert np.isneginf(models[0, 1:, 2]).all()
    assert np.array_equal(
        nw.version_weights(models[0], 0.01, (SIZE, SIZE)), np.ones((5, SIZE, SIZE))
    )


@pytest.mark.parametrize("g1, g2", [(0.01, 0.0), (0.0, -0.01), (0.03, 0.02)])
def test_the_boundary_is_sheared_with_the_version(g1, g2):
    """The weight of a sheared version at pixel p equals the unsheared rule at the
    pre-image of p: the models are sheared about the stamp's true centre, as
    metacalibration shears the image (computed here by mapping points, not
    covariances, and with an elliptical neighbour off the axes)."""
    models = _pair_models(separation=6.0, neighbour=[300.0, 3.0, 1.5, 30.0])[0]
    matrix = nw.shear_matrix(g1, g2)
    w = nw.version_weight(models, matrix, (SIZE, SIZE))
    centre = (SIZE - 1) / 2.0
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    pre = np.linalg.inv(matrix) @ np.vstack([xx.ravel() - centre, yy.ravel() - centre])

    def log_light(row):  # the unsheared model at the pre-images
        d = pre - row[:2, None]
        inv = np.linalg.inv([[row[3], row[4]], [row[4], row[5]]])
        quadratic = inv[0, 0] * d[0] ** 2 + 2 * inv[0, 1] * d[0] * d[1] + inv[1, 1] * d[1] ** 2
        return row[2] - 0.5 * np.log(np.linalg.det(inv) ** -1) - 0.5 * quadratic

    expected = 1.0 / (1.0 + np.exp((log_light(models[1]) - log_light(models[0])) / nw.SOFTNESS))
    assert np.allclose(w.ravel(), expected, atol=1e-12)
    assert not np.allclose(w, nw.version_weight(models, np.eye(2), (SIZE, SIZE)), atol=1e-3)


def test_the_psf_part_of_a_model_is_not_sheared():
    """With the PSF's variance given, a point-like neighbour (a model no larger
    than the PSF) keeps its covariance under the version's shear, only its
    position moves; a galaxy-sized model is sheared (GalSim's shear of the
    deconvolved image, reconvolved)."""
    x, y = np.array([100.0, 106.0]), np.array([100.0, 101.0])
    psf_var = 4.0
    matrix = nw.shear_matrix(0.05, 0.0)
    centre = (SIZE - 1) / 2.0
    for neighbour, sheared in (([100.0, 2.0, 2.0, 0.0], False), ([100.0, 4.0, 3.0, 20.0], True)):
        models = nw.neighbour_models(
            x, y, np.array([ROUND, neighbour]), np.zeros((2, 2)), SIZE, psf_var
        )[0]
        moved = models.copy()  # the same models, positions sheared by hand, shapes kept
        moved[:2, :2] = (models[:2, :2] + SIZE // 2 - centre) @ matrix.T + centre - SIZE // 2
        by_hand = nw.version_weight(moved, np.eye(2), (SIZE, SIZE))
        difference = np.abs(nw.version_weight(models, matrix, (SIZE, SIZE)) - by_hand).max()
        assert (difference > 0.01) == sheared


def _context(table, stamps, shape="wmom"):
    shear = ShearConfig(
        neighbours="mask", neighbour_pixels="model", options={"metacal": {"shape": shape}}
    )
    context = Context(config=PipelineConfig(shear=shear), pm=get_plugin_manager(), table=table)
    context.stamps = stamps
    context.psf = PSF
    return context


@pytest.fixture(scope="module")
def blended():
    """A round galaxy with an equal neighbour 9 px away, and the same galaxy alone."""
    rng = np.random.default_rng(3)
    pair = gaussian_image((120, 120), [(60.0, 60.0), (69.0, 60.0)], 4000.0, 2.0, 1.0, rng)
    table = detect_with_sep(pair, None, DetectConfig(), segmentation=True)
    assert len(table) == 2
    stamps, _ = cut_stamps(pair, table["X_IMAGE"], table["Y_IMAGE"], SIZE)
    alone = gaussian_image((120, 120), [(60.0, 60.0)], 4000.0, 2.0, 1.0, np.random.default_rng(3))
    seg = table.meta.pop("segmentation")
    return {"table": table, "stamps": stamps, "alone": alone, "image": pair, "segmentation": seg}


def test_the_engine_gets_models_and_unfilled_stamps(blended):
    context = _context(blended["table"], blended["stamps"])
    engine = GalSimMetacal(context.config.shear)
    stamps, extras = engine_inputs(context, engine, blended["stamps"], np.ones(2))
    assert np.array_equal(stamps, blended["stamps"])  # nothing filled
    assert extras["neighbour_models"].shape == (2, 1 + nw.MAX_NEIGHBOURS, 7)
    assert extras["neighbour_models"][0, 0, 6] == pytest.approx(1.5**2, rel=0.05)  # the PSF's
    assert np.array_equal(extras["offsets"], stamp_offsets(context, SIZE))
    # each object's first neighbour is the other one, where the catalogue puts it
    t = blended["table"]
    dx = float(t["X_IMAGE"][1] - t["X_IMAGE"][0])
    assert extras["neighbour_models"][0, 1, 0] - extras["neighbour_models"][
        0, 0, 0
    ] == pytest.approx(dx)


def test_the_model_weight_takes_the_neighbours_light_out_of_the_shape(blended):
    """A round galaxy next to an equal neighbour: its wmom e1 is pulled towards
    the neighbour (positive, along x); down-weighting the neighbour brings it
    back near the isolated galaxy's (when written: 0.136 kept, 0.006 weighted,
    0.002 alone), and the five versions stay measured."""
    t, stamps = blended["table"], blended["stamps"]
    psf = PSF
    config = ShearConfig(step=0.01)
    engine = GalSimMetacal(config)
    offsets = stamp_offsets(_context(t, stamps), SIZE)
    models = nw.neighbour_models(t["X_IMAGE"], t["Y_IMAGE"], nw.catalogue_models(t), offsets, SIZE)
    kept = engine.measure(stamps, psf, SCALE, 0.0, np.random.default_rng(1), offsets=offsets)
    weighted = engine.measure(
        stamps, psf, SCALE, 0.0, np.random.default_rng(1), offsets=offsets, neighbour_models=models
    )
    row = int(np.argmin(t["X_IMAGE"]))
    alone_stamp, _ = cut_stamps(
        blended["alone"], t["X_IMAGE"][row : row + 1], t["Y_IMAGE"][row : row + 1], SIZE
    )
    alone = engine.measure(
        alone_stamp, psf, SCALE, 0.0, np.random.default_rng(1), offsets=offsets[row : row + 1]
    )
    e_kept = kept.table["G1_NOSHEAR"][row]
    e_weighted = weighted.table["G1_NOSHEAR"][row]
    e_alone = alone.table["G1_NOSHEAR"][0]
    assert abs(e_kept - e_alone) > 0.05
    assert abs(e_weighted - e_alone) < 0.2 * abs(e_kept - e_alone)
    assert (weighted.table["MCAL_FLAGS"] == 0).all()


def test_an_engine_that_takes_no_models_gets_filled_segments_and_says_so(blended):
    """``model`` with HSM's adaptive shape (its weight cannot be lowered): the
    neighbours' segments are filled instead, and the mode used is recorded."""
    t, stamps = blended["table"], blended["stamps"]
    context = _context(t, stamps, shape="admom")
    context.segmentation = blended["segmentation"]
    context.image, context.seed = blended["image"], 5
    admom = GalSimMetacal(context.config.shear)
    filled, extras = engine_inputs(context, admom, stamps, np.ones(2))
    assert "neighbour_models" not in extras and not np.array_equal(filled, stamps)
    assert context.results["neighbour_masking"] == "segment"
    wmom = _context(t, stamps)
    engine_inputs(wmom, GalSimMetacal(wmom.config.shear), stamps, np.ones(2))
    assert wmom.results["neighbour_masking"] == "model"


def test_a_catalogue_without_the_model_columns_gets_filled_segments(blended):
    """``model`` needs FLUX_AUTO, A, B, THETA; without them (a user's catalogue)
    the neighbours' segments are filled, and the JSON's record says so."""
    table = blended["table"].copy()
    table.remove_column("THETA_IMAGE")
    context = _context(table, blended["stamps"])
    context.segmentation = blended["segmentation"]
    context.image, context.seed = blended["image"], 5
    engine = GalSimMetacal(context.config.shear)
    filled, extras = engine_inputs(context, engine, blended["stamps"], np.ones(2))
    assert "neighbour_models" not in extras and not np.array_equal(filled, blended["stamps"])
    assert context.results["neighbour_masking"] == "segment"
    with pytest.raises(BlendflagError, match=r"model needs the column\(s\) THETA_IMAGE"):
        nw.catalogue_models(table)


def test_a_pool_of_the_whole_catalogue_gives_a_split_image_the_same_neighbours():
    """A sub-tile owns some rows; its neighbours come from the whole catalogue's
    pool (``light_models``), so its rows get the models the whole image gives."""
    rng = np.random.default_rng(5)
    x, y = rng.uniform(1, 120, 40), rng.uniform(1, 120, 40)
    models = np.column_stack(
        [
            rng.uniform(50, 500, 40),
            rng.uniform(1, 3, 40),
            rng.uniform(0.8, 1, 40),
            rng.uniform(-90, 90, 40),
        ]
    )
    models[:, 2] *= models[:, 1]  # B <= A
    offsets = rng.uniform(-0.5, 0.5, (40, 2))
    whole = nw.neighbour_models(x, y, models, offsets, SIZE, 4.0)
    owned = np.flatnonzero(x < 60)
    pool = np.column_stack([x, y, models])
    split = nw.neighbour_models(x[owned], y[owned], models[owned], offsets[owned], SIZE, 4.0, pool)
    assert np.array_equal(split, whole[owned])
    alone = nw.neighbour_models(x[owned], y[owned], models[owned], offsets[owned], SIZE, 4.0)
    assert not np.array_equal(alone, whole[owned])  # without the pool, neighbours go missing


def test_a_model_with_nan_columns_neither_masks_nor_poisons_its_neighbours():
    """A catalogue row with NaN FLUX_AUTO or A_IMAGE: it masks nothing, and an
    object whose own model is NaN keeps its whole weight; weights stay finite."""
    x, y = np.array([100.0, 108.0, 92.0]), np.array([100.0, 100.0, 100.0])
    models = np.array([ROUND, ROUND, [np.nan, 2.0, 2.0, 0.0]])
    rows = nw.neighbour_models(x, y, models, np.zeros((3, 2)), SIZE, 4.0)
    w = nw.version_weights(rows[0], 0.01, (SIZE, SIZE))
    c = SIZE // 2
    assert np.isfinite(w).all() and w[0, c, c - 8] == pytest.approx(1.0)  # the NaN one
    assert w[0, c, c + 8] < 1e-3  # the good neighbour still masks
    assert np.array_equal(nw.version_weights(rows[2], 0.01, (SIZE, SIZE)), np.ones((5, SIZE, SIZE)))
