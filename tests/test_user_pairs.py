"""A user's own ±g calibration images: a list file with pair= and sign=, per-pair seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from blendflag.cli import main
from blendflag.errors import BlendflagError
from blendflag.pipeline.compare import field_seed
from blendflag.tiling.tile_list import read_tiles, tile_hash

#: What an outside simulation's header does not have: blendflag's own cards.
BLENDFLAG_CARDS = ("SHEAR1", "SHEAR2", "SEED", "SHRSIGN", "DATASET", "NGAL", "ROTPAIRS", "REFNOISE")


def test_each_pair_gets_its_own_seed_and_both_signs_the_same():
    seeds = {field_seed(7, f"pair:{k}") for k in range(50)}
    assert len(seeds) == 50 and all(0 <= s < 2**56 for s in seeds)
    assert field_seed(7, "pair:a") == field_seed(7, "pair:a") != field_seed(8, "pair:a")
    assert field_seed(7, None) == 7  # one image: the run's seed


def _outside_pair(tmp_path, name, seed):
    """A ±g pair from simulate-field, stripped to an outside tool's files (no truth, no cards)."""
    out = tmp_path / name
    argv = ["simulate-field", "--dataset", "cfis", "--n-galaxies", "60", "--shear", "0.02,0"]
    argv += ["--noise", "2", "--shear-pairs", "--seed", str(seed), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    lines = []
    for sign, half in ((+1, "plus"), (-1, "minus")):
        with fits.open(out / half / "image.fits") as hdul:
            header = hdul[0].header
            for card in BLENDFLAG_CARDS:
                header.remove(card, ignore_missing=True)
            hdul.writeto(out / f"{half}.fits")
        lines.append(
            f"image={name}/{half}.fits psf={name}/{half}/psf.fits pair={name} sign={sign:+d}"
        )
    return lines


@pytest.fixture(scope="module")
def pairs_list(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("user_pairs")
    lines = _outside_pair(tmp, "p0", 11) + _outside_pair(tmp, "p1", 12)
    path = tmp / "pairs.txt"
    path.write_text("# image, PSF, the pair's name, the image's sign\n" + "\n".join(lines) + "\n")
    return path


def test_a_list_file_names_pairs_and_signs(pairs_list):
    tiles = read_tiles(str(pairs_list))
    assert [(t.pair, t.sign) for t in tiles] == [("p0", 1), ("p0", -1), ("p1", 1), ("p1", -1)]
    assert tile_hash(tiles[0], {"seed": 1}) != tile_hash(
        tiles[0].__class__(**{**tiles[0].__dict__, "sign": -1}), {"seed": 1}
    )
    bad = pairs_list.parent / "bad.txt"
    for line, message in (
        ("image=p0/plus.fits sign=2 pair=a", r"sign= must be \+1 or -1"),
        ("image=p0/plus.fits pair=a", "pair= and sign= go together"),
    ):
        bad.write_text(line + "\n")
        with pytest.raises(BlendflagError, match=message):
            read_tiles(str(bad))


@pytest.mark.slow
def test_compare_pairs_a_users_images_and_seeds_each_pair(pairs_list, tmp_path, capsys):
    out = tmp_path / "c.json"
    argv = ["compare", "--tiles", str(pairs_list), "--out-dir", str(tmp_path / "tiles")]
    argv += ["--true-shear=0.02,0", "--flaggers", "sextractor", "--workers", "1"]
    argv += ["--bootstrap", "30", "--quiet", "--json", str(out)]
    assert main(argv) == 0
    document = json.loads(out.read_text())
    assert document["shear_pairs"] is True and document["true_shear"] == [0.02, 0.0]
    entry = document["selections"][0]
    assert entry["name"] == "all" and entry["m"] is not None and entry["c1_err"] > 0
    assert "+g and -g images of a pair together" in document["bootstrap"]["unit"]
    assert document["bootstrap"]["draws"] == 30
    # each image is stored under its pair's key (which seeds the pair's correction
    # fields: field_seed) and its sign, so the combination pairs +g with -g
    sums = {p.stem: np.load(p) for p in (tmp_path / "tiles").glob("*.sums.npz")}
    fields = {str(data["field"]) for data in sums.values()}
    assert fields == {"pair:p0", "pair:p1"}
    assert sorted(int(data["sign"]) for data in sums.values()) == [-1, -1, 1, 1]
