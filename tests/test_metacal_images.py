"""Metacalibration images for flaggers: ``metacal_stamps`` and ``evaluate --metacal``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blendflag.config import load_pipeline_config
from blendflag.errors import BlendflagError
from blendflag.shear.metacal_images import metacal_stamps
from blendflag.simulate.galaxies import psf_image
from blendflag.simulate.presets import load_dataset
from blendflag.simulate.stamps import simulate_stamps
from blendflag_plugins.metacal_galsim import GalSimMetacal
from tests.conftest import run_cli


def _frame_lag1(stamps):
    """Correlation of horizontally adjacent pixels in the top 3 rows (pure noise there)."""
    rows = np.asarray(stamps)[:, :3, :].reshape(-1, stamps.shape[-1])
    return float(np.corrcoef(rows[:, :-1].ravel(), rows[:, 1:].ravel())[0, 1])


@pytest.fixture(scope="module")
def great3_stamps():
    return simulate_stamps("great3", 12, seed=31, noise=14.0)


def test_noshear_images_are_smooth_versions_of_the_stamps(great3_stamps):
    stamps, truth = great3_stamps
    cfg = load_dataset("great3")
    shear = load_pipeline_config(None).shear
    images, rendered = metacal_stamps(
        GalSimMetacal,
        shear,
        stamps,
        psf_image(cfg),
        cfg.pixel_scale,
        np.asarray(truth["NOISE_SIGMA"]),
        4,
    )
    assert rendered.all() and images.shape == stamps.shape and images.dtype == np.float32
    # white noise in, correlated noise out (deconvolve, reconvolve, noise correction)
    assert abs(_frame_lag1(stamps)) < 0.1 and _frame_lag1(images) > 0.3
    # the galaxies stay where they were and keep their flux (the reconvolution kernel
    # has unit flux): the central 21x21 px sums agree to within the noise
    inner = (slice(None), slice(15, 36), slice(15, 36))
    flux_in, flux_out = stamps[inner].sum(axis=(1, 2)), images[inner].sum(axis=(1, 2))
    noise = 14.0 * 21 * np.sqrt(2.0)  # two noise fields' worth over 441 pixels
    assert np.all(np.abs(flux_out - flux_in) < 5 * noise + 0.1 * np.abs(flux_in))
    same = metacal_stamps(
        GalSimMetacal,
        shear,
        stamps,
        psf_image(cfg),
        cfg.pixel_scale,
        np.asarray(truth["NOISE_SIGMA"]),
        4,
    )[0]
    assert np.array_equal(same, images)  # seeded
    sheared = metacal_stamps(
        GalSimMetacal,
        shear,
        stamps,
        psf_image(cfg),
        cfg.pixel_scale,
        np.asarray(truth["NOISE_SIGMA"]),
        4,
        version="1p",
    )[0]
    assert not np.array_equal(sheared, images)
    with pytest.raises(BlendflagError, match="unknown metacal version"):
        metacal_stamps(
            GalSimMetacal, shear, stamps, psf_image(cfg), cfg.pixel_scale, 14.0, 4, version="3p"
        )


def test_undersampled_psf_is_a_clear_error():
    """The Euclid-like preset's Airy core is 1.7 px wide: metacal cannot reconvolve it."""
    stamps, truth = simulate_stamps("euclid", 4, seed=3)
    cfg = load_dataset("euclid")
    with pytest.raises(BlendflagError, match="metacalibration cannot use this PSF"):
        metacal_stamps(
            GalSimMetacal,
            load_pipeline_config(None).shear,
            stamps,
            psf_image(cfg),
            cfg.pixel_scale,
            np.asarray(truth["NOISE_SIGMA"]),
            1,
        )


def test_evaluate_on_metacal_images(tmp_path, capsys):
    out = tmp_path / "e.json"
    code, _, err = run_cli(
        [
            "evaluate",
            "--dataset",
            "great3",
            "--n",
            "24",
            "--seed",
            "5",
            "--methods",
            "sextractor",
            "--metacal",
            "--json",
            out,
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    data = json.loads(out.read_text())
    info = data["data"]["metacal"]
    assert info == {"version": "noshear", "engine": "metacal", "n_not_rendered": 0}
    assert data["n"] == 24 and "sextractor" in data["methods"]


@pytest.mark.parametrize(
    "args, match",
    [
        (["--dataset", "euclid", "--metacal"], "metacalibration cannot use this PSF"),
        (["--dataset", "great3", "--metacal", "9p"], "unknown metacal version"),
    ],
)
def test_evaluate_metacal_bad_input(tmp_path, capsys, args, match):
    out = tmp_path / "e.json"
    code, _, err = run_cli(
        ["evaluate", "--n", "8", "--methods", "sextractor", "--json", out, "--quiet", *args], capsys
    )
    assert code == 2 and match in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_compare_refuses_an_undersampled_psf(tmp_path, capsys):
    out = tmp_path / "c.json"
    code, _, err = run_cli(
        [
            "compare",
            "--dataset",
            "euclid",
            "--n-galaxies",
            "40",
            "--flaggers",
            "sextractor",
            "--json",
            out,
            "--quiet",
        ],
        capsys,
    )
    assert code == 2 and "metacalibration cannot use this PSF" in err
    assert "Traceback" not in err and not out.exists()
