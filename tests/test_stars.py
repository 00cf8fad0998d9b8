"""Stars out of the shear sample, and the PSF model checked against them."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.table import Table

from blendflag.psf.model import ImagePSF
from blendflag.psf.psfex_chain import find_binary
from blendflag.psf.star_check import check_psf, combine_checks
from blendflag.shear.star_cut import complete_without_stars, image_stars, stars_summary
from blendflag.truth import pair_complete, true_stars
from tests.conftest import run_cli

HAS_CHAIN = find_binary("source-extractor", "sex") is not None and find_binary("psfex") is not None
needs_chain = pytest.mark.skipif(
    not HAS_CHAIN, reason="source-extractor and psfex (Debian packages) not on PATH"
)


# ---------------------------------------------------------------------------
# Which detections are stars
# ---------------------------------------------------------------------------


def test_true_stars_follow_the_truth_match():
    truth = Table({"X": [1.0, 2.0, 3.0], "Y": [1.0, 2.0, 3.0], "STAR": [False, True, True]})
    match = np.array([0, 1, -1, 2, 1])
    np.testing.assert_array_equal(true_stars(match, truth), [0, 1, 0, 1, 1])
    truth.remove_column("STAR")  # a field drawn without stars
    assert not true_stars(match, truth).any()


def _context(table, catalogue=True, **results):
    return SimpleNamespace(
        table=table, truth=None, catalogue=object() if catalogue else None, results=results
    )


def test_without_the_locus_columns_no_star_is_identified_and_the_note_says_so():
    table = Table({"X_IMAGE": [10.0, 20.0], "Y_IMAGE": [5.0, 6.0], "FLAGS": [0, 0]})
    stars = image_stars(_context(table))
    assert stars.rows is None and stars.identified_by is None
    assert "FLUX_RADIUS, SNR_WIN" in stars.note and "the catalogue" in stars.note
    summary = stars_summary([stars.summary(None, False)])
    assert summary["n"] is None and summary["identified_by"] is None
    assert summary["note"] == stars.note
    assert "the detections" in image_stars(_context(table, catalogue=False)).note


def test_a_catalogue_with_a_stellar_locus_has_its_locus_rows_as_stars():
    rng = np.random.default_rng(5)
    n_stars, n_gal = 200, 800
    x, y = rng.uniform(1, 4000, (2, n_stars + n_gal))
    radius = 1.8 * (1 + 0.1 * x / 4000) * (1 + rng.normal(0, 0.01, len(x)))
    radius[n_stars:] *= 1.3 + rng.exponential(0.5, n_gal)
    table = Table(
        {
            "X_IMAGE": x,
            "Y_IMAGE": y,
            "FLUX_RADIUS": radius,
            "SNR_WIN": np.full(len(x), 200.0),
            "FLAGS": np.zeros(len(x), dtype=np.int16),
        }
    )
    stars = image_stars(_context(table))
    assert stars.identified_by == "stellar locus" and stars.note is None
    assert stars.rows[:n_stars].mean() > 0.9 and not stars.rows[n_stars:].any()
    np.testing.assert_array_equal(stars.x, x[stars.rows])


def test_an_image_engines_catalogues_find_the_stars_by_position():
    from blendflag.shear.results import METACAL_VERSIONS
    from blendflag.shear.star_cut import ImageStars

    stars = ImageStars(np.array([True, False]), "truth", x=np.array([50.0]), y=np.array([60.0]))
    tables = {
        v: Table({"X_IMAGE": [50.5, 10.0, 80.0], "Y_IMAGE": [60.0, 10.0, 61.0]})
        for v in METACAL_VERSIONS
    }
    tables["1p"]["X_UNSHEARED"] = [10.0, 50.2, 90.0]  # positions before the version's shear
    tables["1p"]["Y_UNSHEARED"] = [10.0, 59.5, 90.0]
    rows = stars.version_rows(SimpleNamespace(sum_layout="versions", tables=tables))
    np.testing.assert_array_equal(rows["noshear"], [1, 0, 0])
    np.testing.assert_array_equal(rows["1p"], [0, 1, 0])


class _Pairs:
    """The stamp results' pair rule (:func:`blendflag.truth.pair_complete`)."""

    sum_layout = "stamps"

    def complete_units(self, masks, units):
        return {v: pair_complete(m, units) for v, m in masks.items()}


