"""GalSim simulations: stamps, the blend criterion, presets, fields with a known shear."""

from __future__ import annotations

import dataclasses

import galsim
import numpy as np
import pytest

from blendflag.errors import BlendflagError, ConfigError
from blendflag.simulate.field import simulate_field
from blendflag.simulate.field_io import write_field
from blendflag.simulate.presets import DatasetConfig, dataset_preset_names, load_dataset
from blendflag.simulate.stamp_maker import render_components
from blendflag.simulate.stamps import bench_simulation, kind_counts, simulate_stamps

TRUTH_COLUMNS = ("LABEL", "KIND", "N_SOURCES", "SEPARATION", "FLUX1", "FLUX2", "SNR", "NOISE_SIGMA")


@pytest.fixture(scope="module")
def grid_set():
    """2000 CFIS-like stamps with the noise grid (drawn once for the module)."""
    return simulate_stamps("cfis", 2000, seed=11, noise="grid", workers=1)


# ---------------------------------------------------------------------------
# Presets and configs
# ---------------------------------------------------------------------------


STUDY_PRESETS = ["great3_study", "euclid_study", "cfis_study"]
SURVEY_PRESETS = ["cfis_survey", "euclid_survey", "lsst_y10", "des_y5"]


@pytest.mark.parametrize("name", STUDY_PRESETS + SURVEY_PRESETS)
def test_presets_load(name):
    config = load_dataset(name)
    assert isinstance(config, DatasetConfig)
    assert config.name == name
    assert config.stamp_size == 51
    assert config.default_noise > 0 and len(config.noise_grid) >= (2 if "study" in name else 1)
    assert name in dataset_preset_names()
    assert (config.galaxy.population == "counts") == (name in SURVEY_PRESETS)


@pytest.mark.parametrize("name", SURVEY_PRESETS)
def test_survey_presets_take_their_noise_from_surveycodex(name):
    """The preset's noise is the surveycodex sky's (to the 0.01 ADU it is written with)."""
    from blendflag.simulate.survey_photometry import pixel_noise_sigma

    config = load_dataset(name)
    assert config.default_noise == pytest.approx(pixel_noise_sigma(config.galaxy.counts), abs=0.01)


def test_preset_pixel_scales():
    assert load_dataset("cfis").pixel_scale == pytest.approx(0.187)
    assert load_dataset("euclid").pixel_scale == pytest.approx(0.1)
    assert load_dataset("great3").pixel_scale == pytest.approx(0.2)


def test_user_yaml_works(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "pixel_scale: 0.25\nstamp_size: 33\ndefault_noise: 10\n"
        "psf: {type: gaussian, fwhm: 0.8}\ngalaxy: {hlr: [0.4, 0.6]}\n"
    )
    stamps, truth = simulate_stamps(str(path), 8, seed=1)
    assert stamps.shape == (8, 33, 33)
    assert truth.meta["DATASET"] == "mine"
    assert (truth["NOISE_SIGMA"] == 10).all()


