"""Output paths that never land on an input: one check shared by every command.

Every command names its inputs (image, weight map, PSF, catalogue, truth,
weights file, config) and its outputs; :func:`check_outputs` refuses, before
any work starts, an output that is the same file as an input, through
symbolic links, hard links and relative paths alike, or an output directory
that holds an input.
"""

from __future__ import annotations

import os

from blendflag.errors import BlendflagError


def _real(path) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def same_file(a, b) -> bool:
    """True when paths ``a`` and ``b`` name one file (symlinks and hard links resolved).

    Parameters
    ----------
    a, b : str or path-like
        Paths; either may not exist yet (then their resolved spellings are compared).
    """
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return _real(a) == _real(b)


def _inside(path, directory) -> bool:
    """True when ``path`` resolves to a file under ``directory`` (resolved)."""
    real, top = _real(path), _real(directory)
    return real != top and real.startswith(top.rstrip(os.sep) + os.sep)


def check_outputs(outputs: dict, inputs: dict, directories: dict | None = None) -> None:
    """Refuse outputs that are inputs (or each other), before any work.

    Parameters
    ----------
    outputs : dict
        ``{what: path or None}`` of output files, e.g. ``{"--out": "cat.fits"}``;
        None entries are skipped.
    inputs : dict
        ``{what: path or None}`` of the command's input files; None skipped.
    directories : dict or None
        ``{what: path or None}`` of output directories: no input may lie in
        one (its content may be replaced).

    Raises
    ------
    BlendflagError
        An output is an input, two outputs are one file, or an input lies in
        an output directory.
    """
    ins = {k: v for k, v in inputs.items() if v is not None and str(v) != ""}
    outs = {k: v for k, v in outputs.items() if v is not None and str(v) != ""}
    _check_no_output_is_an_input(outs, ins)
    _check_outputs_distinct(outs)
    _check_no_input_in_directories(directories or {}, ins)


def _check_no_output_is_an_input(outs: dict, ins: dict) -> None:
    """Refuse an output file (``{what: path}``) that is one of the inputs (``{what: path}``)."""
    for out_name, out in outs.items():
        for in_name, src in ins.items():
            if same_file(out, src):
                raise BlendflagError(
                    f"{out_name} {out} is the {in_name} input; refusing to overwrite "
                    "an input (choose another output path)"
                )


def _check_outputs_distinct(outs: dict) -> None:
    """Refuse two outputs (``{what: path}``) that name the same file."""
    names = list(outs)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if same_file(outs[first], outs[second]):
                raise BlendflagError(
                    f"{first} and {second} name the same file {outs[first]}; give each its own path"
                )


def _check_no_input_in_directories(directories: dict, ins: dict) -> None:
    """Refuse an input (``{what: path}``) that is or lies in an output directory (None: skipped)."""
    for dir_name, directory in directories.items():
        if directory is None:
            continue
        for in_name, src in ins.items():
            if same_file(directory, src) or _inside(src, directory):
                raise BlendflagError(
                    f"the {in_name} input {src} is inside the output directory "
                    f"{dir_name} {directory}; write the output elsewhere"
                )


def check_tile_outputs(tiles, out_dir, suffixes) -> None:
    """Refuse a tile run whose per-tile outputs (``out_dir/<name><suffix>``) are inputs.

    Parameters
    ----------
    tiles : list of blendflag.tiling.tile_list.Tile
        Each with ``name`` and its input paths (``image``, ``psf``,
        ``catalogue``, ``weight``, ``truth``).
    out_dir : path-like
    suffixes : iterable of str
        What each tile writes, e.g. ``(".fits", ".sums.npz")``.

    Raises
    ------
    BlendflagError
        An output of some tile is an input of any tile.
    """
    inputs = {}
    for tile in tiles:
        for key in ("image", "psf", "catalogue", "weight", "truth"):
            path = getattr(tile, key, None)
            if path:
                inputs[_real(path)] = (tile.name, key, path)
    for tile in tiles:
        for suffix in suffixes:
            out = os.path.join(os.fspath(out_dir), f"{tile.name}{suffix}")
            hit = inputs.get(_real(out))
            if hit is not None:
                raise BlendflagError(
                    f"tile {tile.name}'s output {out} is the {hit[1]} of tile {hit[0]}; "
                    "choose another --out-dir"
                )