def test_stars_leave_every_selection_and_kept_stars_are_units_of_their_own():
    units = np.array([0, 0, 1, 1, 7, 8])  # two rotated pairs, then two stars (no partner)
    star = np.array([0, 0, 0, 0, 1, 1], bool)
    good = {"noshear": np.array([1, 1, 1, 0, 1, 1], bool)}
    rows = {"noshear": star}
    out = complete_without_stars(_Pairs(), good, units, rows, keep=False)
    np.testing.assert_array_equal(out["noshear"], [1, 1, 0, 0, 0, 0])
    kept = complete_without_stars(_Pairs(), good, units, rows, keep=True)
    np.testing.assert_array_equal(kept["noshear"], [1, 1, 0, 0, 1, 1])  # the broken pair stays out
    unknown = complete_without_stars(_Pairs(), good, units, None, keep=False)
    np.testing.assert_array_equal(unknown["noshear"], [1, 1, 0, 0, 0, 0])


def test_stars_summary_adds_images_and_keeps_an_unknown_count_unknown():
    a = {"n": 3, "identified_by": "truth", "kept": False, "note": None}
    b = {"n": 4, "identified_by": "truth", "kept": False, "note": None}
    assert stars_summary([a, b]) == {
        "n": 7,
        "identified_by": "truth",
        "kept": False,
        "note": None,
    }
    assert stars_summary([a, None])["n"] is None  # a file written before stars were counted
    assert stars_summary([None]) == {"n": None, "identified_by": None, "kept": None, "note": None}


def test_sums_file_stores_the_stars_and_the_psf_check_and_old_files_load(tmp_path):
    from blendflag.shear.paired import SumsFile, UnitSums

    sums = UnitSums(np.arange(3), np.ones((3, 15)), 3)
    stored = SumsFile(
        {"all": sums}, {}, "h", 1, "f", (0.02, 0.0), 0.01, "metacal", "stamps",
        stars={"n": 2, "identified_by": "stellar locus", "kept": False, "note": None},
        psf_check={"n_stars": 9, "passed": True},
    )  # fmt: skip
    stored.save(tmp_path / "t.sums.npz")
    back = SumsFile.load(tmp_path / "t.sums.npz")
    assert back.stars == stored.stars and back.psf_check == stored.psf_check
    with np.load(tmp_path / "t.sums.npz") as data:  # as an older blendflag wrote it
        old = {k: data[k] for k in data.files if k not in ("stars", "psf_check")}
    np.savez(tmp_path / "old.sums.npz", **old)
    back = SumsFile.load(tmp_path / "old.sums.npz")
    assert back.stars is None and back.psf_check is None
    assert back.selections["all"].n_good == 3


# ---------------------------------------------------------------------------
# A simulated field with stars: the truth names them
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def star_field():
    """A ±g pair of simulated fields with 120 galaxies (rotated pairs) and 30 stars.

    The study's deep field (``cfis``, 2 ADU): every star is detected.
    """
    from blendflag.pipeline.field_input import simulated_inputs

    return simulated_inputs("cfis", n_galaxies=120, seed=4, n_stars=30)


def _run(inputs, keep: bool):
    from blendflag.config import PipelineConfig, ShearCuts
    from blendflag.flagging.flaggers import make_flaggers
    from blendflag.pipeline.compare import run_compare
    from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine

    pm = get_plugin_manager()
    config = PipelineConfig()
    # no shear cuts: the size cut would remove the stars too (T/T_PSF ~ 1)
    no_cuts = ShearCuts(s2n_min=0.0, t_ratio_min=0.0)
    config = replace(config, shear=replace(config.shear, keep_stars=keep, cuts=no_cuts))
    engine = select_engine(get_shear_engines(pm), "metacal", paired=True)
    flaggers = make_flaggers(pm, ["sextractor"], config)
    return run_compare(
        pm, config, inputs, flaggers, engine, seed=4, n_bootstrap=20, flag_original=False
    )


