"""Helpers shared by the sub-commands: configs, flaggers, JSON, progress."""

from __future__ import annotations

import json
from pathlib import Path

from blendflag.config import PipelineConfig, load_pipeline_config
from blendflag.errors import BlendflagError
from blendflag.io.atomic import atomic_output


def load_config(args) -> PipelineConfig:
    """The pipeline config of ``--config`` (or the defaults)."""
    return load_pipeline_config(getattr(args, "config", None))


def write_json(data, path) -> Path:
    """Write ``data`` as indented JSON atomically; NaN and inf (undefined values) become null."""
    path = Path(path)
    text = json.dumps(finite_or_null(data), indent=2, allow_nan=False, default=_jsonable)
    with atomic_output(path) as tmp:
        tmp.write_text(text + "\n")
    return path


def finite_or_null(value):
    """``value`` with every NaN/inf float (numpy scalars and arrays included) replaced by None."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite_or_null(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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


def _weights_paths(value) -> list[str]:
    """The file paths in a ``--weights`` value (``PATH`` or ``name=PATH,name=PATH``)."""
    if not value:
        return []
    parts = [p.strip() for p in str(value).split(",")] if "=" in str(value) else [str(value)]
    return [p.split("=", 1)[1] if "=" in p else p for p in parts if p]


def guard_outputs(args, inputs=(), outputs=(), directories=(), extra_inputs=None) -> None:
    """Refuse (before any work) an output of ``args`` that is one of its inputs.

    Parameters
    ----------
    args : argparse.Namespace
    inputs, outputs, directories : iterable of str
        Attribute names of ``args`` holding input files, output files and
        output directories; ``config`` and the files of ``weights`` are
        always inputs.
    extra_inputs : dict or None
        ``{what: path}`` of further inputs (a positional argument, a dataset YAML).

    Raises
    ------
    BlendflagError
        See :func:`blendflag.io.paths.check_outputs`.
    """
    from blendflag.io.paths import check_outputs

    def opt(name):
        return "--" + name.replace("_", "-")

    ins = {opt(n): getattr(args, n, None) for n in inputs}
    ins["--config"] = getattr(args, "config", None)
    for i, path in enumerate(_weights_paths(getattr(args, "weights", None))):
        ins[f"--weights[{i}]"] = path
    ins.update(extra_inputs or {})
    check_outputs(
        {opt(n): getattr(args, n, None) for n in outputs},
        ins,
        {opt(n): getattr(args, n, None) for n in directories},
    )


#: argparse settings of the generic flagger options (see ``Flagger.cli_options``).
FLAGGER_OPTION_ARGS = {
    "weights": {
        "metavar": "PATH",
        "help": "weights file for the flaggers that take one, or name=path,name=path",
    },
    "threshold": {
        "type": float,
        "metavar": "P",
        "help": "probability threshold of the flaggers that take one",
    },
    "views": {
        "type": int,
        "choices": (1, 2, 4, 8),
        "help": "flaggers that take views (the networks) average each stamp's blend "
        "probability over this many rotations/flips (test-time augmentation; that "
        "many times slower) [default: 1]",
    },
    "backend": {
        "help": "detector backend of the flaggers that take one [default: their "
        "backend option in the config]",
    },
}


def add_flagger_options(parser, options, pm=None) -> None:
    """Add generic flagger options (``--weights``, ``--threshold``, ``--views``, ``--backend``).

    A given value reaches exactly the flaggers that declare the option in
    ``cli_options`` (see :func:`flagger_option_values` and
    :func:`blendflag.flagging.flaggers.flagger_overrides`).

    Parameters
    ----------
    parser : argparse.ArgumentParser
    options : iterable of str
        Names from :data:`blendflag.flagging.flaggers.CLI_OPTIONS`.
    pm : pluggy.PluginManager or None
        For ``backend``: its choices are the registered detectors.
    """
    for option in options:
        kwargs = dict(FLAGGER_OPTION_ARGS[option])
        if option == "backend":
            add_backend_arg(parser, pm, kwargs["help"])
            continue
        parser.add_argument(f"--{option}", **kwargs)


def add_backend_arg(parser, pm, help: str) -> None:
    """``--backend``, with the detectors registered with ``pm`` as its choices."""
    choices = None
    if pm is not None:
        from blendflag.plugins import get_detectors

        choices = sorted(get_detectors(pm))
    parser.add_argument("--backend", choices=choices, help=help)


def flagger_option_values(args) -> dict:
    """``{option: value}`` of the generic flagger options the command has (None: not given)."""
    from blendflag.flagging.flaggers import CLI_OPTIONS

    return {o: getattr(args, o) for o in CLI_OPTIONS if hasattr(args, o)}


def add_common_output_args(parser, json=True, plot=False, quiet=True) -> None:
    if json:
        parser.add_argument("--json", metavar="PATH", help="write machine-readable results here")
    if plot:
        parser.add_argument("--plot", metavar="PNG", help="write a figure here")
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_stamp_kind_options(parser) -> None:
    """``--stamps {pairs,field}`` and ``--blend-fraction`` (``simulate``, ``evaluate``)."""
    parser.add_argument(
        "--stamps",
        choices=("pairs", "field"),
        help="'pairs', the original study's stamps (one or two galaxies placed by "
        "rule), or 'field', stamps cut around the detections of simulated fields of "
        "the preset, labelled with the number of overlapping sources (TRUTH columns "
        "N_SOURCES, COUNT_CLASS) [default: field for presets with number counts, "
        "else pairs]",
    )
    parser.add_argument(
        "--blend-fraction",
        type=float,
        metavar="F",
        help="with field stamps: keep this share of blends, leaving isolated objects "
        "out at random [default: the sky's own share]",
    )


# END
