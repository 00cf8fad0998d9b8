"""``simulate`` and ``simulate-field`` on the command line."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from blendflag.simulate.stamps import read_stamps
from tests.conftest import run_cli as _run_cli


def run_cli(args, capsys):
    """Like ``tests.conftest.run_cli``, also for argparse's own exit on bad options."""
    try:
        return _run_cli(args, capsys)
    except SystemExit as exc:
        out, err = capsys.readouterr()
        return exc.code, out, err


def test_simulate_writes_stamps_truth_and_config(tmp_path, capsys):
    out = tmp_path / "s.fits"
    code, stdout, err = run_cli(
        [
            "simulate",
            "--dataset",
            "cfis",
            "--n",
            16,
            "--seed",
            3,
            "--noise",
            "grid",
            "--quiet",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    assert "16 stamps (8 blends, 4 singles, 4 separated)" in stdout
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "STAMPS", "TRUTH", "CONFIG"]
        h = hdul[0].header
        assert (h["DATASET"], h["SEED"], h["NSTAMPS"], h["NOISE"]) == ("cfis_study", 3, 16, "grid")
        assert "BFVERS" in h
        assert hdul["STAMPS"].data.dtype == np.dtype(">f4")
        assert hdul["STAMPS"].data.shape == (16, 51, 51)
        cols = hdul["TRUTH"].columns.names
        for name in (
            "LABEL",
            "KIND",
            "N_SOURCES",
            "SEPARATION",
            "FLUX1",
            "FLUX2",
            "SNR",
            "NOISE_SIGMA",
        ):
            assert name in cols
    stamps, truth, config = read_stamps(out)
    assert stamps.shape == (16, 51, 51) and len(truth) == 16
    assert config.name == "cfis_study" and config.pixel_scale == pytest.approx(0.187)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.fits"]


def test_simulate_same_seed_same_bytes(tmp_path, capsys):
    paths = [tmp_path / f"{k}.fits" for k in ("a", "b", "c")]
    for path, seed in zip(paths, (7, 7, 8), strict=True):
        code, _, err = run_cli(
            [
                "simulate",
                "--dataset",
                "great3",
                "--n",
                12,
                "--seed",
                seed,
                "--quiet",
                "--out",
                path,
            ],
            capsys,
        )
        assert code == 0, err
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_simulate_user_yaml_and_plot(tmp_path, capsys):
    yaml_path = tmp_path / "tiny.yaml"
    yaml_path.write_text(
        "pixel_scale: 0.2\nstamp_size: 31\nnoise_grid: [4, 30]\ndefault_noise: 10\n"
    )
    out, png = tmp_path / "t.fits", tmp_path / "t.png"
    code, _, err = run_cli(
        [
            "simulate",
            "--dataset",
            yaml_path,
            "--n",
            8,
            "--seed",
            1,
            "--noise",
            "12.5",
            "--plot",
            png,
            "--quiet",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stamps, truth, config = read_stamps(out)
    assert stamps.shape == (8, 31, 31) and (truth["NOISE_SIGMA"] == 12.5).all()
    assert config.name == "tiny"


def _bad_simulate_cases(tmp_path):
    (tmp_path / "adir").mkdir()
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("pixel_scale: 0\n")
    return [
        (["--dataset", "hubble", "--n", 4, "--seed", 1], "unknown dataset"),
        (["--dataset", "cfis", "--n", 0, "--seed", 1], "--n"),
        (["--dataset", "cfis", "--n", -3, "--seed", 1], "--n"),
        (["--dataset", "cfis", "--n", "many", "--seed", 1], "invalid int"),
        (["--dataset", "cfis", "--n", 4, "--seed", 1, "--noise", "-2"], "--noise"),
        (["--dataset", "cfis", "--n", 4, "--seed", 1, "--noise", "loud"], "--noise"),
        (["--dataset", "cfis", "--n", 4, "--seed", 1, "--fractions", "1,1"], "--fractions"),
        (["--dataset", "cfis", "--n", 4, "--seed", 1, "--workers", "0"], "--workers"),
        (["--dataset", bad_yaml, "--n", 4, "--seed", 1], "pixel_scale"),
        (["--dataset", "cfis", "--n", 4], "required"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_simulate_bad_arguments_exit_2(tmp_path, capsys, case):
    args, match = _bad_simulate_cases(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_cli(["simulate", *args, "--quiet", "--out", tmp_path / "o.fits"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    "out, match", [("adir", "is a directory"), ("missing/o.fits", "does not exist")]
)
def test_simulate_bad_output_exit_2(tmp_path, capsys, out, match):
    (tmp_path / "adir").mkdir()
    code, _, err = run_cli(
        [
            "simulate",
            "--dataset",
            "cfis",
            "--n",
            4,
            "--seed",
            1,
            "--quiet",
            "--out",
            tmp_path / out,
        ],
        capsys,
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and match in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]
    assert not list((tmp_path / "adir").iterdir())


def test_simulate_field_writes_directory(tmp_path, capsys):
    out = tmp_path / "field"
    code, stdout, err = run_cli(
        [
            "simulate-field",
            "--dataset",
            "cfis",
            "--n-galaxies",
            30,
            "--shear",
            "0.02,0",
            "--seed",
            4,
            "--rotated-pairs",
            "--size",
            300,
            "--quiet",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    assert "30 galaxies" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "image.fits",
        "psf.fits",
        "truth.fits",
        "weight.fits",
    ]
    with fits.open(out / "truth.fits") as hdul:
        truth = hdul["TRUTH"].data
        assert hdul[0].header["SHEAR1"] == 0.02 and hdul[0].header["ROTPAIRS"]
        assert truth["ROTATED"].sum() == 15
    with fits.open(out / "image.fits") as hdul:
        assert hdul[0].data.shape == (300, 600) and hdul[0].header["SEED"] == 4


@pytest.mark.parametrize(
    "args, match",
    [
        (["--shear", "0.02"], "two numbers"),
        (["--shear", "a,b"], "two numbers"),
        (["--shear", "0.8,0.8"], "< 1"),
        (["--shear", "0.02,0", "--dataset", "sdss"], "unknown dataset"),
        (["--shear", "0.02,0", "--n-galaxies", "0"], "--n-galaxies"),
        (["--shear", "0.02,0", "--n-galaxies", "7", "--rotated-pairs"], "even"),
        (["--shear", "0.02,0", "--noise", "-1"], "--noise"),
        (["--n-galaxies", "4"], "required"),
    ],
)
def test_simulate_field_bad_arguments_exit_2(tmp_path, capsys, args, match):
    argv = [
        "simulate-field",
        "--dataset",
        "cfis",
        "--n-galaxies",
        "10",
        "--seed",
        "1",
        *args,
        "--quiet",
        "--out",
        tmp_path / "f",
    ]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and match in err, err
    assert list(tmp_path.iterdir()) == []


def test_simulate_field_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("not a directory")
    code, _, err = run_cli(
        [
            "simulate-field",
            "--dataset",
            "cfis",
            "--n-galaxies",
            4,
            "--shear",
            "0,0",
            "--seed",
            1,
            "--quiet",
            "--out",
            tmp_path / "f",
        ],
        capsys,
    )
    assert code == 2 and "not a directory" in err
    assert (tmp_path / "f").read_text() == "not a directory"


def test_simulate_field_shear_pairs_density_and_margin(tmp_path, capsys):
    """--shear-pairs writes the +g and -g twins; --density sets the size; margin as compare."""
    base = [
        "simulate-field",
        "--dataset",
        "cfis",
        "--n-galaxies",
        "60",
        "--seed",
        "5",
        "--shear",
        "0.02,0",
        "--noise",
        "2",
        "--rotated-pairs",
        "--quiet",
    ]
    code, _, err = _run_cli([*base, "--shear-pairs", "--out", tmp_path / "pair"], capsys)
    assert code == 0, err
    plus, minus = (fits.getheader(tmp_path / "pair" / s / "image.fits") for s in ("plus", "minus"))
    assert (plus["SHRSIGN"], minus["SHRSIGN"]) == (1, -1)
    assert (plus["SHEAR1"], minus["SHEAR1"]) == (0.02, -0.02)
    assert plus["REFNOISE"] == 14.0 and plus["NOISE"] == 2.0
    truth = {s: fits.getdata(tmp_path / "pair" / s / "truth.fits", 1) for s in ("plus", "minus")}
    np.testing.assert_array_equal(truth["plus"]["FLUX"], truth["minus"]["FLUX"])
    x = np.asarray(truth["plus"]["X"])
    xh = np.where(
        truth["plus"]["ROTATED"],
        x - fits.getdata(tmp_path / "pair" / "plus" / "image.fits").shape[1] // 2,
        x,
    )
    assert xh.min() >= 26  # compare's margin: half a 51-px stamp plus one
    code, _, err = _run_cli([*base, "--density", "90", "--out", tmp_path / "dense"], capsys)
    assert code == 0, err
    dense = fits.getdata(tmp_path / "dense" / "image.fits")
    sparse = fits.getdata(tmp_path / "pair" / "plus" / "image.fits")
    assert dense.shape[0] < sparse.shape[0]
    code, _, err = _run_cli([*base, "--density", "-3", "--out", tmp_path / "bad"], capsys)
    assert code == 2 and err.startswith("error:") and "density" in err