@pytest.mark.slow
def test_simulated_stars_are_left_out_of_every_selection_unless_kept(star_field):
    assert int(star_field[0].truth["STAR"].sum()) == 30
    default, kept = _run(star_field, keep=False), _run(star_field, keep=True)
    stars = default.summary.stars
    assert stars["identified_by"] == "truth" and stars["kept"] is False
    assert 40 <= stars["n"] <= 60  # 30 stars in each image, nearly all detected
    assert kept.summary.stars == {**stars, "kept": True}
    n = {s["name"]: s for s in default.summary.selections}
    n_kept = {s["name"]: s for s in kept.summary.selections}
    names = {"all", "all_paired", "all_masked", "no_true_blends", "no_sextractor_blends"}
    assert set(n) == set(n_kept) == names
    # `all` loses about the stars (those measured without a flag)
    assert 0.8 * stars["n"] <= n_kept["all"]["n"] - n["all"]["n"] <= stars["n"]
    for name in n:
        assert n_kept[name]["n"] >= n[name]["n"]
    # left out, no selection holds a star; the galaxies of the pair-completed
    # selections keep their rotated pairs
    for context in default.contexts:
        star = true_stars(context.results["truth_match"], context.truth)
        pid = context.results["pair_id"]
        for name, masks in context.results["selection_masks"].items():
            assert not (masks["noshear"] & star).any()
            if name in ("all_paired", "no_true_blends"):
                kept_ids, counts = np.unique(pid[masks["noshear"]], return_counts=True)
                assert np.all(counts == 2), kept_ids[counts != 2]


# ---------------------------------------------------------------------------
# The PSF model against the stars
# ---------------------------------------------------------------------------


def _gaussian(size, sigma, g1=0.0, flux=1.0, centre=None):
    """A sheared round Gaussian (pixel units) drawn on ``size`` x ``size`` pixels."""
    import galsim

    profile = galsim.Gaussian(sigma=sigma, flux=flux).shear(g1=g1, g2=0.0)
    offset = (0.0, 0.0) if centre is None else centre
    return profile.drawImage(nx=size, ny=size, scale=1.0, offset=offset).array


def _star_image(rng, sigma=1.6, shape=(400, 400), noise=2.0):
    """40 stars (flux 5e4 ADU) of a Gaussian PSF, 8 x 5 at random sub-pixel positions.

    Two of them are placed 6 pixels from another (the clipped mean leaves them out).
    """
    image = rng.normal(0.0, noise, shape)
    gx, gy = np.meshgrid(np.arange(8) * 45.0 + 40, np.arange(5) * 75.0 + 40)
    x = gx.ravel() + rng.uniform(-5, 5, 40)
    y = gy.ravel() + rng.uniform(-5, 5, 40)
    x[1], y[1] = x[0] + 6.0, y[0] + 1.0
    for a, b in zip(x, y, strict=True):
        i, j = round(a) - 1, round(b) - 1
        stamp = _gaussian(31, sigma, flux=5e4, centre=(a - 1 - i, b - 1 - j))
        image[j - 15 : j + 16, i - 15 : i + 16] += stamp
    return image, x, y


def test_the_right_psf_passes_and_one_too_large_or_elongated_fails():
    image, x, y = _star_image(np.random.default_rng(2))
    right = check_psf(image, ImagePSF(_gaussian(31, 1.6)), x, y)
    assert right.passed and right.n_stars == 40
    assert right.size_ratio == pytest.approx(1.0, abs=0.01)
    assert abs(right.de1) < 0.003 and abs(right.de2) < 0.003
    large = check_psf(image, ImagePSF(_gaussian(31, 1.76)), x, y)
    assert not large.passed and large.size_ratio == pytest.approx(1.1, abs=0.01)
    elongated = check_psf(image, ImagePSF(_gaussian(31, 1.6, g1=0.02)), x, y)
    assert not elongated.passed and elongated.de1 == pytest.approx(0.04, abs=0.006)
    # masked stars and stars at the edge are not measured
    weight = np.ones_like(image)
    weight[int(y[10]) - 1, int(x[10]) - 1] = 0
    assert check_psf(image, ImagePSF(_gaussian(31, 1.6)), x, y, weight=weight).n_stars == 39
    assert check_psf(image, ImagePSF(_gaussian(31, 1.6)), x[:2], y[:2]) is None  # too few


