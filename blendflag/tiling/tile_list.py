"""The tiles of a run: which files make a tile, and the hash that says it is done.

``--tiles`` takes either a glob of images (``'run/*/image.fits'``), whose
siblings ``psf.fits``, ``weight.fits``, ``catalogue.fits`` and ``truth.fits``
in the same directory are used when present (the layout ``simulate-field``
writes), or a text file with one tile per line of ``key=value`` tokens:
``image=``, ``psf=``, ``catalogue=``, ``weight=``, ``truth=`` (paths,
relative to the list file), and for your own ±g calibration images
``pair=NAME`` (the +g and -g images of one pair share it) and ``sign=+1`` or
``sign=-1``; ``compare --tiles LIST --true-shear=G1,G2`` then gives the +g
image's shear. Without these tokens, a tile's pair and sign come from its
header cards ``DATASET``, ``SEED``, ``NGAL`` and ``SHRSIGN`` (what
``simulate-field --shear-pairs`` writes).
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from blendflag.errors import BlendflagError

SIBLINGS = {
    "psf": "psf.fits",
    "weight": "weight.fits",
    "catalogue": "catalogue.fits",
    "truth": "truth.fits",
}
KEYS = ("image", "psf", "catalogue", "weight", "truth")
#: Tokens of a list file that are not files: a ±g pair's name and the image's sign.
PAIR_KEYS = ("pair", "sign")


@dataclass(frozen=True)
class Tile:
    """One tile's files (paths as strings; None when absent)."""

    name: str
    image: str
    psf: str | None = None
    catalogue: str | None = None
    weight: str | None = None
    truth: str | None = None
    pair: str | None = None
    sign: int | None = None


def _unique_names(paths: list[Path]) -> list[str]:
    stems = [p.parent.name if p.stem in ("image", "img") else p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{i:05d}_{s}" for i, s in enumerate(stems)]


def read_tiles(spec: str) -> list[Tile]:
    """Tiles from a glob of images or a list file (see the module docstring).

    Raises
    ------
    BlendflagError
        Nothing matches, a line is malformed, or a named file is missing.
    """
    path = Path(spec)
    if path.is_file() and path.suffix.lower() not in (".fits", ".fit", ".fz"):
        return _read_list(path)
    images = sorted(Path(p) for p in glob.glob(spec))
    if not images:
        raise BlendflagError(f"no tile matches {spec!r}")
    tiles = []
    for name, image in zip(_unique_names(images), images, strict=True):
        extra = {
            k: str(image.parent / f) for k, f in SIBLINGS.items() if (image.parent / f).is_file()
        }
        tiles.append(Tile(name=name, image=str(image), **extra))
    return tiles


def _read_list(path: Path) -> list[Tile]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            where = f"{path.name} line {number}"
            if not sep or key not in (*KEYS, *PAIR_KEYS):
                raise BlendflagError(
                    f"{where}: expected key=value tokens with keys "
                    f"{', '.join((*KEYS, *PAIR_KEYS))}, got {token!r}"
                )
            fields[key] = _token_value(where, key, value, path.parent)
        if "image" not in fields:
            raise BlendflagError(f"{path.name} line {number}: no image=")
        if ("pair" in fields) != ("sign" in fields):
            raise BlendflagError(f"{path.name} line {number}: pair= and sign= go together")
        rows.append(fields)
    if not rows:
        raise BlendflagError(f"{path.name} lists no tiles")
    names = _unique_names([Path(r["image"]) for r in rows])
    return [Tile(name=n, **r) for n, r in zip(names, rows, strict=True)]


def _token_value(where: str, key: str, value: str, base: Path):
    """A list file token's value: a file that exists, a pair name, or a sign of +1 or -1."""
    if key == "pair":
        if not value:
            raise BlendflagError(f"{where}: pair= needs a name")
        return value
    if key == "sign":
        if value not in ("+1", "1", "-1"):
            raise BlendflagError(f"{where}: sign= must be +1 or -1, got {value!r}")
        return int(value)
    resolved = Path(value) if Path(value).is_absolute() else base / value
    if not resolved.is_file():
        raise BlendflagError(f"{where}: {key} file not found: {value}")
    return str(resolved)


def files_hash(paths, settings) -> str:
    """SHA-256 of the files' contents and of the run's settings: what marks a task done.

    Parameters
    ----------
    paths : sequence of path-like or None
        The input files, in a fixed order; None stands for a file not given.
    settings : blendflag.tiling.settings.RunSettings or dict
        The run's settings.
    """
    data = settings.as_dict() if hasattr(settings, "as_dict") else settings
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode())
    for path in paths:
        digest.update(b"|")
        if path:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()


def tile_hash(tile: Tile, settings) -> str:
    """The hash of one tile's files (in :data:`KEYS` order), its pair and sign, and the settings."""
    data = settings.as_dict() if hasattr(settings, "as_dict") else dict(settings)
    if tile.pair is not None:  # a list file's ±g pair
        data = {**data, "pair": tile.pair, "sign": tile.sign}
    return files_hash([getattr(tile, key) for key in KEYS], data)
