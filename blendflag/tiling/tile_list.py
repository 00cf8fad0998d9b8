"""The tiles of a run: which files make a tile, and the hash that says it is done.

``--tiles`` takes either a glob of images (``'run/*/image.fits'``), whose
siblings ``psf.fits``, ``weight.fits``, ``catalogue.fits`` and ``truth.fits``
in the same directory are used when present (the layout ``simulate-field``
writes), or a text file with one tile per line of ``key=path`` tokens (see
:mod:`blendflag.tiling.runner`).
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


@dataclass(frozen=True)
class Tile:
    """One tile's files (paths as strings; None when absent)."""

    name: str
    image: str
    psf: str | None = None
    catalogue: str | None = None
    weight: str | None = None
    truth: str | None = None


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
            if not sep or key not in KEYS:
                raise BlendflagError(
                    f"{path.name} line {number}: expected key=path tokens "
                    f"with keys {', '.join(KEYS)}, got {token!r}"
                )
            resolved = Path(value) if Path(value).is_absolute() else path.parent / value
            if not resolved.is_file():
                raise BlendflagError(f"{path.name} line {number}: {key} file not found: {value}")
            fields[key] = str(resolved)
        if "image" not in fields:
            raise BlendflagError(f"{path.name} line {number}: no image=")
        rows.append(fields)
    if not rows:
        raise BlendflagError(f"{path.name} lists no tiles")
    names = _unique_names([Path(r["image"]) for r in rows])
    return [Tile(name=n, **r) for n, r in zip(names, rows, strict=True)]


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
    """The hash of one tile's files (in :data:`KEYS` order) and the run's settings."""
    return files_hash([getattr(tile, key) for key in KEYS], settings)
