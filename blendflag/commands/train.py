"""``blendflag-shear train``: train a network flagger from a YAML config."""

from __future__ import annotations

from pathlib import Path

from blendflag.commands.common import check_output_path
from blendflag.config import load_yaml, packaged_config
from blendflag.errors import BlendflagError
from blendflag.plugins import get_flaggers, resolve_names


def register(cli) -> None:
    parser = cli.add_command(
        "train",
        func=run,
        help="train a network flagger (default: vgg16) on simulated stamps",
        description="Simulate (or reload cached) stamps, train with checkpoints after every "
        "epoch, and write a compact weights file. A killed or time-limited run "
        "continues with --resume.",
    )
    parser.add_argument("--method", help="flagger to train (default: the config's method, vgg16)")
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


def run(args, pm) -> int:
    if args.config:
        config_path = Path(args.config)
        method = args.method or load_yaml(config_path).get("method", "vgg16")
    else:
        method = args.method or "vgg16"
        config_path = packaged_config(f"train_{method}")
        if not config_path.exists():
            raise BlendflagError(f"no packaged training config for {method!r}; pass --config")
    flaggers = get_flaggers(pm)
    resolve_names(method, flaggers, "flagger")
    if args.method and load_yaml(config_path).get("method", method) != method:
        raise BlendflagError(
            f"{config_path.name} configures method "
            f"{load_yaml(config_path).get('method')!r}, not {method!r}"
        )
    trainer = getattr(flaggers[method], "train", None)
    if trainer is None:
        raise BlendflagError(f"flagger {method!r} cannot be trained")
    out = check_output_path(args.out)
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise BlendflagError("--max-minutes must be positive")
    overrides = {}
    if args.dataset:
        overrides["datasets"] = [d.strip() for d in args.dataset.split(",") if d.strip()]
    result = trainer(
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