@pytest.mark.parametrize(
    "text, match",
    [
        ("pixel_scale: -1\n", "pixel_scale"),
        ("psf: {type: lorentzian}\n", "psf.type"),
        ("galaxy: {hlr: [0.5, 0.1]}\n", "galaxy.hlr"),
        ("galaxy: {flux: big}\n", "galaxy.flux"),
        ("stamp_size: 50\n", "stamp_size"),
        ("noise_grid: []\n", "noise_grid"),
        ("pixelscale: 0.2\n", "unknown key pixelscale"),
        ("field: {density: 0}\n", "field.density"),
        ("- a list\n", "must hold a mapping"),
    ],
)
def test_invalid_yaml_is_a_config_error(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as exc:
        load_dataset(path)
    assert "\n" not in str(exc.value)


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'hst'"):
        load_dataset("hst")
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_dataset("train_vgg16")  # a packaged YAML that is not a dataset
    with pytest.raises(ConfigError, match="unknown dataset 'pipeline'"):
        load_dataset("pipeline")  # packaged, but the pipeline's defaults


def test_presets_are_the_yaml_files_with_dataset_keys(tmp_path, monkeypatch):
    """Discovery names no file: a packaged YAML is a preset by its keys alone."""
    import blendflag.simulate.presets as presets

    (tmp_path / "tiny.yaml").write_text("pixel_scale: 0.2\nstamp_size: 31\n")
    (tmp_path / "pipeline.yaml").write_text("detect:\n  thresh: 2.0\n")
    (tmp_path / "train_net.yaml").write_text("method: net\npixel_scale: 0.2\n")
    (tmp_path / "broken.yaml").write_text("pixel_scale: [\n")
    monkeypatch.setattr(presets, "configs_dir", lambda: tmp_path)
    assert presets.dataset_preset_names() == ["tiny"]
    assert presets.load_dataset("tiny").name == "tiny"
    with pytest.raises(ConfigError, match=r"unknown dataset 'train_net' \(choose from tiny,"):
        presets.load_dataset("train_net")


# ---------------------------------------------------------------------------
# Stamps
# ---------------------------------------------------------------------------


def test_same_seed_same_stamps_different_seed_differs():
    a, ta = simulate_stamps("cfis", 24, seed=5, noise="grid")
    b, tb = simulate_stamps("cfis", 24, seed=5, noise="grid")
    c, _ = simulate_stamps("cfis", 24, seed=6, noise="grid")
    assert a.dtype == np.float32 and a.shape == (24, 51, 51)
    assert a.tobytes() == b.tobytes()
    for name in ta.colnames:
        np.testing.assert_array_equal(ta[name], tb[name])
    assert not np.array_equal(a, c)


def test_result_does_not_depend_on_workers():
    a, ta = simulate_stamps("cfis", 300, seed=9, noise="grid", workers=1)
    b, tb = simulate_stamps("cfis", 300, seed=9, noise="grid", workers=2)
    assert a.tobytes() == b.tobytes()
    np.testing.assert_array_equal(ta["SEPARATION"], tb["SEPARATION"])


def test_truth_columns_and_labels_balanced(grid_set):
    stamps, truth = grid_set
    assert stamps.shape == (2000, 51, 51)
    for name in TRUTH_COLUMNS:
        assert name in truth.colnames
    assert truth["LABEL"].dtype == np.int16
    assert truth["SEPARATION"].dtype == np.float32
    kinds = np.asarray(truth["KIND"])
    assert (kinds == "blend").sum() == 1000
    assert (kinds == "single").sum() == 500
    assert (kinds == "separated").sum() == 500
    np.testing.assert_array_equal(truth["LABEL"], (kinds == "blend").astype(np.int16))
    np.testing.assert_array_equal(truth["N_SOURCES"], np.where(kinds == "single", 1, 2))
    single = kinds == "single"
    assert (truth["SEPARATION"][single] == 0).all() and (truth["FLUX2"][single] == 0).all()
    assert (truth["SEPARATION"][~single] > 0).all() and (truth["FLUX2"][~single] > 0).all()
    # shuffled, not in blocks
    assert 0.3 < (kinds[:200] == "blend").mean() < 0.7
    # noise grid drawn per stamp, and the noise in the stamps is what the truth says
    assert set(np.unique(truth["NOISE_SIGMA"])) == {5, 14, 18, 26, 35, 40}
    corners = stamps[single][:, :6, :6].reshape(single.sum(), -1)
    ratio = corners.std(axis=1) / truth["NOISE_SIGMA"][single]
    assert 0.9 < np.median(ratio) < 1.1
    # central source near the centre (pixel 26, 1-based)
    assert (np.abs(truth["X1"] - 26) <= 0.5).all() and (np.abs(truth["Y1"] - 26) <= 0.5).all()
    sep = np.hypot(truth["X2"] - truth["X1"], truth["Y2"] - truth["Y1"])
    np.testing.assert_allclose(truth["SEPARATION"][~single], sep[~single], rtol=1e-5)


def test_blend_criterion_holds_for_every_pair(grid_set):
    """Blends share >= 1 pixel above 1 sigma; separated pairs none (redrawn independently)."""
    _, truth = grid_set
    k = truth.meta["ISOSIG"]
    overlap = np.asarray(truth["OVERLAP_PIX"])
    label = np.asarray(truth["LABEL"])
    pairs = np.nonzero(np.asarray(truth["N_SOURCES"]) == 2)[0]
    assert (overlap[label == 1] >= 1).all()
    assert (overlap[pairs][label[pairs] == 0] == 0).all()
    config = load_dataset("cfis")
    for i in pairs[::3]:  # a third of the pairs, redrawn from the truth parameters
        row = truth[i]
        central, companion = render_components(config, row)
        sigma = row["ISOPHOTE"]
        assert sigma == k * config.default_noise  # the label does not depend on the noise
        assert (central > sigma).any() and (companion > sigma).any()
        shared = int(((central > sigma) & (companion > sigma)).sum())
        assert (shared > 0) == bool(row["LABEL"]), (i, shared, row["KIND"])
        assert abs(shared - row["OVERLAP_PIX"]) <= 1


def test_close_blends_and_honest_separated_pairs(grid_set):
    _, truth = grid_set
    kinds = np.asarray(truth["KIND"])
    sep = np.asarray(truth["SEPARATION"])
    blends, separated = sep[kinds == "blend"], sep[kinds == "separated"]
    assert blends.min() < 1.5
    assert (blends < 2.5).sum() > 15  # close blends occur (uniform in area)
    assert 0.04 < (blends < 4).mean() < 0.25
    # near misses: many separated pairs within 1.5-3x the typical blend distance
    typical = np.median(blends)
    near = (separated > 1.5 * typical) & (separated < 3 * typical)
    assert near.mean() > 0.3
    assert (separated < 1.5 * typical).sum() > 10
    # S/N spans the advertised range
    snr = np.asarray(truth["SNR"])
    assert np.percentile(snr, 5) < 12 and np.percentile(snr, 95) > 150
    low = np.asarray(truth["NOISE_SIGMA"]) == 14
    assert 25 < np.median(snr[low]) < 60


def test_noise_options():
    _, t = simulate_stamps("euclid", 6, seed=2)
    assert (t["NOISE_SIGMA"] == load_dataset("euclid").default_noise).all()
    _, t = simulate_stamps("great3", 6, seed=2, noise=7.5)
    assert (t["NOISE_SIGMA"] == 7.5).all()
    _, t = simulate_stamps("great3", 60, seed=2, noise=[2.0, 9.0])
    assert set(np.asarray(t["NOISE_SIGMA"]).tolist()) == {2.0, 9.0}  # each stamp draws one
    for bad in (-1, 0, "loud", float("nan"), [], [3.0, -1.0]):
        with pytest.raises(BlendflagError, match="noise"):
            simulate_stamps("cfis", 4, seed=1, noise=bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n must be"),
        ({"n": -5}, "n must be"),
        ({"n": 2.5}, "n must be"),
        ({"fractions": (0.5, 0.5, 0.5)}, "sum to 1"),
        ({"fractions": (1.0, 0.0)}, "three"),
        ({"workers": 0}, "workers"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_stamp_arguments(kwargs, match):
    args = {"n": 4, "seed": 1, **kwargs}
    with pytest.raises(BlendflagError, match=match):
        simulate_stamps("cfis", **args)


def test_kind_counts_round_remainder_to_blends():
    assert kind_counts(10) == {"blend": 4, "single": 3, "separated": 3} or kind_counts(10) == {
        "blend": 6,
        "single": 2,
        "separated": 2,
    }
    assert sum(kind_counts(7).values()) == 7
    assert kind_counts(2000) == {"blend": 1000, "single": 500, "separated": 500}
    assert kind_counts(5, (0, 1, 0)) == {"blend": 0, "single": 5, "separated": 0}


def test_bench_simulation_small():
    result = bench_simulation(n=40, workers=1)
    assert result["stamps_per_s"] > 0 and result["cores"] >= 1 and result["n"] == 40


# ---------------------------------------------------------------------------
# Fields
# ---------------------------------------------------------------------------


def _isolated_round_config(**galaxy):
    cfg = load_dataset("cfis")
    gal = dataclasses.replace(cfg.galaxy, hlr=(0.6, 0.9), flux=(1e4, 2e4), **galaxy)
    return dataclasses.replace(cfg, galaxy=gal, field=dataclasses.replace(cfg.field, margin=40))


def _measure_shear(field, rows):

    image, psf = galsim.ImageF(field.image), galsim.ImageF(field.psf)
    g = []
    for r in rows:
        x, y = round(r["X"]), round(r["Y"])
        res = galsim.hsm.EstimateShear(
            image[galsim.BoundsI(x - 32, x + 32, y - 32, y + 32)],
            psf,
            shear_est="REGAUSS",
            strict=True,
        )
        s = galsim.Shear(e1=res.corrected_e1, e2=res.corrected_e2)
        g.append((s.g1, s.g2))
    return np.mean(g, axis=0)


def _isolated(truth, distance=60.0):
    x, y = np.asarray(truth["X"]), np.asarray(truth["Y"])
    d = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1) > distance


@pytest.mark.parametrize("shear", [(0.02, 0.0), (0.0, -0.03)])
def test_field_shear_is_applied_round_galaxies(shear):
    config = _isolated_round_config(ellipticity_sigma=0.0)
    field = simulate_field(config, 40, shear=shear, seed=3, noise=0, size=1000)
    iso = _isolated(field.truth)
    assert iso.sum() >= 15
    assert (field.truth["OVERLAPS"][iso] == -1).all()
    g1, g2 = _measure_shear(field, field.truth[iso])
    g_true = np.array(shear)
    big = int(np.argmax(np.abs(g_true)))
    g = np.array([g1, g2])
    assert g[big] == pytest.approx(g_true[big], rel=0.05)
    assert abs(g[1 - big]) < 1e-3


def test_field_shear_rotated_pairs_cancel_shape_noise():
    config = _isolated_round_config()  # intrinsic shapes with sigma 0.25
    field = simulate_field(
        config, 60, shear=(0.02, 0.0), seed=4, noise=0, size=700, rotated_pairs=True
    )
    truth = field.truth
    half = len(truth) // 2
    assert field.image.shape == (700, 1400)
    np.testing.assert_array_equal(truth["PAIR_ID"][:half], truth["PAIR_ID"][half:])
    np.testing.assert_allclose(truth["E1_INTRINSIC"][half:], -truth["E1_INTRINSIC"][:half])
    c = 350.5  # the scene turns by 90 degrees about the left half's centre, then is sheared
    # about each group's centre: a galaxy with no neighbour within 30 px is a
    # group of its own, does not move, and its partner is its exact turn
    x, y = np.asarray(truth["X"][:half]), np.asarray(truth["Y"][:half])
    d2 = (x[:, None] - x[None]) ** 2 + (y[:, None] - y[None]) ** 2
    np.fill_diagonal(d2, np.inf)
    alone = d2.min(axis=1) > 30.0**2
    assert alone.sum() >= 10
    right_x = np.asarray(truth["X"][half:]) - 700 - c
    right_y = np.asarray(truth["Y"][half:]) - c
    np.testing.assert_allclose(right_x[alone], -(y[alone] - c), atol=1e-9)
    np.testing.assert_allclose(right_y[alone], x[alone] - c, atol=1e-9)
    assert not truth["ROTATED"][:half].any() and truth["ROTATED"][half:].all()
    assert np.std(truth["E1_INTRINSIC"]) > 0.1
    iso = _isolated(truth)
    both = iso[:half] & iso[half:]
    rows = truth[np.concatenate([both, both])]
    assert len(rows) >= 20
    g1, g2 = _measure_shear(field, rows)
    assert g1 == pytest.approx(0.02, rel=0.05)
    assert abs(g2) < 1.5e-3


def test_positions_are_sheared_with_the_scene():
    """A ring of neighbours becomes an ellipse of the applied shear about its own centre."""
    from blendflag.simulate.field_geometry import friends_of_friends, shear_positions

    c = 51.0
    angle = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    xs, ys = c + 50 * np.cos(angle), c + 50 * np.sin(angle)
    groups = friends_of_friends(xs, ys)
    assert set(groups) == {0}  # 0.8 px apart: one group
    same = shear_positions(xs, ys, (0.0, 0.0), groups)
    np.testing.assert_array_equal(same[0], xs)
    for g1, g2 in ((0.1, 0.0), (0.0, -0.1), (0.05, 0.05)):
        x, y = shear_positions(xs, ys, (g1, g2), groups)
        assert x.mean() == pytest.approx(c) and y.mean() == pytest.approx(c)
        # second moments of the ring give back the shear (e = 2g/(1+g^2) for moments)
        dx, dy = x - c, y - c
        qxx, qyy, qxy = (dx * dx).mean(), (dy * dy).mean(), (dx * dy).mean()
        e = np.array([qxx - qyy, 2 * qxy]) / (qxx + qyy)
        g = np.array([g1, g2])
        np.testing.assert_allclose(e, 2 * g / (1 + g @ g), atol=1e-12)


def test_isolated_galaxies_do_not_move_and_pairs_keep_their_centre():
    from blendflag.simulate.field_geometry import friends_of_friends, shear_positions

    xs = np.array([10.0, 100.0, 110.0, 300.0, 300.0])
    ys = np.array([10.0, 100.0, 100.0, 300.0, 300.0])
    keys = np.array([0, 0, 0, 0, 1])  # the last two sit in different halves
    groups = friends_of_friends(xs, ys, keys=keys)
    assert groups[1] == groups[2] and len(set(groups)) == 4
    for sign in (1, -1):
        x, y = shear_positions(xs, ys, (0.1 * sign, 0.0), groups)
        np.testing.assert_array_equal(x[[0, 3, 4]], xs[[0, 3, 4]])
        np.testing.assert_array_equal(y[[0, 3, 4]], ys[[0, 3, 4]])
        assert (x[1] + x[2]) / 2 == pytest.approx(105.0)
        stretch = (1 + 0.1) / np.sqrt(1 - 0.01)  # the largest of the shear matrix
        assert x[2] - x[1] == pytest.approx(10 * (1 + 0.1 * sign) / np.sqrt(1 - 0.01) / stretch)


def test_field_margin_keeps_galaxies_away_from_the_edges():
    field = simulate_field(
        "cfis", 200, shear=(0.02, 0.0), seed=6, noise=0, rotated_pairs=True, size=300, margin=26
    )
    x, y = np.asarray(field.truth["X"]), np.asarray(field.truth["Y"])
    xh = np.where(field.truth["ROTATED"], x - 300, x)
    assert xh.min() >= 26.5 and xh.max() <= 300 - 26 + 0.5
    assert y.min() >= 26.5 and y.max() <= 300 - 26 + 0.5
    with pytest.raises(BlendflagError, match="margin"):
        simulate_field("cfis", 20, seed=6, margin=-1)


def test_rotated_half_is_the_left_half_turned_by_90_degrees():
    """Without shear, the right half is the left half rotated on the pixel grid, blends too."""
    field = simulate_field("cfis", 400, shear=(0.0, 0.0), seed=5, noise=0, rotated_pairs=True)
    ny, nx = field.image.shape
    assert nx == 2 * ny
    left, right = field.image[:, :ny], field.image[:, ny:]
    np.testing.assert_allclose(right, np.rot90(left, -1), atol=1e-4 * left.max())
    overlaps = np.asarray(field.truth["OVERLAPS"]) >= 0
    assert overlaps.any()  # natural blends exist, and rotate with their galaxies
    np.testing.assert_array_equal(overlaps[:200], overlaps[200:])


def test_field_products_and_natural_blends():
    field = simulate_field("cfis", 600, shear=(0.02, 0.0), seed=1)
    assert field.image.dtype == np.float32 and field.weight.dtype == np.float32
    assert field.image.shape == field.weight.shape
    np.testing.assert_allclose(field.weight, 1 / field.noise_sigma**2, rtol=1e-6)
    assert field.psf.dtype == np.float32 and field.psf.shape == (51, 51)
    assert field.psf.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(np.argmax(field.psf), field.psf.shape) == (25, 25)
    truth = field.truth
    ny, nx = field.image.shape
    assert ((truth["X"] >= 1) & (truth["X"] <= nx) & (truth["Y"] >= 1) & (truth["Y"] <= ny)).all()
    over = np.asarray(truth["OVERLAPS"])
    assert 0 < (over >= 0).sum() < len(truth)  # random positions: some natural blends
    assert (over != np.arange(len(truth))).all()
    # overlaps are mutual: if a overlaps b, b overlaps someone
    assert (over[over[over >= 0]] >= 0).all()
    assert (truth["PAIR_ID"] == -1).all() and not truth["ROTATED"].any()


def test_write_field(tmp_path):
    from astropy.io import fits

    field = simulate_field("cfis", 20, shear=(0.02, -0.01), seed=2, size=200)
    out = write_field(field, tmp_path / "f")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.yaml", "image.fits", "psf.fits", "truth.fits", "weight.fits"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with fits.open(out / "image.fits") as hdul:
        h = hdul[0].header
        assert h["SHEAR1"] == 0.02 and h["SHEAR2"] == -0.01
        assert h["PIXSCALE"] == pytest.approx(0.187) and h["DATASET"] == "cfis_study"
        assert h["SEED"] == 2 and h["NOISE"] == field.noise_sigma
        np.testing.assert_array_equal(hdul[0].data, field.image)
    with fits.open(out / "truth.fits") as hdul:
        assert len(hdul["TRUTH"].data) == 20
        assert {
            "ID",
            "X",
            "Y",
            "FLUX",
            "HLR",
            "E1_INTRINSIC",
            "E2_INTRINSIC",
            "ROTATED",
            "PAIR_ID",
            "OVERLAPS",
        } <= set(hdul["TRUTH"].columns.names)
    assert load_dataset(out / "config.yaml") == field.config
    # same seed, same bytes; writing into the existing directory replaces the files
    again = simulate_field("cfis", 20, shear=(0.02, -0.01), seed=2, size=200)
    before = (out / "image.fits").read_bytes()
    write_field(again, out)
    assert (out / "image.fits").read_bytes() == before


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_galaxies": 0}, "n_galaxies"),
        ({"shear": "0.02"}, "two numbers"),
        ({"shear": "a,b"}, "two numbers"),
        ({"shear": (0.9, 0.9)}, "< 1"),
        ({"rotated_pairs": True, "n_galaxies": 5}, "even"),
        ({"noise": -1.0}, "noise"),
        ({"size": 10}, "size"),
    ],
)
def test_bad_field_arguments(kwargs, match):
    args = {"n_galaxies": 4, "shear": (0.0, 0.0), "seed": 0, **kwargs}
    with pytest.raises(BlendflagError, match=match):
        simulate_field("cfis", **args)


