"""``blendflag-shear evaluate``: confusion matrices and recalls of flaggers on labelled stamps."""

from __future__ import annotations

from blendflag.commands.common import (
    add_common_output_args,
    check_output_path,
    load_config,
    make_flaggers,
    network_overrides,
    write_json,
)
from blendflag.errors import BlendflagError


def register(cli) -> None:
    parser = cli.add_command(
        "evaluate", func=run,
        help="compare blend flaggers on labelled stamps (confusion, recall vs noise/separation)",
        description="Run flaggers on a stamp file from `simulate` (--data) or on freshly "
                    "simulated stamps (--dataset/--n/--seed). The confusion matrix is normalised "
                    "by actual class, as in the original study's tables.",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE.fits", help="stamps written by `simulate`")
    src.add_argument("--dataset", help="simulate stamps of this preset (or YAML path)")
    parser.add_argument("--n", type=int, default=2000, help="stamps to simulate [default: 2000]")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed [default: 7]")
    parser.add_argument("--noise", help="noise sigma (ADU), or 'grid' [default: preset default]")
    parser.add_argument("--methods", default="sextractor",
                        help="comma-separated flagger names [default: sextractor]")
    parser.add_argument("--backend", choices=("sep", "sextractor"),
                        help="backend of the sextractor flagger [default: sep]")
    parser.add_argument("--weights", metavar="PATH",
                        help="weights file for the network flagger, or name=path,name=path")
    parser.add_argument("--threshold", type=float, help="probability threshold for networks")
    add_common_output_args(parser, json=True, plot=True, quiet=True)


def _noise_arg(text):
    if text is None or text == "grid":
        return text
    try:
        value = float(text)
    except ValueError:
        raise BlendflagError(f"--noise must be a number or 'grid', got {text!r}") from None
    if not value > 0:
        raise BlendflagError("--noise must be positive")
    return value


def load_stamps(args):
    """Stamps and truth from ``--data`` or a fresh simulation."""
    if args.data:
        from blendflag.simulate import read_stamps

        stamps, truth, _ = read_stamps(args.data)
        return stamps, truth
    if args.n <= 0:
        raise BlendflagError("--n must be positive")
    from blendflag.simulate import simulate_stamps

    return simulate_stamps(args.dataset, args.n, seed=args.seed, noise=_noise_arg(args.noise),
                           progress=not args.quiet)


def run(args, pm) -> int:
    config = load_config(args)
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    overrides = network_overrides(names, args.weights, args.threshold, args.backend)
    flaggers = make_flaggers(pm, names, config, overrides)
    for path in (args.json, args.plot):
        if path:
            check_output_path(path)
    stamps, truth = load_stamps(args)
    if len(stamps) == 0:
        raise BlendflagError("no stamps to evaluate")
    from blendflag.evaluation import evaluate_flaggers

    results = evaluate_flaggers(flaggers, stamps, truth)
    results["data"] = ({"file": str(args.data)} if args.data else
                       {"dataset": args.dataset, "n": args.n, "seed": args.seed,
                        "noise": args.noise})
    if args.json:
        write_json(results, args.json)
    if args.plot:
        from blendflag.plots import plot_evaluation

        label = args.data or f"{args.dataset}, n={args.n}, seed={args.seed}"
        plot_evaluation(results, args.plot, title=f"blend flaggers on {label}")
    print(f"{'method':<12} {'blend':>7} {'not':>7} {'acc':>7} {'<10px':>7} {'stamps/s':>9}")
    for name, m in results["methods"].items():
        u10 = m["blend_recall_under_10px"]
        print(f"{name:<12} {m['confusion'][0][0]:7.3f} {m['confusion'][1][1]:7.3f} "
              f"{m['accuracy']:7.3f} {u10 if u10 is not None else float('nan'):7.3f} "
              f"{m.get('stamps_per_s') or 0:9.0f}")
    return 0
