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
