"""`blendflag-shear compare`: contract, selections, user data, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from blendflag.io.catalog import read_catalogue
from blendflag.truth import pair_complete
from tests.conftest import run_cli

KEYS = {"name", "n", "R11", "R22", "g1", "g1_err", "g2", "g2_err", "m", "m_err", "c", "c_err"}
#: The paired-shear contract (issue 16): every selection carries these.
PAIRED_KEYS = {
    "m",
    "m_err",
    "c1",
    "c1_err",
    "c2",
    "c2_err",
    "dm_vs_all",
    "dm_vs_all_err",
    "dm_vs_truth",
    "dm_vs_truth_err",
    "fraction_kept",
    "R11",
    "R11_S",
}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One small simulated comparison (sextractor only), run once for the module."""
    from blendflag.cli import main

    tmp = tmp_path_factory.mktemp("compare")
    paths = {"json": tmp / "c.json", "plot": tmp / "c.png", "cat": tmp / "c.fits"}
    code = main(
        [
            "compare",
            "--dataset",
            "cfis",  # the study's deep field (2 ADU), where every galaxy is measured
            "--n-galaxies",
            "240",
            "--seed",
            "3",
            "--flaggers",
            "sextractor",
            "--workers",
            "1",
            "--bootstrap",
            "50",
            "--json",
            str(paths["json"]),
            "--plot",
            str(paths["plot"]),
            "--catalogue-out",
            str(paths["cat"]),
            "--quiet",
        ]
    )
    assert code == 0
    return paths


@pytest.mark.slow
def test_json_contract(small_run):
    data = json.loads(small_run["json"].read_text())
    assert data["engine"] in ("metacal", "ngmix")
    assert data["true_shear"] == [0.02, 0.0]
    assert data["shear_pairs"] is True
    names = [s["name"] for s in data["selections"]]
    assert names == ["all", "all_paired", "all_masked", "no_true_blends", "no_sextractor_blends"]
    for sel in data["selections"]:
        assert KEYS | PAIRED_KEYS <= set(sel)
        assert sel["m"] is not None and sel["m_err"] > 0 and sel["c_err"] > 0
        assert sel["c1_err"] > 0 and sel["dm_vs_truth"] is not None
        assert 0.3 < sel["R11"] < 1.5  # wmom (one 1.2" weight) about 0.45, admom about 1.1
    assert data["engine"] != "metacal" or data["shape"].startswith("wmom")
    assert data["truth"]["depth"]["used"] == "field"
    # the cut removes objects, and its selection response is reported
    by_name = {s["name"]: s for s in data["selections"]}
    all_, cut = by_name["all"], by_name["no_sextractor_blends"]
    assert all_["dm_vs_all"] == 0.0 and cut["dm_vs_all_err"] > 0
    assert cut["n"] < all_["n"]
    assert "R11_S" in cut and "m_noRS" in cut
    assert small_run["plot"].read_bytes()[:4] == b"\x89PNG"
    assert data["original_images_flagged"]  # --catalogue-out needs the BLEND_* columns


