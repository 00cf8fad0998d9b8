"""Helpers shared by the sub-commands: configs, flaggers, JSON, progress."""

from __future__ import annotations

import json
from pathlib import Path

from blendflag.atomic import atomic_output
from blendflag.config import PipelineConfig, load_pipeline_config
from blendflag.errors import BlendflagError


def load_config(args) -> PipelineConfig:
    """The pipeline config of ``--config`` (or the defaults)."""
    return load_pipeline_config(getattr(args, "config", None))


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


def add_views_arg(parser) -> None:
    """``--views``: the network flaggers' ``views`` option (see NetworkFlagger)."""
    parser.add_argument(
        "--views",
        type=int,
        choices=(1, 2, 4, 8),
        help="network flaggers average each stamp's blend probability over "
        "this many rotations/flips (test-time augmentation; that many "
        "times slower) [default: 1]",
    )


def add_common_output_args(parser, json=True, plot=False, quiet=True) -> None:
    if json:
        parser.add_argument("--json", metavar="PATH", help="write machine-readable results here")
    if plot:
        parser.add_argument("--plot", metavar="PNG", help="write a figure here")
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress bar")


# END
