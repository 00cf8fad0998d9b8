"""PSF models (constant image, PSFEx, simulated varying PSF) and per-object PSFs in engines."""

from __future__ import annotations

import numpy as np
import pytest

from blendflag.errors import BlendflagError
from blendflag.psf.model import ImagePSF, load_psf
from blendflag.psf.psfex_chain import find_binary, run_chain
from blendflag.simulate.field import simulate_field
from blendflag.simulate.field_io import write_field
from blendflag.simulate.presets import load_dataset
from blendflag.simulate.psf_variation import PSFVariation, VaryingPSF

HAS_CHAIN = find_binary("source-extractor", "sex") is not None and find_binary("psfex") is not None
needs_chain = pytest.mark.skipif(
    not HAS_CHAIN, reason="source-extractor and psfex (Debian packages) not on PATH"
)


def moments(image):
    """Adaptive sigma (pixels), g1, g2 of a PSF image."""
    import galsim

    res = galsim.hsm.FindAdaptiveMom(galsim.ImageD(np.asarray(image, dtype=np.float64)))
    return res.moments_sigma, res.observed_shape.g1, res.observed_shape.g2


@pytest.fixture(scope="module")
def psfex_field(tmp_path_factory):
    """A 700x700 field with a varying PSF, 60 galaxies and 80 stars, through SExtractor + PSFEx."""
    out = tmp_path_factory.mktemp("chain") / "tile"
    field = simulate_field(
        "cfis", 60, shear=(0.02, 0.0), seed=5, noise=5.0, size=700, varying_psf=True, n_stars=80
    )
    write_field(field, out)
    chain = run_chain(out / "image.fits", out, weight=out / "weight.fits") if HAS_CHAIN else None
    return {"dir": out, "field": field, "chain": chain}


def test_image_psf_is_the_same_everywhere_and_resizes():
    img = np.zeros((11, 11))
    img[4:7, 4:7] = 1.0
    model = ImagePSF(img)
    a, b = model.image_at(1, 1), model.image_at(500, 300)
    assert not model.varies
    np.testing.assert_array_equal(a, b)
    assert a.sum() == pytest.approx(1.0)
    big = model.image_at(1, 1, size=21)
    assert big.shape == (21, 21) and big[10, 10] == a[5, 5]
    small = model.image_at(1, 1, size=5)
    assert small.shape == (5, 5) and small.sum() == pytest.approx(1.0)


def test_varying_psf_cards_round_trip_and_gradients():
    vp = VaryingPSF(load_dataset("cfis").psf, PSFVariation(), 1000, 800)
    back = VaryingPSF.from_header({k: v for k, v, _ in vp.cards()})
    assert back == vp
    assert vp.fwhm_at(1000.5, 400.5) == pytest.approx(0.65 * 1.1)
    assert vp.shear_at(500.5, 800.5)[1] == pytest.approx(0.03)
    model = vp.psf_model(0.187)
    left, right = moments(model.image_at(50, 400)), moments(model.image_at(950, 400))
    assert right[0] > 1.1 * left[0]  # larger to the right
    assert left[1] < -0.02 < 0.02 < right[1]  # g1 from negative to positive


def test_field_defaults_unchanged_and_stars_flagged():
    plain = simulate_field("cfis", 20, shear=(0.02, 0), seed=3, noise=5.0, size=300)
    stars = simulate_field("cfis", 20, shear=(0.02, 0), seed=3, noise=5.0, size=300, n_stars=7)
    assert "STAR" not in plain.truth.colnames and "PSF_FWHM" not in plain.truth.colnames
    assert plain.varying_psf is None
    assert len(stars.truth) == 27 and int(stars.truth["STAR"].sum()) == 7
    star = stars.truth[stars.truth["STAR"]]
    assert np.all(star["PAIR_ID"] == -1) and np.all(star["HLR"] == 0)
    # the galaxies' rows are those of the plain field
    for name in ("X", "Y", "FLUX", "E1_INTRINSIC"):
        np.testing.assert_array_equal(stars.truth[name][:20], plain.truth[name])
    # stars add light only where they are
    diff = stars.image - plain.image
    x, y = round(float(star["X"][0])) - 1, round(float(star["Y"][0])) - 1
    assert diff[y, x] > 100 and np.count_nonzero(diff) < diff.size


def test_varying_field_records_the_psf_in_truth():
    field = simulate_field("cfis", 10, seed=1, noise=5.0, size=400, varying_psf=True)
    truth = field.truth
    expect = field.varying_psf.fwhm_at(np.asarray(truth["X"]), np.asarray(truth["Y"]))
    np.testing.assert_allclose(truth["PSF_FWHM"], expect)
    centre = field.varying_psf.psf_model(field.pixel_scale).image_at(200.5, 200.5)
    np.testing.assert_allclose(field.psf, centre, atol=1e-7)