@pytest.mark.slow
def test_without_a_catalogue_the_original_stamps_are_not_flagged(small_run):
    """The selections use the flags on the metacal images only: same result without them."""
    from blendflag.cli import main

    out = small_run["json"].parent / "no_catalogue.json"
    code = main(
        [
            "compare",
            "--dataset",
            "cfis",  # the study's deep field (2 ADU), where every galaxy is measured
            "--n-galaxies",
            "240",
            "--seed",
            "3",
            "--flaggers",
            "sextractor",
            "--workers",
            "1",
            "--bootstrap",
            "50",
            "--json",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    lean, full = json.loads(out.read_text()), json.loads(small_run["json"].read_text())
    assert not lean["original_images_flagged"]
    assert lean["selections"] == full["selections"] and lean["truth"] == full["truth"]


@pytest.mark.slow
def test_selections_hold_what_they_claim(small_run):
    """An object flagged by the cut (on the noshear metacal image) is not in its selection."""
    data = json.loads(small_run["json"].read_text())
    cat = read_catalogue(small_run["cat"])
    good = cat.column("MCAL_FLAGS") == 0
    pid = cat.column("PAIR_ID")
    flagged = cat.column("MCAL_BLEND_SEXTRACTOR")
    n = {s["name"]: s["n_per_image"][0] for s in data["selections"]}  # the +g image's
    # the shear catalogue's cuts (pipeline.yaml's shear.cuts) on the noshear version
    passes = (cat.column("S2N_NOSHEAR") >= 10.0) & (
        cat.column("T_NOSHEAR") / cat.column("T_PSF") >= 1.2
    )
    assert data["shear_cuts"]["kept_noshear"] >= passes[good].sum()  # the -g image's too
    good = good & passes
    # by detection and cuts alone; whole true rotated pairs only in all_paired
    assert n["all"] == good.sum()
    assert n["all_paired"] == pair_complete(good, pid).sum() < good.sum()
    assert n["no_sextractor_blends"] == (good & ~flagged).sum()
    # and the catalogue keeps the flags written by `flag` and the metacal shapes
    for col in ("BLEND_SEXTRACTOR", "G1_NOSHEAR", "G1_1P", "G2_2M", "MCAL_FLAGS"):
        assert col in cat.colnames


def test_pair_complete():
    keep = np.array([1, 1, 1, 0, 1, 1], bool)
    pid = np.array([0, 0, 1, 1, 2, 3])
    np.testing.assert_array_equal(pair_complete(keep, pid), [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(pair_complete(keep, None), keep)


@pytest.fixture(scope="module")
def field_files(tmp_path_factory):
    from blendflag.simulate.field import simulate_field
    from blendflag.simulate.field_io import write_field

    tmp = tmp_path_factory.mktemp("field")
    field = simulate_field("cfis", 120, shear=(0.02, 0.0), seed=8, noise=3.0)
    write_field(field, tmp / "f")
    return tmp / "f"


@pytest.mark.slow
def test_on_user_files(field_files, tmp_path, capsys):
    out = tmp_path / "u.json"
    code, _, err = run_cli(
        [
            "compare",
            "--image",
            field_files / "image.fits",
            "--psf",
            field_files / "psf.fits",
            "--weight",
            field_files / "weight.fits",
            "--flaggers",
            "sextractor",
            "--workers",
            "1",
            "--bootstrap",
            "20",
            "--json",
            out,
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["true_shear"] is None
    assert all(s["m"] is None and s["c"] is None for s in data["selections"])
    assert data["selections"][0]["n"] > 50


def _bad(field_files, tmp_path):
    img, psf = field_files / "image.fits", field_files / "psf.fits"
    nopos = tmp_path / "nopos.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.BinTableHDU.from_columns(
                [fits.Column(name="FLUX_AUTO", format="E", array=np.ones(3))]
            ),
        ]
    ).writeto(nopos)
    far = tmp_path / "far.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.BinTableHDU.from_columns(
                [
                    fits.Column(name="X_IMAGE", format="E", array=np.array([5000.0])),
                    fits.Column(name="Y_IMAGE", format="E", array=np.array([10.0])),
                ]
            ),
        ]
    ).writeto(far)
    return {
        "missing PSF": (["--image", img, "--psf", tmp_path / "none.fits"], "PSF image not found"),
        "no PSF given": (["--image", img], "needs both --image and --psf"),
        "catalogue without positions": (
            ["--image", img, "--psf", psf, "--catalogue", nopos],
            "no X_IMAGE column",
        ),
        "catalogue from another image": (
            ["--image", img, "--psf", psf, "--catalogue", far],
            "catalogue and image do not match",
        ),
        "unknown engine": (["--engine", "magic"], "unknown shear engine 'magic'"),
        "bad shear": (["--shear", "0.02"], "shear must be two numbers"),
        "mixed inputs": (
            ["--image", img, "--psf", psf, "--shear", "0.01,0"],
            "are for simulated fields",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing PSF",
        "no PSF given",
        "catalogue without positions",
        "catalogue from another image",
        "unknown engine",
        "bad shear",
        "mixed inputs",
    ],
)
def test_bad_input(case, field_files, tmp_path, capsys):
    args, match = _bad(field_files, tmp_path)[case]
    out = tmp_path / "x.json"
    code, _, err = run_cli(
        ["compare", *args, "--flaggers", "sextractor", "--json", out, "--quiet"], capsys
    )
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and match in err
    assert not out.exists()


def test_noise_correction_fields_are_keyed_by_truth_identity():
    """A galaxy's field depends on its true identity, turned for the rotated member."""
    from blendflag.shear.inputs import paired_noise_fields

    keys = np.array([0, 1, 0, 2, 1, 3, -1, -1])
    rotated = np.array([False, True, True, False, False, False, False, False])
    sigma = np.array([1.0, 2.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0])
    fields = paired_noise_fields(keys, rotated, sigma, 9, seed=4)
    assert fields.shape == (8, 9, 9) and fields.dtype == np.float32
    np.testing.assert_allclose(fields[2], np.rot90(fields[0], -1))
    np.testing.assert_allclose(fields[1], np.rot90(fields[4], -1))  # the right one is turned
    assert fields[1].std() == pytest.approx(2 * fields[0].std(), rel=0.5)  # own sigma
    # unmatched detections get fields of their own
    assert abs(np.corrcoef(fields[6].ravel(), fields[7].ravel())[0, 1]) < 0.4
    assert abs(np.corrcoef(fields[0].ravel(), fields[3].ravel())[0, 1]) < 0.4
    # detection order does not matter: the +g and -g images detect in other orders
    order = np.array([5, 3, 0, 1, 2, 4])
    again = paired_noise_fields(keys[order], rotated[order], sigma[order], 9, seed=4)
    np.testing.assert_array_equal(again, fields[order])
    other_seed = paired_noise_fields(keys, rotated, sigma, 9, seed=5)
    assert abs(np.corrcoef(fields[0].ravel(), other_seed[0].ravel())[0, 1]) < 0.4


@pytest.mark.slow
def test_simulated_compare_keeps_stamps_inside_each_half(small_run):
    data = json.loads(small_run["json"].read_text())
    assert data["input"]["margin"] == 26  # half of the 51-px stamps, plus one
    # network flaggers see the field at the depth its truth defines blends at
    assert data["input"]["reference_noise"] == 14.0 and data["input"]["noise_sigma"] == 2.0


def test_default_selections_leave_out_flaggers_invalid_on_metacal_images():
    """compare selects on metacal images: only flaggers valid there are in the default set.

    The one-class and Siamese models were trained on ordinary stamps only
    (`evaluate --metacal`: Siamese blend recall 0.15 there); VGG16 was
    fine-tuned on metacal images and stays.
    """
    from blendflag.commands.compare import _default_flaggers
    from blendflag.config import load_pipeline_config
    from blendflag.plugins import get_flaggers, get_plugin_manager

    pm = get_plugin_manager()
    names = _default_flaggers(pm, load_pipeline_config(None))
    assert names[:2] == ["sextractor", "vgg16"]
    assert "oneclass" not in names and "siamese" not in names
    classes = get_flaggers(pm)
    assert not classes["siamese"].metacal_safe and not classes["oneclass"].metacal_safe