def test_write_field_bad_outdir(tmp_path):
    field = simulate_field("cfis", 4, seed=0, size=100)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BlendflagError, match="not a directory"):
        write_field(field, tmp_path / "file")
    with pytest.raises(BlendflagError, match="does not exist"):
        write_field(field, tmp_path / "missing" / "f")


def test_field_does_not_depend_on_workers(monkeypatch):
    import blendflag.simulate.field as sf

    monkeypatch.setattr(sf, "FIELD_CHUNK", 100)
    a = simulate_field("cfis", 300, shear=(0.02, 0.0), seed=8, workers=1)
    b = simulate_field("cfis", 300, shear=(0.02, 0.0), seed=8, workers=2)
    assert a.image.tobytes() == b.image.tobytes()
    np.testing.assert_array_equal(a.truth["OVERLAPS"], b.truth["OVERLAPS"])


@pytest.mark.parametrize("old", ["great3", "cfis", "euclid"])
def test_the_study_presets_answer_to_their_old_names(old):
    """The original study's presets are ``<name>_study``; the old names load them."""
    study = load_dataset(f"{old}_study")
    assert load_dataset(old) == study and study.name == f"{old}_study"
    assert study.galaxy.population == "loguniform"
    assert old not in dataset_preset_names() and f"{old}_study" in dataset_preset_names()
