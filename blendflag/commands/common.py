"""Helpers shared by the sub-commands: configs, flaggers, JSON, progress."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from blendflag.catalog import atomic_output
from blendflag.config import PipelineConfig, load_pipeline_config
from blendflag.errors import BlendflagError
from blendflag.plugins import get_flaggers, resolve_names


def load_config(args) -> PipelineConfig:
    """The pipeline config of ``--config`` (or the defaults)."""
    return load_pipeline_config(getattr(args, "config", None))


def make_flaggers(pm, names, config: PipelineConfig, overrides: dict | None = None) -> list:
    """Instantiate the named flaggers with their options from the config.

    Parameters
    ----------
    names : str or list of str
        ``"sextractor,vgg16"`` or a list.
    overrides : dict or None
        ``{flagger name: {option: value}}`` from the command line.

    Raises
    ------
    PluginError
        A name is not a registered flagger.
    """
    available = get_flaggers(pm)
    chosen = resolve_names(names, available, "flagger")
    flaggers = []
    for name in chosen:
        options = dict(config.flag.options.get(name, {}) or {})
        options.update((overrides or {}).get(name, {}))
        flaggers.append(available[name](options))
    return flaggers


def write_json(data, path) -> Path:
    """Write ``data`` as indented JSON atomically."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False, default=_jsonable) + "\n")
    return path


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_output_path(path, what: str = "output") -> Path:
    """Fail early (before any work) when the output cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BlendflagError(f"{what} directory does not exist: {parent}")
    if path.is_dir():
        raise BlendflagError(f"{what} {path} is a directory")
    return path


def progress(iterable=None, total=None, desc=None, quiet=False, unit="it"):
    """A tqdm progress bar, off when stderr is not a terminal or ``quiet``."""
    from tqdm.auto import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=disable, unit=unit, leave=False)


def add_views_arg(parser) -> None:
    """``--views``: the network flaggers' ``views`` option (see NetworkFlagger)."""
    parser.add_argument("--views", type=int, choices=(1, 2, 4, 8),
                        help="network flaggers average each stamp's blend probability over "
                             "this many rotations/flips (test-time augmentation; that many "
                             "times slower) [default: 1]")


def add_common_output_args(parser, json=True, plot=False, quiet=True) -> None:
    if json:
        parser.add_argument("--json", metavar="PATH", help="write machine-readable results here")
    if plot:
        parser.add_argument("--plot", metavar="PNG", help="write a figure here")
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress bar")


def load_image_and_weight(image_path, weight_path=None):
    """Read the science image and optional weight map, checking they fit.

    Returns
    -------
    image, weight, header
        ``weight`` is None when no path was given.

    Raises
    ------
    CatalogueError
        Unreadable files, shapes that differ, NaN pixels that are not masked.
    """
    from blendflag.catalog import check_finite, read_image
    from blendflag.errors import CatalogueError

    image, header = read_image(image_path, "image")
    weight = None
    if weight_path is not None:
        weight, _ = read_image(weight_path, "weight map")
        if weight.shape != image.shape:
            raise CatalogueError(
                f"weight map is {weight.shape[1]}x{weight.shape[0]} but the image is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        if not bool(((weight > 0) & (weight < float("inf"))).any()):
            raise CatalogueError("weight map has no positive finite pixel")
    check_finite(image, weight, f"image {Path(image_path).name}")
    return image, weight, header


def network_overrides(names, weights=None, threshold=None, backend=None, views=None) -> dict:
    """Per-flagger options from ``--weights``, ``--threshold``, ``--backend`` and ``--views``.

    ``--weights`` is either one path (for every flagger named) or
    ``name=path[,name=path...]``; ``--backend`` applies to the sextractor flagger.

    Raises
    ------
    BlendflagError
        ``name=path`` names a flagger that was not asked for.
    """
    overrides = {n: {} for n in names}
    if weights:
        if "=" in weights:
            for item in weights.split(","):
                name, _, path = item.partition("=")
                name = name.strip()
                if name not in overrides:
                    raise BlendflagError(f"--weights names {name!r}, which is not among the "
                                         f"flaggers asked for ({', '.join(names)})")
                overrides[name]["weights"] = path.strip()
        else:
            for n in names:
                if n != "sextractor":
                    overrides[n]["weights"] = weights
    for key, value in (("threshold", threshold), ("views", views)):
        if value is not None:
            for n in names:
                if n != "sextractor":
                    overrides[n][key] = value
    if backend:
        overrides.setdefault("sextractor", {})["backend"] = backend
    return overrides