@needs_chain
def test_psfex_model_at_two_positions_matches_what_was_drawn(psfex_field):
    model, header = load_psf(psfex_field["chain"]["psf"])
    assert header is None and model.varies
    truth = psfex_field["field"].varying_psf.psf_model(0.187)
    (x1, y1), (x2, y2) = (120.0, 120.0), (580.0, 580.0)
    a, b = model.image_at(x1, y1, 41), model.image_at(x2, y2, 41)
    assert a.shape == (41, 41) and a.sum() == pytest.approx(1.0)
    ma, mb = moments(a), moments(b)
    assert mb[0] > 1.1 * ma[0]  # two different PSFs
    for m, (x, y) in ((ma, (x1, y1)), (mb, (x2, y2))):
        t = moments(truth.image_at(x, y, 41))
        assert m[0] == pytest.approx(t[0], rel=0.02)
        assert m[1] == pytest.approx(t[1], abs=0.006)
        assert m[2] == pytest.approx(t[2], abs=0.006)


@needs_chain
def test_file_input_reads_a_psfex_model(psfex_field):
    from blendflag.pipeline.field_input import file_input

    d = psfex_field["dir"]
    data = file_input(
        d / "image.fits", psfex_field["chain"]["psf"], psfex_field["chain"]["catalogue"]
    )
    assert data.psf_model is not None and data.psf_model.varies
    side = data.psf_model.size
    assert side % 2 == 1 and data.psf.shape == (side, side)
    assert data.psf.sum() == pytest.approx(1.0)
    plain = file_input(d / "image.fits", d / "psf.fits")
    assert plain.psf_model is None  # a PSF image keeps the one-PSF path


@pytest.mark.slow
@needs_chain
def test_split_image_reads_the_psfex_model_at_whole_image_positions(psfex_field, tmp_path):
    """Sub-tiles evaluate the PSFEx model where their objects are on the whole image."""
    from blendflag.config import PipelineConfig
    from blendflag.flagging.flaggers import make_flaggers
    from blendflag.pipeline.compare import run_compare
    from blendflag.pipeline.field_input import file_input
    from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine
    from blendflag.psf.model import ShiftedPSF
    from blendflag.tiling.split_image import SplitImage, run_split_compare

    d, chain = psfex_field["dir"], psfex_field["chain"]
    model = load_psf(chain["psf"])[0]
    shifted = ShiftedPSF(model, 350, 120)
    np.testing.assert_array_equal(
        shifted.image_at(10.5, 20.0, 25), model.image_at(360.5, 140.0, 25)
    )

    pm, config = get_plugin_manager(), PipelineConfig()
    engine = select_engine(get_shear_engines(pm), "metacal")
    files = (d / "image.fits", chain["psf"], chain["catalogue"], d / "weight.fits")
    whole = run_compare(
        pm, config, file_input(*files[:3], files[3], true_shear=(0.02, 0.0)),
        make_flaggers(pm, ["sextractor"], config), engine, seed=3, n_bootstrap=20,
        flag_original=False,
    )  # fmt: skip
    image = SplitImage(*map(str, files), core=350, true_shear=(0.02, 0.0))
    split = run_split_compare(
        pm, config, ["sextractor"], engine, image, work_dir=tmp_path / "work", seed=3,
        n_bootstrap=20, on_message=None,
    ).document()  # fmt: skip
    assert split["sub_tiles"]["n"] == 4 and split["input"]["psf_model"].startswith("PSFEx")
    for a, b in zip(whole.json["selections"], split["selections"], strict=True):
        assert a["name"] == b["name"] and a["n"] == b["n"]
        np.testing.assert_allclose(b["g1"], a["g1"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b["R11"], a["R11"], rtol=1e-9)


def test_metacal_per_object_psfs_equal_one_psf_when_all_the_same():
    from blendflag.config import ShearConfig
    from blendflag_plugins.metacal_galsim import GalSimMetacal

    field = simulate_field("cfis", 2, seed=0, size=64)
    rng = np.random.default_rng(2)
    stamps = rng.normal(0.0, 5.0, (3, 41, 41))
    stamps[:, 18:23, 18:23] += 200.0
    engine = GalSimMetacal(ShearConfig(options={"metacal": {"varying_psf": "per_object"}}))
    one = engine.measure(stamps, field.psf, 0.187, 5.0, np.random.default_rng(0))
    cube = np.repeat(field.psf[None], 3, axis=0)
    many = engine.measure(stamps, cube, 0.187, 5.0, np.random.default_rng(0))
    for col in one.table.colnames:
        np.testing.assert_array_equal(one.table[col], many.table[col])
    with pytest.raises(BlendflagError, match="cube"):
        engine.measure(stamps, cube[:2], 0.187, 5.0, np.random.default_rng(0))


def test_object_psfs_follow_the_model():
    from types import SimpleNamespace

    from astropy.table import Table

    from blendflag.shear.inputs import context_psf_model, object_psfs

    vp = VaryingPSF(load_dataset("cfis").psf, PSFVariation(), 600, 600)
    table = Table({"X_IMAGE": [50.0, 550.0], "Y_IMAGE": [300.0, 300.0]})
    psf0 = np.zeros((25, 25))
    psf0[12, 12] = 1
    ctx = SimpleNamespace(psf_model=vp.psf_model(0.187), table=table, psf=psf0, pixel_scale=0.187)
    cube = object_psfs(ctx)
    assert cube.shape == (2, 25, 25)
    assert moments(cube[1])[0] > 1.1 * moments(cube[0])[0]
    assert context_psf_model(ctx) is ctx.psf_model
    ctx.psf_model = None
    assert object_psfs(ctx) is None
    np.testing.assert_array_equal(context_psf_model(ctx).image_at(10, 10), psf0)
