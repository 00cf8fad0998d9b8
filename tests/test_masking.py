"""Neighbour masking (``shear.neighbours: mask``): segmentation, masks, noise fill, plumbing."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from blendflag.config import DetectConfig, PipelineConfig, ShearConfig, load_pipeline_config
from blendflag.errors import BlendflagError, ConfigError
from blendflag.flagging.detectors import pop_segmentation
from blendflag.io.catalog import read_catalogue, write_ldac
from blendflag.io.stamps import cut_stamps
from blendflag.pipeline.stages import Context, stage_cutout, stage_detect, table_from_catalogue
from blendflag.plugins import get_plugin_manager
from blendflag.shear.engine import StampShearEngine
from blendflag.shear.masking import (
    context_segment_ids,
    fill_neighbours,
    masked_stamps_for,
    neighbour_masks,
)
from blendflag.shear.results import MetacalResult, empty_result_table
from blendflag_plugins.sep_detect import detect_with_sep
from blendflag_plugins.sextractor_run import find_binary
from tests.conftest import gaussian_image, run_cli

NOISE = 1.0  # ADU
SIZE = 51  # stamp side, pixels
# 0-based centres: A and its neighbour B 14 px apart (B inside A's stamp), C alone
A, B, C = (60.0, 60.0), (74.0, 62.0), (150.0, 140.0)


@pytest.fixture(scope="module")
def scene():
    """Three Gaussian blobs on white noise, detected by the sep plugin with its segmentation."""
    rng = np.random.default_rng(7)
    image = gaussian_image((200, 210), [A, B, C], flux=4000.0, sigma_px=2.0, noise=NOISE, rng=rng)
    table = detect_with_sep(image, None, DetectConfig(), segmentation=True)
    seg = table.meta["segmentation"]
    x = np.asarray(table["X_IMAGE"])
    y = np.asarray(table["Y_IMAGE"])
    rows = [int(np.argmin((x - 1 - px) ** 2 + (y - 1 - py) ** 2)) for px, py in (A, B, C)]
    return {"image": image, "table": table, "seg": seg, "x": x, "y": y, "rows": rows}


def _masks_and_stamps(scene):
    stamps, _ = cut_stamps(scene["image"], scene["x"], scene["y"], SIZE)
    masks = neighbour_masks(scene["seg"], scene["x"], scene["y"], scene["table"]["NUMBER"], SIZE)
    return stamps, masks


def test_the_sep_detector_returns_its_segmentation(scene):
    seg, table = scene["seg"], scene["table"]
    assert len(table) == 3 and seg.dtype == np.int32 and seg.shape == scene["image"].shape
    # segment k + 1 is the k-th object: its NUMBER, and it lies under its centre
    for row in table:
        ix, iy = round(row["X_IMAGE"] - 1), round(row["Y_IMAGE"] - 1)
        assert seg[iy, ix] == row["NUMBER"]
        assert (seg == row["NUMBER"]).sum() == row["ISOAREA_IMAGE"]


@pytest.mark.skipif(find_binary() is None, reason="no SExtractor binary on PATH")
def test_the_sextractor_binary_returns_its_segmentation(scene):
    pm = get_plugin_manager()
    config = DetectConfig(backend="sextractor")
    table = pm.hook.blendflag_detect(image=scene["image"], weight=None, config=config)
    seg = pop_segmentation(table, scene["image"].shape)
    assert len(table) == 3 and "segmentation" not in table.meta
    for row in table:
        assert seg[round(row["Y_IMAGE"] - 1), round(row["X_IMAGE"] - 1)] == row["NUMBER"]


def test_masking_removes_a_neighbours_flux(scene):
    stamps, masks = _masks_and_stamps(scene)
    a, b, _ = scene["rows"]
    filled = fill_neighbours(stamps, masks, NOISE, np.arange(len(stamps)), seed=3)
    # B's footprint in A's stamp: the pixels of B's segment cut with A's stamp geometry
    seg_cut, _ = cut_stamps(scene["seg"].astype(np.float32), scene["x"], scene["y"], SIZE)
    on_b = np.rint(seg_cut[a]) == scene["table"]["NUMBER"][b]
    npix = int(on_b.sum())
    assert npix >= 10 and np.array_equal(on_b, masks[a] & on_b)
    limit = 5 * NOISE * np.sqrt(npix)
    assert stamps[a][on_b].sum() > 20 * limit  # B's flux was there
    assert abs(filled[a][on_b].sum()) < limit  # pure noise now
    assert np.std(filled[a][on_b]) == pytest.approx(NOISE, rel=0.5)
    # A's own pixels (and the sky) are untouched, bit for bit
    own = ~masks[a]
    assert own.sum() > 0.9 * SIZE * SIZE
    assert np.array_equal(filled[a][own], stamps[a][own])


def test_an_isolated_stamp_is_unchanged_bit_for_bit(scene):
    stamps, masks = _masks_and_stamps(scene)
    c = scene["rows"][2]
    assert not masks[c].any()
    filled = fill_neighbours(stamps, masks, NOISE, np.arange(len(stamps)), seed=3)
    assert filled.dtype == np.float32 and np.array_equal(filled[c], stamps[c])
    before = stamps.copy()
    fill_neighbours(stamps, masks, NOISE, np.arange(len(stamps)), seed=3)
    assert np.array_equal(stamps, before)  # the input is never modified


def test_the_same_key_gives_the_same_fill_and_another_key_another(scene):
    stamps, masks = _masks_and_stamps(scene)
    a = scene["rows"][0]
    one, two = stamps[a : a + 1], masks[a : a + 1]
    first = fill_neighbours(one, two, NOISE, [17], seed=5)
    again = fill_neighbours(one * 0, two, NOISE, [17], seed=5)  # other pixels, same galaxy
    other_key = fill_neighbours(one, two, NOISE, [18], seed=5)
    other_seed = fill_neighbours(one, two, NOISE, [17], seed=6)
    assert np.array_equal(first[two], again[two])
    assert not np.allclose(first[two], other_key[two])
    assert not np.allclose(first[two], other_seed[two])
    # the noise at a stamp pixel does not depend on the rest of the mask (+g / -g members)
    half = two.copy()
    half[0, :, : SIZE // 2 + 8] = False
    assert half.any() and np.array_equal(
        fill_neighbours(one, half, NOISE, [17], seed=5)[half], first[half]
    )


def test_fill_checks_its_input(scene):
    stamps, masks = _masks_and_stamps(scene)
    keys = np.arange(len(stamps))
    with pytest.raises(BlendflagError, match="same"):
        fill_neighbours(stamps, masks[:, :-1], NOISE, keys, seed=0)
    with pytest.raises(BlendflagError, match="non-negative"):
        fill_neighbours(stamps, masks, NOISE, keys - 1, seed=0)
    with pytest.raises(BlendflagError, match="integers"):
        fill_neighbours(stamps, masks, NOISE, keys[:-1], seed=0)


def test_pixels_outside_the_image_are_not_neighbours():
    seg = np.ones((20, 20), dtype=np.int32)
    seg[10:, :] = 2
    masks = neighbour_masks(seg, [1.0], [1.0], [1], 11)  # a corner: most of the stamp is outside
    assert masks.shape == (1, 11, 11)
    assert masks[0, :5, :].sum() == 0 and masks[0, :, :5].sum() == 0  # outside
    assert masks[0, 5:, 5:].sum() == 0  # all of it segment 1, the object's own


def _context(scene, **shear):
    config = PipelineConfig(shear=ShearConfig(**shear))
    context = Context(config=config, pm=get_plugin_manager(), image=scene["image"], seed=11)
    context.psf = np.ones((5, 5))
    context.noise_sigma = NOISE
    context.results["needs_stamps"] = True
    return context


def test_the_detect_stage_keeps_the_segmentation_out_of_the_table(scene):
    context = _context(scene)
    stage_detect(context)
    assert "segmentation" not in context.table.meta
    assert np.array_equal(context.segmentation, scene["seg"])


def test_masked_stamps_for_a_context_crops_like_the_engine(scene):
    context = _context(scene, stamp_size=31)
    stage_detect(context)
    stage_cutout(context)
    lo = (SIZE - 31) // 2
    cropped = context.stamps[:, lo : lo + 31, lo : lo + 31]
    keys = np.arange(len(cropped))
    out = masked_stamps_for(context, cropped, np.full(len(cropped), NOISE), keys)
    stamps, masks = _masks_and_stamps(scene)
    expected = fill_neighbours(
        stamps[:, lo : lo + 31, lo : lo + 31], masks[:, lo : lo + 31, lo : lo + 31], NOISE, keys, 11
    )
    assert np.array_equal(out, expected)
    a, _, c = scene["rows"]
    assert context.results["neighbour_pixels"][a] > 0 == context.results["neighbour_pixels"][c]


def test_a_catalogue_gets_its_segmentation_from_the_detector(scene, tmp_path):
    table = scene["table"].copy()
    table.meta.clear()
    write_ldac(table, tmp_path / "cat.fits")
    catalogue = read_catalogue(tmp_path / "cat.fits")
    context = _context(scene)
    context.catalogue = catalogue
    context.table = table_from_catalogue(catalogue)
    seg, ids = context_segment_ids(context)
    assert np.array_equal(seg, scene["seg"]) and np.array_equal(ids, table["NUMBER"])
    assert context.segmentation is seg  # made once


def test_masking_without_a_segmentation_is_a_one_line_error(scene):
    context = _context(scene)
    context.table = scene["table"]  # detections from elsewhere, no map, no catalogue file
    with pytest.raises(BlendflagError) as info:
        context_segment_ids(context)
    assert "shear.neighbours: mask needs a segmentation map" in str(info.value)
    assert "\n" not in str(info.value)


SEEN = []  # the stamps RecordingEngine was given


class RecordingEngine(StampShearEngine):
    """A stamp engine that notes the stamps it is given."""

    name = "recording"

    def measure(self, stamps, psf, pixel_scale, noise_sigma, rng, **kwargs):
        SEEN.append(np.array(stamps))
        return MetacalResult(table=empty_result_table(len(stamps)), engine=self.name)


@pytest.mark.parametrize("neighbours", ["keep", "mask"])
def test_the_stamp_engine_measures_masked_stamps(scene, neighbours):
    context = _context(scene, neighbours=neighbours)
    stage_detect(context)
    stage_cutout(context)
    SEEN.clear()
    RecordingEngine(context.config.shear).measure_context(context)
    seen = np.concatenate(SEEN)
    stamps, masks = _masks_and_stamps(scene)
    a, _, c = scene["rows"]
    assert np.array_equal(seen[c], stamps[c])
    if neighbours == "keep":
        assert np.array_equal(seen, stamps)
    else:
        assert not np.array_equal(seen[a][masks[a]], stamps[a][masks[a]])
        assert np.array_equal(seen[a][~masks[a]], stamps[a][~masks[a]])


def test_a_bad_neighbours_value_is_a_one_line_config_error(tmp_path, capsys, small_field):
    bad = tmp_path / "bad.yaml"
    bad.write_text("shear:\n  neighbours: drop\n")
    with pytest.raises(ConfigError, match=r"shear\.neighbours: must be keep or mask, got 'drop'"):
        load_pipeline_config(bad)
    assert load_pipeline_config(None).shear.neighbours == "keep"
    args = ["detect", small_field["image"], "--config", bad, "--out", tmp_path / "c.fits"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.startswith("error: ") and "shear.neighbours" in err
    assert len(err.strip().splitlines()) == 1


def test_the_detect_command_still_writes_its_catalogue(detected):
    with fits.open(detected["catalogue"]) as hdul:
        for hdu in hdul:
            assert not any("segmentation" in str(key).lower() for key in hdu.header)
        assert len(hdul["LDAC_OBJECTS"].data) >= 14


def _touching_pair_segmentation(split: int) -> np.ndarray:
    """Two touching sources on a 41 x 41 map: 1 left of column ``split``, 2 from it on."""
    seg = np.zeros((41, 41), dtype=np.int32)
    seg[14:27, 12:split] = 1
    seg[14:27, split:34] = 2
    seg[2:5, 2:5] = 3  # a source that is not in the catalogue
    return seg


def test_dominant_pixels_split_touching_sources_where_their_models_are_equal():
    """``neighbour_pixels: dominant``: of the neighbour's segment only the pixels
    where its model (FLUX_AUTO, A, B, THETA) outshines the object's are masked.
    Two equal round sources at columns 16 and 24 are equally bright on column
    20, so whatever column deblending split them at (19 or 18 here), the
    object's mask starts at column 21; a whole-segment mask follows the split.
    A segment of no listed source stays whole."""
    x, y = np.array([17.0, 25.0]), np.array([21.0, 21.0])  # 1-based: columns 16, 24
    models = np.array([[1000.0, 2.0, 2.0, 0.0], [1000.0, 2.0, 2.0, 0.0]])
    dominant, whole = [], []
    for split in (19, 18):
        seg = _touching_pair_segmentation(split)
        dominant.append(neighbour_masks(seg, x, y, [1, 2], 41, models)[0])
        whole.append(neighbour_masks(seg, x, y, [1, 2], 41)[0])

    def first_column(mask):  # image column: the object's column 16 is the stamp's 20
        columns = np.flatnonzero(mask.any(axis=0)) - 4
        return columns[columns > 10].min(), columns[columns <= 10]

    assert first_column(dominant[0])[0] == 21
    assert list(first_column(dominant[0])[1]) == [2, 3, 4]  # the unlisted source, whole
    assert np.array_equal(dominant[0], dominant[1])  # the split moved, the mask did not
    assert [first_column(m)[0] for m in whole] == [19, 18]
    # a brighter neighbour moves the boundary towards the object
    brighter = neighbour_masks(seg, x, y, [1, 2], 41, models * [[1, 1, 1, 1], [4, 1, 1, 1]])
    assert first_column(brighter[0])[0] < 21


def test_dominant_masking_needs_the_model_columns(scene):
    """A catalogue without A_IMAGE etc. gets a one-line error naming them."""
    config = PipelineConfig(shear=ShearConfig(neighbours="mask", neighbour_pixels="dominant"))
    table = scene["table"].copy()
    table.remove_column("A_IMAGE")
    stamps, _ = cut_stamps(scene["image"], scene["x"], scene["y"], SIZE)
    context = Context(config=config, pm=get_plugin_manager(), image=scene["image"], table=table)
    context.stamps = stamps
    context.segmentation = scene["seg"]
    with pytest.raises(BlendflagError, match=r"needs the column\(s\) A_IMAGE"):
        masked_stamps_for(context, stamps, NOISE, np.arange(len(table)))
