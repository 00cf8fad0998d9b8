"""Many tiles: Dask gives the serial result bit for bit; a killed run resumes."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from astropy.io import fits

from blendflag.simulate.field import simulate_field
from blendflag.simulate.field_io import write_field
from blendflag.tiling.tile_list import read_tiles
from tests.conftest import run_cli

pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def tiles_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiles")
    for i in range(4):
        field = simulate_field(
            "cfis", 80, shear=(0.02, 0.0), seed=10 + i, noise=3.0, rotated_pairs=True
        )
        write_field(field, root / f"t{i}")
        with fits.open(root / f"t{i}" / "image.fits", mode="update") as hdul:
            hdul[0].header["CRASHID"] = f"tile{i}"
    return root


COMPARE = ["compare", "--flaggers", "sextractor", "--bootstrap", "40", "--quiet"]


def _compare(args, capsys):
    return run_cli([*COMPARE, *args], capsys)


@pytest.fixture(scope="module")
def serial_run(tiles_dir, tmp_path_factory):
    """The JSON of one clean serial run over the four tiles (the reference of two tests)."""
    from blendflag.cli import main

    out = tmp_path_factory.mktemp("serial")
    pattern = str(tiles_dir / "*" / "image.fits")
    argv = ["--tiles", pattern, "--out-dir", str(out / "tiles"), "--workers", "1"]
    assert main([*COMPARE, *argv, "--json", str(out / "serial.json")]) == 0
    return json.loads((out / "serial.json").read_text())


def test_tile_list_and_glob(tiles_dir, tmp_path):
    tiles = read_tiles(str(tiles_dir / "*" / "image.fits"))
    assert [t.name for t in tiles] == ["t0", "t1", "t2", "t3"]
    assert all(t.psf and t.weight and t.truth for t in tiles)
    listing = tmp_path / "tiles.txt"
    listing.write_text(
        "# my tiles\n" + "".join(f"image={t.image} psf={t.psf}\n" for t in tiles[:2])
    )
    assert [t.name for t in read_tiles(str(listing))] == ["t0", "t1"]
    listing.write_text("image=nope.fits psf=x.fits\n")
    from blendflag.errors import BlendflagError

    with pytest.raises(BlendflagError, match="image file not found"):
        read_tiles(str(listing))


@pytest.mark.slow
def test_two_dask_workers_match_serial_bit_for_bit(tiles_dir, serial_run, tmp_path, capsys):
    pattern = str(tiles_dir / "*" / "image.fits")
    code, out, err = _compare(
        [
            "--tiles",
            pattern,
            "--out-dir",
            tmp_path / "dask",
            "--workers",
            "2",
            "--json",
            tmp_path / "dask.json",
        ],
        capsys,
    )
    assert code == 0, err
    assert "Dask dashboard" in out
    serial = serial_run
    dask = json.loads((tmp_path / "dask.json").read_text())
    assert serial["selections"] == dask["selections"]
    assert serial["tiles"]["n"] == 4 and serial["true_shear"] == [0.02, 0.0]
    assert serial["selections"][0]["m"] is not None


@pytest.mark.slow
def test_killed_run_resumes_missing_tiles_only(
    tiles_dir, serial_run, tmp_path, capsys, monkeypatch
):
    # the crash plugin is installed like any third party's: a dist-info on sys.path
    from pathlib import Path

    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(Path(__file__).parent / "crash_plugin" / "blendflag_crash.py", site)
    info = site / "blendflag_crash-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: blendflag-crash\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[blendflag]\ncrash = blendflag_crash\n")
    monkeypatch.syspath_prepend(str(site))
    pattern = str(tiles_dir / "*" / "image.fits")
    out_dir = tmp_path / "out"
    monkeypatch.setenv("BLENDFLAG_CRASH_ON", "tile2")
    code, _, err = _compare(["--tiles", pattern, "--out-dir", out_dir, "--workers", "1"], capsys)
    assert code == 130 and "interrupted" in err  # the run died on the third tile
    done = sorted(p.name for p in out_dir.glob("*.sums.npz"))
    assert done == ["t0.sums.npz", "t1.sums.npz"]
    assert not list(out_dir.glob(".*.tmp"))  # nothing half-written
    stamps = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    monkeypatch.delenv("BLENDFLAG_CRASH_ON")
    code, out, err = _compare(
        [
            "--tiles",
            pattern,
            "--out-dir",
            out_dir,
            "--workers",
            "1",
            "--json",
            tmp_path / "resumed.json",
        ],
        capsys,
    )
    assert code == 0, err
    assert "tiles: 2 run, 2 already done, 0 failed" in out
    for name, mtime in stamps.items():
        assert (out_dir / name).stat().st_mtime_ns == mtime  # finished tiles untouched
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["selections"] == serial_run["selections"]  # as a run never killed
    sys.modules.pop("blendflag_crash", None)


def test_failed_tile_is_reported_and_others_finish(tiles_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "image.fits").write_text("not a FITS file")
    shutil.copy(tiles_dir / "t0" / "psf.fits", bad / "psf.fits")
    listing = tmp_path / "tiles.txt"
    good = tiles_dir / "t0"
    listing.write_text(
        f"image={good / 'image.fits'} psf={good / 'psf.fits'}\n"
        f"image={bad / 'image.fits'} psf={bad / 'psf.fits'}\n"
    )
    code, out, err = _compare(
        ["--tiles", listing, "--out-dir", tmp_path / "o", "--workers", "1"], capsys
    )
    assert code == 2
    assert "failed" in out and "not a readable FITS file" in out
    assert "1 of 2 tiles failed" in err
    assert (tmp_path / "o" / "t0.fits").exists()


@pytest.mark.slow
def test_simulated_pair_gives_the_same_answer_through_tiles_and_directly(tmp_path, capsys):
    """simulate-field --shear-pairs + compare --tiles == compare on the same field."""
    import json

    from blendflag.cli import main

    field = ["--n-galaxies", "100", "--seed", "3"]
    common = ["--flaggers", "sextractor", "--bootstrap", "40", "--quiet"]
    assert (
        main(
            [
                "simulate-field",
                "--dataset",
                "cfis",
                "--shear",
                "0.02,0",
                "--noise",
                "2",
                "--rotated-pairs",
                "--shear-pairs",
                "--out",
                str(tmp_path / "f"),
                "--quiet",
                *field,
            ]
        )
        == 0
    )
    assert (tmp_path / "f" / "plus" / "image.fits").is_file()
    assert (tmp_path / "f" / "minus" / "image.fits").is_file()
    assert (
        main(
            [
                "compare",
                "--tiles",
                str(tmp_path / "f" / "*" / "image.fits"),
                "--out-dir",
                str(tmp_path / "out"),
                "--seed",
                "3",
                "--workers",
                "1",
                "--json",
                str(tmp_path / "tiles.json"),
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "compare",
                "--dataset",
                "cfis",
                "--workers",
                "1",
                "--json",
                str(tmp_path / "direct.json"),
                *field,
                *common,
            ]
        )
        == 0
    )
    capsys.readouterr()
    tiles = json.loads((tmp_path / "tiles.json").read_text())
    direct = json.loads((tmp_path / "direct.json").read_text())
    assert tiles["shear_pairs"] and direct["shear_pairs"]
    assert tiles["true_shear"] == direct["true_shear"] == [0.02, 0.0]
    for key in ("engine", "shape", "neighbour_masking"):  # which measurement ran
        assert tiles[key] == direct[key] and direct[key], key
    by_name = {s["name"]: s for s in direct["selections"]}
    assert [s["name"] for s in tiles["selections"]] == list(by_name)
    for entry in tiles["selections"]:
        mine = by_name[entry["name"]]
        assert entry["n"] == mine["n"]
        for key in ("m", "m_err", "c1", "c2", "dm_vs_all", "dm_vs_truth", "R11"):
            assert entry[key] == pytest.approx(mine[key], rel=1e-9, abs=1e-12), key


def test_a_changed_engine_default_changes_the_tile_hash(monkeypatch):
    """A tile measured before an engine's default changed is measured again:
    the hashed settings hold the engine's resolved settings, not only the config."""
    import blendflag_plugins.metacal_galsim as engine_module
    from blendflag.config import load_pipeline_config
    from blendflag.plugins import get_plugin_manager
    from blendflag.tiling.settings import RunSettings
    from blendflag.tiling.tile_list import files_hash

    pm, config = get_plugin_manager(), load_pipeline_config(None)
    before = RunSettings.for_run(pm, config, ["sextractor"], "metacal", 1)
    monkeypatch.setitem(engine_module.DEFAULTS, "weight_fwhm", 2.0)
    after = RunSettings.for_run(pm, config, ["sextractor"], "metacal", 1)
    assert before.config == after.config
    assert before.engine_settings["weight_fwhm"] == 1.2
    assert after.engine_settings["weight_fwhm"] == 2.0
    assert files_hash([], before) != files_hash([], after)
    assert RunSettings.for_run(pm, config, [], "none", 1).engine_settings is None
