"""The command line: detect, flag, version, and one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from blendflag import __version__
from blendflag.io.catalog import read_catalogue
from tests.conftest import run_cli


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["--version"], capsys)
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_commands(capsys):
    code, out, _ = run_cli([], capsys)
    assert code == 0
    for cmd in ("plugins", "detect", "flag", "train"):
        assert cmd in out


def test_detect_finds_sources_and_flags_close_pairs(small_field, capsys):
    out = small_field["tmp"] / "cat.fits"
    code, _, err = run_cli(
        ["detect", small_field["image"], "--weight", small_field["weight"], "--out", out], capsys
    )
    assert code == 0, err
    cat = read_catalogue(out)
    assert cat.format == "FITS_LDAC"
    for col in (
        "NUMBER",
        "X_IMAGE",
        "Y_IMAGE",
        "FLUX_AUTO",
        "FLAGS",
        "A_IMAGE",
        "B_IMAGE",
        "THETA_IMAGE",
    ):
        assert col in cat.colnames
    x, y = cat.positions()
    truth = np.array(small_field["positions"])  # 0-based
    # every isolated source found at its 1-based position
    isolated = truth[:-4]
    d = np.hypot(isolated[:, None, 0] + 1 - x[None], isolated[:, None, 1] + 1 - y[None])
    assert (d.min(axis=1) < 0.3).all()
    # the two close pairs are deblended and carry FLAGS value 2, isolated sources do not
    flags = cat.column("FLAGS")
    near_pairs = np.hypot(x - 224, y - 62) < 8
    near_pairs |= np.hypot(x - 224, y - 203) < 8
    assert ((flags[near_pairs] & 2) != 0).sum() >= 3
    assert ((flags[~near_pairs] & 2) == 0).all()


def test_flag_adds_sextractor_column(detected, capsys):
    out = detected["tmp"] / "flagged.fits"
    code, stdout, err = run_cli(
        [
            "flag",
            detected["catalogue"],
            "--image",
            detected["image"],
            "--out",
            out,
            "--flaggers",
            "sextractor",
        ],
        capsys,
    )
    assert code == 0, err
    assert "BLEND_SEXTRACTOR" in stdout
    cat = read_catalogue(out)
    np.testing.assert_array_equal(cat.column("BLEND_SEXTRACTOR"), (cat.column("FLAGS") & 2) != 0)
    with fits.open(out) as hdul:
        assert hdul["LDAC_OBJECTS"].header["BF_VERS"] == __version__


def test_flag_in_place(detected, capsys):
    code, _, err = run_cli(
        ["flag", detected["catalogue"], "--image", detected["image"], "--in-place"], capsys
    )
    assert code == 0, err
    assert "BLEND_SEXTRACTOR" in read_catalogue(detected["catalogue"]).colnames


def test_config_file_is_used(small_field, tmp_path, capsys):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("detect:\n  thresh: 50.0\n")
    out = tmp_path / "c.fits"
    code, _, err = run_cli(["detect", small_field["image"], "--out", out, "--config", cfg], capsys)
    assert code == 0, err
    n_high = len(read_catalogue(out, require_rows=False))
    code, _, err = run_cli(["detect", small_field["image"], "--out", out], capsys)
    assert len(read_catalogue(out)) > n_high


def _nan_image(tmp_path, small_field):
    with fits.open(small_field["image"]) as h:
        data = h[0].data.copy()
    data[10:12, 10:12] = np.nan
    path = tmp_path / "nan.fits"
    fits.PrimaryHDU(data).writeto(path)
    return path


def _bad_cases(detected, tmp_path):
    img, cat = detected["image"], detected["catalogue"]
    notfits = tmp_path / "notfits.fits"
    notfits.write_text("hello")
    truncated = tmp_path / "trunc.fits"
    truncated.write_bytes(img.read_bytes()[:5000])
    nopos = tmp_path / "nopos.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.BinTableHDU.from_columns(
                [fits.Column(name="FLUX_AUTO", format="E", array=np.ones(3))]
            ),
        ]
    ).writeto(nopos)
    empty = tmp_path / "empty.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.BinTableHDU.from_columns(
                [
                    fits.Column(name="X_IMAGE", format="E", array=np.zeros(0)),
                    fits.Column(name="Y_IMAGE", format="E", array=np.zeros(0)),
                ]
            ),
        ]
    ).writeto(empty)
    badyaml = tmp_path / "bad.yaml"
    badyaml.write_text("detect: [unclosed\n")
    badkey = tmp_path / "badkey.yaml"
    badkey.write_text("detect:\n  treshold: 2\n")
    badval = tmp_path / "badval.yaml"
    badval.write_text("detect:\n  thresh: high\n")
    wronglayout = tmp_path / "layout.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3)))]).writeto(wronglayout)
    small = tmp_path / "small.fits"
    fits.PrimaryHDU(np.zeros((20, 20), np.float32)).writeto(small)
    nan = _nan_image(tmp_path, detected)
    out = tmp_path / "out.fits"
    return {
        "missing image": (["detect", tmp_path / "nope.fits", "--out", out], "image not found"),
        "not a FITS file": (["detect", notfits, "--out", out], "not a readable FITS file"),
        "truncated FITS": (["detect", truncated, "--out", out], "not a readable FITS file"),
        "NaN pixels": (["detect", nan, "--out", out], "NaN/inf pixels"),
        "missing catalogue": (
            ["flag", tmp_path / "none.fits", "--image", img, "--out", out],
            "catalogue not found",
        ),
        "wrong HDU layout": (
            ["flag", wronglayout, "--image", img, "--out", out],
            "not a binary table",
        ),
        "missing X_IMAGE": (["flag", nopos, "--image", img, "--out", out], "no X_IMAGE column"),
        "empty catalogue": (["flag", empty, "--image", img, "--out", out], "no objects"),
        "unknown flagger": (
            ["flag", cat, "--image", img, "--out", out, "--flaggers", "magic"],
            "unknown flagger 'magic'",
        ),
        "invalid YAML": (["detect", img, "--out", out, "--config", badyaml], "invalid YAML"),
        "unknown config key": (
            ["detect", img, "--out", out, "--config", badkey],
            "unknown key detect.treshold",
        ),
        "bad config value": (
            ["detect", img, "--out", out, "--config", badval],
            "detect.thresh: expected a number",
        ),
        "missing config": (
            ["detect", img, "--out", out, "--config", tmp_path / "no.yaml"],
            "config file not found",
        ),
        "catalogue and image differ": (
            ["flag", cat, "--image", small, "--out", out],
            "catalogue and image do not match",
        ),
        "output dir missing": (
            ["detect", img, "--out", tmp_path / "no" / "c.fits"],
            "directory does not exist",
        ),
        "unknown option": (["detect", img, "--out", out, "--frobnicate"], "unrecognized"),
        "no output named": (["flag", cat, "--image", img], "--out"),
        "NaN image in flag": (["flag", cat, "--image", nan, "--out", out], "NaN/inf pixels"),
    }


CASES = [
    "missing image",
    "not a FITS file",
    "truncated FITS",
    "NaN pixels",
    "missing catalogue",
    "wrong HDU layout",
    "missing X_IMAGE",
    "empty catalogue",
    "unknown flagger",
    "invalid YAML",
    "unknown config key",
    "bad config value",
    "missing config",
    "catalogue and image differ",
    "output dir missing",
    "unknown option",
    "no output named",
    "NaN image in flag",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line_exit_2(case, detected, tmp_path, capsys):
    args, match = _bad_cases(detected, tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) if case == "unknown option" else _nullcontext() as exc:
        code, _, err = run_cli(args, capsys)
    if case == "unknown option":
        code = exc.value.code
        err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert match in lines[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_nan_masked_by_zero_weight_is_fine(detected, tmp_path, capsys):
    nan = _nan_image(tmp_path, detected)
    with fits.open(detected["weight"]) as h:
        w = h[0].data.copy()
    w[10:12, 10:12] = 0
    wpath = tmp_path / "w.fits"
    fits.PrimaryHDU(w).writeto(wpath)
    code, _, err = run_cli(["detect", nan, "--weight", wpath, "--out", tmp_path / "c.fits"], capsys)
    assert code == 0, err


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