def test_tiles_checks_combine_weighted_by_their_stars():
    one = {
        "n_stars": 10, "size_ratio": 1.0, "size_ratio_err": 0.01, "de1": 0.0, "de2": 0.0,
        "de1_err": 0.001, "de2_err": 0.001, "tolerance": {"size": 0.03, "e": 0.01},
        "passed": True, "stars": "stellar locus",
    }  # fmt: skip
    two = {**one, "n_stars": 30, "size_ratio": 1.04, "passed": False}
    both = combine_checks([one, None, two])
    assert both["n_stars"] == 40 and both["size_ratio"] == pytest.approx(1.03)
    assert both["passed"] is False and set(both) == set(one)
    assert combine_checks([None, one]) == one and combine_checks([None]) is None


# ---------------------------------------------------------------------------
# The real chain: SExtractor and PSFEx on a field with stars, then compare
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain_field(tmp_path_factory):
    """A 500x500 field with 80 galaxies and 60 stars, its SExtractor catalogue, and PSFs.

    ``psf.fits`` is the PSF the field was drawn with; ``psf_large.fits`` the
    same 10 % larger (in size).
    """
    import galsim
    from astropy.io import fits

    from blendflag.psf.psfex_chain import run_chain
    from blendflag.simulate.field import simulate_field
    from blendflag.simulate.field_io import write_field

    out = tmp_path_factory.mktemp("stars") / "f"
    field = simulate_field("cfis", 80, shear=(0.02, 0.0), seed=7, noise=3.0, size=500, n_stars=60)
    write_field(field, out)
    chain = run_chain(out / "image.fits", out, weight=out / "weight.fits")
    psf = np.asarray(field.psf, dtype=np.float64)
    large = galsim.InterpolatedImage(galsim.Image(psf, scale=1.0)).dilate(1.1)
    image = large.drawImage(nx=psf.shape[1], ny=psf.shape[0], scale=1.0, method="no_pixel")
    fits.PrimaryHDU(image.array.astype(np.float32)).writeto(out / "psf_large.fits")
    return {"dir": out, "catalogue": chain["catalogue"], "psfex": chain["psf"]}


def _compare(chain_field, tmp_path, capsys, *options, psf="psf.fits"):
    d = chain_field["dir"]
    out = tmp_path / f"c{len(list(tmp_path.iterdir()))}.json"
    code, stdout, err = run_cli(
        [
            "compare", "--image", d / "image.fits", "--psf", d / psf,
            "--catalogue", chain_field["catalogue"], "--weight", d / "weight.fits",
            "--true-shear", "0.02,0", "--flaggers", "sextractor", "--workers", "1",
            "--bootstrap", "20", "--json", out, "--quiet", *options,
        ],
        capsys,
    )  # fmt: skip
    return code, (json.loads(out.read_text()) if out.exists() else None), stdout, err


@needs_chain
@pytest.mark.slow
def test_locus_stars_are_left_out_and_kept_with_the_option(chain_field, tmp_path, capsys):
    from blendflag.io.catalog import read_catalogue
    from blendflag.psf.stars import catalogue_stars

    locus, _ = catalogue_stars(read_catalogue(chain_field["catalogue"]).table)
    assert locus.sum() >= 10
    code, data, stdout, err = _compare(chain_field, tmp_path, capsys)
    assert code == 0, err
    assert data["stars"] == {
        "n": int(locus.sum()),
        "identified_by": "stellar locus",
        "kept": False,
        "note": None,
    }
    assert f"stars: {int(locus.sum())} left out of every selection" in stdout
    check = data["psf_check"]
    assert check["passed"] and check["n_stars"] >= 10 and "warning" not in err
    assert check["size_ratio"] == pytest.approx(1.0, abs=0.01)
    # the shear catalogue's size cut removes the stars too (T/T_PSF ~ 1): without it,
    # keeping them adds about them to `all`
    no_cuts = tmp_path / "no_cuts.yaml"
    no_cuts.write_text("shear:\n  cuts:\n    s2n_min: 0\n    t_ratio_min: 0\n")
    _, left, _, _ = _compare(chain_field, tmp_path, capsys, "--config", no_cuts)
    code, kept, _, err = _compare(
        chain_field, tmp_path, capsys, "--keep-stars", "--config", no_cuts
    )
    assert code == 0, err
    assert kept["stars"] == {**data["stars"], "kept": True}
    n = {s["name"]: s["n"] for s in left["selections"]}
    n_kept = {s["name"]: s["n"] for s in kept["selections"]}
    assert 0.8 * locus.sum() <= n_kept["all"] - n["all"] <= locus.sum()


