"""Bad input through the command line: exit 2, one ``error:`` line, nothing written or lost.

Every case runs ``blendflag-shear`` in-process and checks the promise of the
README: exit code 2, exactly one stderr line and it starts with ``error:``, no
traceback, every file in the working directory byte-for-byte unchanged (its
SHA-256) and no new file (no output, no temporary file) left behind.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendflag.errors import CatalogueError
from blendflag.io.catalog import read_catalogue, write_ldac
from tests.conftest import gaussian_image, run_cli
from tests.test_psf_checks import gaussian_psf

POSITIONS = [(40.0 + 45 * i, 40.0 + 45 * j) for i in range(4) for j in range(4)]


def _catalogue(path, x, y):
    write_ldac(Table({"NUMBER": np.arange(1, len(x) + 1), "X_IMAGE": x, "Y_IMAGE": y}), path)


@pytest.fixture
def files(tmp_path):
    """Inputs of every kind, good and bad, in ``tmp_path``; returns {name: path}."""
    p = {k: tmp_path / f"{k}.fits" for k in ("image", "weight", "psf", "cat")}
    image = gaussian_image((160, 160), [(x, y) for x, y in POSITIONS if x < 160 and y < 160])
    fits.PrimaryHDU(image, header=fits.Header({"PIXSCALE": 0.187})).writeto(p["image"])
    fits.PrimaryHDU(np.full(image.shape, 0.01, np.float32)).writeto(p["weight"])
    fits.PrimaryHDU(gaussian_psf(25)).writeto(p["psf"])
    x = np.array([41.0, 86.0, 131.0, 41.0, 86.0])
    _catalogue(p["cat"], x, x[::-1].copy())
    bad_psfs = {
        "psf_off1": gaussian_psf(25, dx=1.0),
        "psf_off15": gaussian_psf(51, dx=15.0),
        "psf_even": gaussian_psf(50),
        "psf_3x3": gaussian_psf(25)[11:14, 11:14],
        "psf_nan": np.where(np.eye(25) > 0, np.nan, gaussian_psf(25)),
        "psf_zero": np.zeros((25, 25)),
    }
    for name, arr in bad_psfs.items():
        p[name] = tmp_path / f"{name}.fits"
        fits.PrimaryHDU(arr).writeto(p[name])
    p["cat_text"] = tmp_path / "cat_text.fits"
    Table({"X_IMAGE": ["41", "86"], "Y_IMAGE": [41.0, 86.0]}).write(p["cat_text"])
    p["cat_nan"] = tmp_path / "cat_nan.fits"
    _catalogue(p["cat_nan"], np.array([41.0, np.nan]), np.array([41.0, 86.0]))
    p["trunc"] = tmp_path / "trunc.fits"
    p["trunc"].write_bytes(p["image"].read_bytes()[:8000])
    p["notfits"] = tmp_path / "notfits.fits"
    p["notfits"].write_text("not a FITS file\n")
    p["config"] = tmp_path / "config.yaml"
    p["config"].write_text("flag:\n  flaggers: [sextractor]\n")
    p["link"] = tmp_path / "link.fits"
    os.symlink(p["weight"], p["link"])
    p["full"] = tmp_path / "full"
    p["full"].mkdir()
    (p["full"] / "old.txt").write_text("an earlier run\n")
    p["dataset"] = p["full"] / "mine.yaml"
    p["dataset"].write_text("base: cfis\n")
    p["tiles"] = tmp_path / "tiles"  # a tile whose output <name>.fits would be its image
    p["tiles"].mkdir()
    for name, src in (("t1.fits", "image"), ("psf.fits", "psf"), ("catalogue.fits", "cat")):
        (p["tiles"] / name).write_bytes(p[src].read_bytes())
    # a truth table from another tool beside a tile, and others that are no truth table
    p["truth_other"] = tmp_path / "truth_other.fits"
    Table({"RA": [150.1, 150.2], "DEC": [2.1, 2.2], "MAG": [21.0, 22.0]}).write(p["truth_other"])
    p["truth_text"] = tmp_path / "truth_text.fits"
    Table({"X": ["41", "86"], "Y": [41.0, 86.0]}).write(p["truth_text"])
    p["other"] = tmp_path / "other"
    p["other"].mkdir()
    for name, src in (("t1.fits", "image"), ("psf.fits", "psf"), ("truth.fits", "truth_other")):
        (p["other"] / name).write_bytes(p[src].read_bytes())
    p["tmp"] = tmp_path
    return p


def _snapshot(root) -> dict:
    """``{relative path: sha256}`` of every file under ``root`` (symlinks by their target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.isdir(path):
                out[rel] = "dir"
            else:
                with open(path, "rb") as fh:
                    out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


C = "compare --flaggers sextractor --image {image} --psf {psf}"
#: (argv with {placeholders}, a fragment of the error line)
CASES = [
    # outputs that are inputs, through relative paths and symlinks
    ("detect {image} --out {image}", "is the IMAGE input"),
    ("detect {image} --weight {weight} --out {weight}", "is the --weight input"),
    ("detect {image} --weight {link} --out {weight}", "is the --weight input"),
    ("detect {image} --out {tmp}/full/../image.fits", "is the IMAGE input"),
    ("detect {image} --config {config} --out {config}", "is the --config input"),
    ("flag {cat} --image {image} --out {image} --flaggers sextractor", "is the --image input"),
    ("flag {cat} --image {image} --out {cat} --flaggers sextractor", "is the CATALOGUE input"),
    ("flag {cat} --image {image} --weight {link} --out {weight}", "is the --weight input"),
    (C + " --json {image}", "is the --image input"),
    (C + " --plot {psf}", "is the --psf input"),
    (C + " --catalogue {cat} --catalogue-out {cat}", "is the --catalogue input"),
    (C + " --weight {weight} --catalogue-out {link}", "is the --weight input"),
    (C + " --json {tmp}/o.json --plot {tmp}/o.json", "name the same file"),
    ("evaluate --data {image} --json {image}", "is the --data input"),
    ("simulate --dataset cfis --n 4 --seed 1 --out {config} --config {config}", "--config input"),
    (
        "simulate-field --dataset {dataset} --n-galaxies 4 --shear 0.02,0 --seed 1 "
        "--out {full} --overwrite",
        "inside the output directory",
    ),
    (
        "simulate-field --dataset cfis --n-galaxies 4 --shear 0.02,0 --seed 1 --out {full}",
        "not empty; pass --overwrite",
    ),
    ("flag --tiles {tiles}/t1.fits --out-dir {tiles} --flaggers sextractor", "is the image"),
    ("compare --tiles {tiles}/t1.fits --out-dir {tiles} --flaggers sextractor", "is the image"),
    (
        "compare --tiles {tiles}/t1.fits --out-dir {tmp}/o --json {tiles}/psf.fits",
        "is the psf of tile t1 input",
    ),
    # PSF images
    (C.replace("{psf}", "{psf_off1}"), "1.00 px from its central pixel"),
    (C.replace("{psf}", "{psf_off15}"), "15.00 px from its central pixel"),
    (C.replace("{psf}", "{psf_even}"), "needs odd sides"),
    (C.replace("{psf}", "{psf_3x3}"), "3x3 for a FWHM"),
    (C.replace("{psf}", "{psf_nan}"), "25 NaN/inf pixels"),
    (C.replace("{psf}", "{psf_zero}"), "no positive flux"),
    # catalogue columns
    (C + " --catalogue {cat_text}", "column X_IMAGE holds"),
    (C + " --catalogue {cat_nan}", "column X_IMAGE has 1 NaN/inf"),
    ("flag {cat_text} --image {image} --out {tmp}/o.fits --flaggers sextractor", "X_IMAGE holds"),
    # unreadable files: one line, no library advice
    ("detect {trunc} --out {tmp}/o.fits", "truncated"),
    ("detect {notfits} --out {tmp}/o.fits", "not a readable FITS file"),
    # numbers and lists, validated in one place
    ("compare --bootstrap -1", "--bootstrap must be 0"),
    ("compare --bootstrap 3", "--bootstrap must be 0"),
    (C + " --pixel-scale 0", "--pixel-scale must be a positive"),
    ("compare --pixel-scale -0.2", "--pixel-scale must be a positive"),
    ("compare --flaggers ''", "--flaggers names nothing"),
    ("compare --flaggers ,", "--flaggers names nothing"),
    ("compare --workers 0", "--workers must be at least 1"),
    ("compare --density -3", "--density must be"),
    ("compare --true-shear 0.02,0", "go with --image"),
    (C + " --true-shear 0.02", "two numbers G1,G2"),
    (C + " --true-shear 1.5,0", "shear"),
    ("evaluate --dataset cfis --n 0", "--n must be a positive"),
    ("evaluate --dataset cfis --n 4 --methods ''", "--methods names nothing"),
    ("flag {cat} --image {image} --out {tmp}/o.fits --threshold 2", "--threshold must be"),
    ("simulate --dataset cfis --n 100000000000 --seed 1 --out {tmp}/s.fits", "GiB of memory"),
    (
        "simulate-field --dataset cfis --n-galaxies 4 --shear 0.02,0 --seed 1 "
        "--size 10000000 --out {tmp}/f",
        "GiB of memory",
    ),
    ("simulate-field --dataset cfis --n-galaxies 4 --shear 0,0 --seed -1 --out {tmp}/f", "--seed"),
    ("bench --only ''", "--only names nothing"),
    ("bench --only ,", "--only names nothing"),
    ("train --dataset nosuch --out {tmp}/w.npz", "unknown dataset 'nosuch'"),
    ("train --max-minutes 0 --out {tmp}/w.npz", "--max-minutes must be"),
    # truth tables that simulate-field did not write: the missing columns named
    (C + " --truth {truth_other}", "truth_other.fits has no columns X, Y (needed: X, Y"),
    (C + " --truth {truth_text}", "column X is not numeric"),
    (C + " --truth {psf}", "has no binary table in HDU 1"),
    (C + " --truth {notfits}", "not a readable FITS file"),
    ("compare --tiles {other}/t1.fits --out-dir {tmp}/o --flaggers sextractor", "--no-truth"),
    ("compare --tiles {other}/t1.fits --out-dir {tmp}/o", "truth.fits has no columns X, Y"),
    ("compare --no-truth", "--no-truth goes with --tiles"),
    # values that start with a minus, in the space form: parsed, then checked
    ("compare --true-shear -0.02,0", "go with --image"),
    (C + " --true-shear -1.5,0", "|shear| must be < 1"),
    (C + " --shear -0.02,0", "leave them out with --image"),
    ("simulate-field --dataset cfis --n-galaxies 4 --shear -2,0 --seed 1 --out {tmp}/f", "< 1"),
]


def _argv(template: str, files: dict) -> list[str]:
    import shlex

    return shlex.split(template.format(**{k: str(v) for k, v in files.items()}))


@pytest.mark.parametrize(("template", "fragment"), CASES, ids=[c[0][:48] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(files, capsys, template, fragment):
    before = _snapshot(files["tmp"])
    code, _, err = run_cli(_argv(template, files), capsys)
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert fragment in lines[0]
    assert "=True" not in lines[0] and "allow_pickle" not in lines[0]
    assert _snapshot(files["tmp"]) == before


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


# ---------------------------------------------------------------------------
# catalogues of random column types, NaNs and no rows
# ---------------------------------------------------------------------------

_KINDS = st.sampled_from(["f8", "f4", "i4", "i2", "U3", "bool"])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(0, 4),
    kinds=st.tuples(_KINDS, _KINDS),
    nan_row=st.one_of(st.none(), st.integers(0, 3)),
    with_y=st.booleans(),
)
def test_any_catalogue_gives_finite_positions_or_one_catalogue_error(
    tmp_path, n, kinds, nan_row, with_y
):
    columns = {}
    for name, kind in zip(("X_IMAGE", "Y_IMAGE"), kinds, strict=True):
        values = np.arange(n, dtype="f8") + 10.0
        if nan_row is not None and nan_row < n and kind.startswith("f"):
            values[nan_row] = np.nan
        columns[name] = values.astype(kind) if kind != "bool" else values > 10
    if not with_y:
        del columns["Y_IMAGE"]
    path = tmp_path / f"cat_{n}_{kinds[0]}_{kinds[1]}_{nan_row}_{with_y}.fits"
    Table(columns).write(path, overwrite=True)
    try:
        x, y = read_catalogue(path).positions()
    except CatalogueError as exc:
        assert "\n" not in str(exc)
        return
    assert n > 0 and with_y
    assert all(k[0] in "fi" for k in kinds)
    assert x.dtype == np.float64 and len(x) == len(y) == n
    assert np.isfinite(x).all() and np.isfinite(y).all()


# ---------------------------------------------------------------------------
# files from other tools: truth tables, NOISE cards; signed values; too few cells
# ---------------------------------------------------------------------------


def test_no_truth_runs_tiles_without_their_truth_tables(files, capsys, monkeypatch):
    import blendflag.tiling.runner as runner
    from blendflag.errors import BlendflagError

    seen = []

    def fake_run_tiles(tiles, *args, **kwargs):
        seen.extend(tiles)
        raise BlendflagError("stopped by the test")

    monkeypatch.setattr(runner, "run_tiles", fake_run_tiles)
    argv = ["compare", "--tiles", f"{files['other']}/t1.fits", "--out-dir", f"{files['tmp']}/o"]
    code, _, err = run_cli([*argv, "--flaggers", "sextractor", "--no-truth"], capsys)
    assert (code, err) == (2, "error: stopped by the test\n")
    assert [t.truth for t in seen] == [None] and seen[0].psf


def _noise_image(tmp_path, noise):
    path = tmp_path / f"noise_{noise}.fits"
    image = gaussian_image((160, 160), POSITIONS[:3])
    header = fits.Header({"PIXSCALE": 0.187, "NOISE": noise})
    fits.PrimaryHDU(image, header=header).writeto(path)
    return path


@pytest.mark.parametrize(("card", "expected"), [(7.5, 7.5), ("high", None), (-1.0, None)])
def test_the_noise_card_is_read_without_a_truth_table(files, card, expected):
    from blendflag.cli import build_parser
    from blendflag.commands.compare_inputs import user_input
    from blendflag.plugins import get_plugin_manager

    image = _noise_image(files["tmp"], card)
    args = build_parser(get_plugin_manager()).parse_args(
        ["compare", "--image", str(image), "--psf", str(files["psf"])]
    )
    assert user_input(args).noise_sigma == expected


def test_a_tile_without_truth_gets_its_noise_card(files, monkeypatch):
    import blendflag.pipeline.compare as pipeline_compare
    from blendflag.config import PipelineConfig
    from blendflag.errors import BlendflagError
    from blendflag.plugins import get_plugin_manager
    from blendflag.tiling.settings import RunSettings
    from blendflag.tiling.tasks import compare_tile
    from blendflag.tiling.tile_list import Tile

    seen = []

    def fake_run_compare(pm, config, data, *args, **kwargs):
        seen.append(data)
        raise BlendflagError("stopped by the test")

    monkeypatch.setattr(pipeline_compare, "run_compare", fake_run_compare)
    pm = get_plugin_manager()
    settings = RunSettings.for_run(pm, PipelineConfig(), ["sextractor"], "metacal", 1)
    tile = Tile(name="n", image=str(_noise_image(files["tmp"], 7.5)), psf=str(files["psf"]))
    summary = compare_tile(tile, settings, str(files["tmp"] / "o"), "hash")
    assert summary["reason"] == "stopped by the test"
    assert seen[0].noise_sigma == 7.5 and seen[0].truth is None


def test_values_that_start_with_a_minus_parse_in_the_space_form(tmp_path, capsys):
    from blendflag.cli import join_signed_values

    assert join_signed_values(["--shear", "-0.02,0", "--seed", "1"]) == [
        "--shear=-0.02,0",
        "--seed",
        "1",
    ]
    for kept in (["--noise", "-3"], ["--bootstrap", "-1"], ["--a", "--b"], ["--", "--x", "-1,0"]):
        assert join_signed_values(kept) == kept  # what argparse takes already, and after --
    out = tmp_path / "f"
    argv = "simulate-field --dataset cfis --n-galaxies 2 --shear -0.02,0 --seed 1 --size 64"
    code, _, err = run_cli([*argv.split(), "--quiet", "--out", out], capsys)
    assert code == 0, err
    assert fits.getheader(out / "image.fits")["SHEAR1"] == -0.02


def test_too_few_cells_of_an_image_engine_say_so_and_what_to_do():
    from types import SimpleNamespace

    from blendflag.shear.paired import UnitSums, compare_statistics, unit_description

    rng = np.random.default_rng(1)
    sums = np.zeros((3, 15))
    sums[:, [0, 3, 6, 9, 12]] = 10.0  # ten objects per cell in every version
    cells = {"all": [UnitSums(np.arange(3), sums, 30, 1, "versions")]}
    (entry,) = compare_statistics(cells, 0.01, (0.02, 0.0), rng, 0)
    assert entry["m"] is None
    assert entry["null_reason"].startswith("too few cells: 3 measured units")
    for advice in ("whole cells, not objects", "larger image", "--tiles", "cell_size"):
        assert advice in entry["null_reason"]
    metadetect = SimpleNamespace(
        sum_layout="versions", meta={"cells": 4, "settings": {"cell_size": 200}}
    )
    assert unit_description(metadetect) == "200-px cells, 4 in the image"
    (entry,) = compare_statistics(
        cells, 0.01, (0.02, 0.0), rng, 0, units=unit_description(metadetect)
    )
    assert "(200-px cells, 4 in the image)" in entry["null_reason"]
    assert unit_description(SimpleNamespace(sum_layout="stamps", meta={})) is None
    # with shear.bootstrap_cell > 0 its rows are in the sky's cells: that advice instead
    metadetect.sky_cells = True  # the built-in engine's units are cells of the image
    sky = unit_description(metadetect, bootstrap_cell=100)
    (entry,) = compare_statistics(cells, 0.01, (0.02, 0.0), rng, 0, units=sky)
    assert entry["null_reason"].startswith("too few units: 3 measured")
    assert "shear.bootstrap_cell" in entry["null_reason"]
