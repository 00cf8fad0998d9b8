"""``blendflag-shear train``: train a network flagger from a YAML config."""

from __future__ import annotations

from pathlib import Path

from blendflag.commands.common import check_output_path, guard_outputs
from blendflag.config import load_pipeline_config, load_yaml
from blendflag.errors import BlendflagError
from blendflag.plugins import get_flaggers, resolve_names


def register(cli) -> None:
    parser = cli.add_command(
        "train",
        func=run,
        help="train a network flagger on simulated stamps",
        description="Simulate (or reload cached) stamps, train with checkpoints after every "
        "epoch, and write a compact weights file. A killed or time-limited run "
        "continues with --resume. --config is a training config here; without it the "
        "flagger's own (shipped) training config is used.",
    )
    parser.add_argument(
        "--method",
        help="flagger to train (default: the config's method, else the first "
        "trainable flagger of the default flag.flaggers)",
    )
    parser.add_argument(
        "--dataset",
        metavar="NAMES",
        help="comma-separated dataset presets, overriding the config's",
    )
    parser.add_argument("--out", required=True, metavar="WEIGHTS.npz", help="weights file to write")
    parser.add_argument("--resume", action="store_true", help="continue an unfinished run")
    parser.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop after the epoch that crosses M minutes (resume later)",
    )
    parser.add_argument("--workdir", metavar="DIR", help="data and checkpoints [default: OUT.run]")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def default_method(flaggers: dict[str, type]) -> str:
    """The first trainable flagger of the default pipeline config's ``flag.flaggers``.

    Raises
    ------
    BlendflagError
        None of them is trainable.
    """
    for name in load_pipeline_config(None).flag.flaggers:
        if name in flaggers and flaggers[name].trainable:
            return name
    trainable = sorted(n for n, cls in flaggers.items() if cls.trainable)
    raise BlendflagError(f"name the flagger to train with --method ({', '.join(trainable)})")


def trainable_flagger(args, flaggers: dict[str, type]) -> str:
    """The name of the flagger to train: ``--method``, the config's ``method`` or the default.

    Raises
    ------
    BlendflagError
        The name matches more or fewer than one flagger, or one that is not trainable.
    """
    if args.config:
        config_path = Path(args.config)
        method = args.method or load_yaml(config_path).get("method") or default_method(flaggers)
    else:
        method = args.method or default_method(flaggers)
    names = resolve_names(str(method), flaggers, "flagger")
    if len(names) != 1:
        raise BlendflagError(f"train one flagger at a time, not {method!r}")
    method = names[0]
    if not flaggers[method].trainable:
        raise BlendflagError(f"flagger {method!r} cannot be trained")
    return method


def training_config_path(args, method: str, cls: type) -> Path:
    """The training config: ``--config``, else the one flagger ``cls`` ships.

    Raises
    ------
    BlendflagError
        The flagger ships no config, or ``--method`` differs from the config's ``method``.
    """
    if args.config:
        config_path = Path(args.config)
    else:
        config_path = cls.training_config_path()
        if config_path is None or not config_path.is_file():
            raise BlendflagError(f"flagger {method!r} ships no training config; pass --config")
    if args.method and load_yaml(config_path).get("method", method) != method:
        raise BlendflagError(
            f"{config_path.name} configures method "
            f"{load_yaml(config_path).get('method')!r}, not {method!r}"
        )
    return config_path


def dataset_overrides(dataset: str | None) -> dict:
    """``{"datasets": [...]}`` from ``--dataset NAMES`` (``{}`` without it), each name checked.

    Raises
    ------
    BlendflagError
        A name is not a dataset preset or YAML file (before any work is done).
    """
    overrides = {}
    if dataset:
        overrides["datasets"] = [d.strip() for d in dataset.split(",") if d.strip()]
        from blendflag.simulate.presets import load_dataset

        for name in overrides["datasets"]:  # an unknown name fails before any work
            load_dataset(name)
    return overrides


def run(args, pm) -> int:
    flaggers = get_flaggers(pm)
    method = trainable_flagger(args, flaggers)
    cls = flaggers[method]
    config_path = training_config_path(args, method, cls)
    guard_outputs(args, (), ("out",), extra_inputs={"training config": str(config_path)})
    out = check_output_path(args.out)
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise BlendflagError("--max-minutes must be positive")
    overrides = dataset_overrides(args.dataset)
    result = cls.train(
        config_path,
        out,
        resume=args.resume,
        max_minutes=args.max_minutes,
        quiet=args.quiet,
        workdir=args.workdir,
        overrides=overrides,
    )
    if result.get("finished"):
        val = result["val"]
        print(
            f"trained {result['epochs']} epochs; validation blend recall "
            f"{val['blend_recall']:.3f}, non-blend {val['nonblend_recall']:.3f} at threshold "
            f"{result['threshold']:.2f} -> {out}"
        )
    else:
        print(f"stopped after epoch {result['epochs']}; continue with --resume")
    return 0