@needs_chain
@pytest.mark.slow
def test_a_psf_too_large_warns_once_and_strict_psf_stops(chain_field, tmp_path, capsys):
    code, data, _, err = _compare(chain_field, tmp_path, capsys, psf="psf_large.fits")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, err
    expected = "the PSF model does not match the stars: median size ratio model/star 1.1"
    assert expected in warnings[0]
    check = data["psf_check"]
    assert not check["passed"] and check["size_ratio"] == pytest.approx(1.1, abs=0.02)
    code, data, _, err = _compare(
        chain_field, tmp_path, capsys, "--strict-psf", psf="psf_large.fits"
    )
    assert code == 2 and data is None
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: the PSF model")


@needs_chain
def test_the_psfex_model_of_the_chain_passes(chain_field):
    from blendflag.io.catalog import read_catalogue
    from blendflag.io.images import read_image
    from blendflag.psf.model import load_psf
    from blendflag.psf.star_check import check_psf_at_locus

    d = chain_field["dir"]
    image, _ = read_image(d / "image.fits")
    weight, _ = read_image(d / "weight.fits")
    model, _ = load_psf(chain_field["psfex"])
    table = read_catalogue(chain_field["catalogue"]).table
    check = check_psf_at_locus(image, model, table, weight, 0.187)
    assert check["passed"] and check["size_ratio"] == pytest.approx(1.0, abs=0.01)


@needs_chain
@pytest.mark.slow
def test_the_three_routes_count_the_same_stars_and_check_the_same_psf(
    chain_field, tmp_path, capsys
):
    """Direct, split (the whole catalogue's locus) and --tiles (through the stored sums)."""
    d = chain_field["dir"]
    files = {
        "image": d / "image.fits",
        "psf": d / "psf.fits",
        "catalogue": chain_field["catalogue"],
        "weight": d / "weight.fits",
    }
    (tmp_path / "tiles.txt").write_text(" ".join(f"{k}={v}" for k, v in files.items()) + "\n")
    direct = [f"--{k}={v}" for k, v in files.items()] + ["--true-shear=0.02,0"]
    routes = {
        "direct": [*direct, "--sub-tile", "0"],
        "split": [*direct, "--sub-tile", "250", "--out-dir", tmp_path / "work"],
        "tiles": ["--tiles", tmp_path / "tiles.txt", "--out-dir", tmp_path / "out"],
    }
    documents = {}
    for route, options in routes.items():
        out = tmp_path / f"{route}.json"
        code, _, err = run_cli(
            ["compare", "--flaggers", "sextractor", "--bootstrap", "20", "--workers", "1",
             "--quiet", "--json", out, *options],
            capsys,
        )  # fmt: skip
        assert code == 0, err
        documents[route] = json.loads(out.read_text())
    stars = documents["direct"]["stars"]
    assert stars["identified_by"] == "stellar locus" and stars["n"] >= 10
    check = documents["direct"]["psf_check"]
    assert check["passed"]
    for document in documents.values():
        assert document["stars"] == stars
        for key, value in check.items():
            got = document["psf_check"][key]
            assert got == (pytest.approx(value) if isinstance(value, float) else value)
        assert [s["n"] for s in document["selections"]] == [
            s["n"] for s in documents["direct"]["selections"]
        ]
