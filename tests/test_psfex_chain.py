"""The real chain end to end: simulate-field, SExtractor, PSFEx, then flag and compare."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from blendflag.io.catalog import read_catalogue
from blendflag.psf.psfex_chain import SEX_PARAMETERS, find_binary, main, write_configs
from tests.conftest import run_cli

needs_chain = pytest.mark.skipif(
    find_binary("source-extractor", "sex") is None or find_binary("psfex") is None,
    reason="source-extractor and psfex (Debian packages) not on PATH",
)


def test_configs_ask_for_what_psfex_needs(tmp_path):
    paths = write_configs(tmp_path, psf_degree=3, flag_image=True)
    sex = paths["sex"].read_text()
    assert "CATALOG_TYPE       FITS_LDAC" in sex and str(paths["param"]) in sex
    params = paths["param"].read_text().split()
    assert any(p.startswith("VIGNET(") for p in params) and "IMAFLAGS_ISO" in params
    psfex = paths["psfex"].read_text()
    assert "PSFVAR_DEGREES     3" in psfex and "PSFVAR_KEYS        X_IMAGE,Y_IMAGE" in psfex
    assert "IMAFLAGS_ISO" not in write_configs(tmp_path / ".", 2)["param"].read_text()
    assert "VIGNET(45,45)" in SEX_PARAMETERS


def test_missing_image_is_a_one_line_error(tmp_path, capsys):
    code = main([str(tmp_path / "nope.fits"), "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


@needs_chain
def test_simulate_sextractor_psfex_flag_compare(tmp_path, capsys):
    tile = tmp_path / "tile"
    code, out, _ = run_cli(
        [
            "simulate-field", "--dataset", "cfis", "--n-galaxies", 50, "--shear", "0.02,0",
            "--seed", 4, "--noise", 5, "--size", 600, "--varying-psf", "--stars", 60,
            "--quiet", "--out", tile,
        ],
        capsys,
    )  # fmt: skip
    assert code == 0 and "60 stars" in out and "varying PSF" in out
    assert main([str(tile / "image.fits"), "--weight", str(tile / "weight.fits"),
                 "--out-dir", str(tile)]) == 0  # fmt: skip
    capsys.readouterr()
    ldac, psf = tile / "image.ldac", tile / "image.psf"
    cat = read_catalogue(ldac)
    assert cat.format == "FITS_LDAC" and "VIGNET" in cat.colnames and len(cat) > 80
    assert fits.getheader(psf, 1)["ACCEPTED"] >= 20  # PSFEx found the stars

    flagged = tmp_path / "flagged.ldac"
    code, out, err = run_cli(
        ["flag", ldac, "--image", tile / "image.fits", "--weight", tile / "weight.fits",
         "--flaggers", "sextractor", "--out", flagged, "--quiet"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "BLEND_SEXTRACTOR" in read_catalogue(flagged).colnames

    report = tmp_path / "compare.json"
    code, out, err = run_cli(
        ["compare", "--image", tile / "image.fits", "--psf", psf, "--catalogue", ldac,
         "--weight", tile / "weight.fits", "--true-shear", "0.02,0", "--flaggers", "sextractor",
         "--workers", 1, "--bootstrap", 20, "--quiet", "--json", report],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["true_shear"] == [0.02, 0.0]
    assert result["input"]["psf_model"].startswith("PSFEx image.psf")
    selections = {s["name"]: s for s in result["selections"]}
    assert np.isfinite(selections["all"]["m"]) and selections["all"]["n"] > 30
    # the shear catalogue's cuts were made, each version on its own S/N and size
    cuts = result["shear_cuts"]
    assert cuts["applied"] and cuts["in_response"] and cuts["size_cut"] == "applied"
    assert 30 < cuts["kept_noshear"] < cuts["measured"]


@needs_chain
def test_compare_rejects_true_shear_without_data(capsys):
    code, _, err = run_cli(["compare", "--true-shear", "0.02,0"], capsys)
    assert code == 2 and "--true-shear" in err
