"""``blendflag-shear evaluate``: confusion matrices and recalls of flaggers on labelled stamps."""

from __future__ import annotations

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag.commands.common import (
    add_common_output_args,
    add_flagger_options,
    add_stamp_kind_options,
    check_output_path,
    flagger_option_values,
    guard_outputs,
    load_config,
    write_json,
)
from blendflag.errors import BlendflagError
from blendflag.flagging.flaggers import flagger_overrides, make_flaggers


def register(cli) -> None:
    parser = cli.add_command(
        "evaluate",
        func=run,
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
    add_stamp_kind_options(parser)
    parser.add_argument(
        "--methods",
        help="comma-separated flagger names [default: the first of flag.flaggers in the config]",
    )
    add_flagger_options(parser, ("backend", "weights", "threshold", "views"), cli.pm)
    parser.add_argument(
        "--metacal",
        nargs="?",
        const="noshear",
        metavar="VERSION",
        help="flag the metacalibration image of every stamp (noshear, 1p, 1m, "
        "2p, 2m or random; what compare's selections see) instead of the "
        "stamp [default version: noshear]",
    )
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


def _file(value) -> str | None:
    """``value`` when it names an existing file (a dataset YAML), else None."""
    from pathlib import Path

    return value if value and Path(value).is_file() else None


def load_stamps(args, config=None):
    """Stamps, truth and dataset config (None if unknown) from ``--data`` or a simulation.

    ``config`` (the pipeline config) gives the detection settings of field stamps.
    """
    if args.data:
        from blendflag.simulate.stamps import read_stamps

        return read_stamps(args.data)
    if args.n <= 0:
        raise BlendflagError("--n must be positive")
    from blendflag.simulate.population import uses_counts
    from blendflag.simulate.presets import load_dataset
    from blendflag.simulate.stamps import simulate_stamps

    dataset = load_dataset(args.dataset)
    kind = getattr(args, "stamps", None) or ("field" if uses_counts(dataset) else "pairs")
    if kind == "field":
        return (*_field_stamps(args, dataset, config), dataset)
    stamps, truth = simulate_stamps(
        args.dataset, args.n, seed=args.seed, noise=_noise_arg(args.noise), progress=not args.quiet
    )
    return stamps, truth, load_dataset(args.dataset)


def _field_stamps(args, dataset, config):
    """(stamps, truth) around the detections of simulated fields of ``dataset``."""
    from functools import partial

    from blendflag.flagging.detectors import detect_with_plugins
    from blendflag.simulate.field_stamps import simulate_field_stamps

    if args.noise is not None:
        raise BlendflagError("--noise applies to --stamps pairs; field stamps keep the preset's")
    detect = partial(detect_with_plugins, config=config.detect if config else None)
    fraction = getattr(args, "blend_fraction", None)
    return simulate_field_stamps(dataset, args.n, args.seed, detect, blend_fraction=fraction)


def to_metacal(pm, config, args, stamps, truth, dataset):
    """The metacal images of the stamps (:mod:`blendflag.shear.metacal_images`) and their truth.

    Stamps the engine could not render are left out and counted.
    """
    from blendflag.plugins import get_shear_engines, select_engine
    from blendflag.shear.metacal_images import metacal_stamps
    from blendflag.simulate.galaxies import psf_image

    if dataset is None:
        raise BlendflagError(f"{args.data} has no CONFIG HDU: --metacal needs the dataset's PSF")
    engine_cls = select_engine(get_shear_engines(pm), config.shear.engine)
    images, rendered = metacal_stamps(
        engine_cls,
        config.shear,
        stamps,
        psf_image(dataset),
        dataset.pixel_scale,
        np.asarray(truth["NOISE_SIGMA"]),
        args.seed,
        version=args.metacal,
    )
    info = {
        "version": args.metacal,
        "engine": engine_cls.name,
        "n_not_rendered": int((~rendered).sum()),
    }
    return images[rendered], truth[rendered], info


def run(args, pm) -> int:
    config = load_config(args)
    methods = args.methods if args.methods is not None else config.flag.flaggers[0]
    names = [n.strip() for n in methods.split(",") if n.strip()]
    overrides = flagger_overrides(pm, names, **flagger_option_values(args))
    flaggers = make_flaggers(pm, names, config, overrides)
    guard_outputs(
        args, ("data",), ("json", "plot"), extra_inputs={"--dataset": _file(args.dataset)}
    )
    for path in (args.json, args.plot):
        if path:
            check_output_path(path)
    stamps, truth, dataset = load_stamps(args, config)
    # the depth the labels refer to (a file's truth table loses the header that says it)
    from blendflag.simulate.galaxies import label_reference_noise

    reference = label_reference_noise(dataset) if dataset is not None else None
    mcal_info = None
    if args.metacal:
        stamps, truth, mcal_info = to_metacal(pm, config, args, stamps, truth, dataset)
    if len(stamps) == 0:
        raise BlendflagError("no stamps to evaluate")
    from blendflag.flagging.evaluation import evaluate_flaggers

    results = evaluate_flaggers(flaggers, stamps, truth, reference)
    results["data"] = (
        {"file": str(args.data)}
        if args.data
        else {
            "dataset": args.dataset,
            "n": args.n,
            "seed": args.seed,
            "noise": args.noise,
            "stamps": truth.meta.get("KIND", "pairs"),
            "blend_fraction": truth.meta.get("BLENDFRC"),
        }
    )
    if mcal_info is not None:
        results["data"]["metacal"] = mcal_info
    results["provenance"] = provenance(getattr(args, "command_line", None))
    if args.json:
        write_json(results, args.json)
    if args.plot:
        from blendflag.plots import plot_evaluation

        label = args.data or f"{args.dataset}, n={args.n}, seed={args.seed}"
        if mcal_info is not None:
            label += f", metacal {mcal_info['version']} images"
        plot_evaluation(results, args.plot, title=f"blend flaggers on {label}")
    _print_table(results["methods"])
    _print_counts(results["methods"])
    return 0


def _print_table(methods: dict) -> None:
    """One line per method: recalls, accuracy, close-blend recall, speed."""
    print(f"{'method':<12} {'blend':>7} {'not':>7} {'acc':>7} {'<10px':>7} {'stamps/s':>9}")
    for name, m in methods.items():
        u10 = m["blend_recall_under_10px"]
        print(
            f"{name:<12} {m['confusion'][0][0]:7.3f} {m['confusion'][1][1]:7.3f} "
            f"{m['accuracy']:7.3f} {u10 if u10 is not None else float('nan'):7.3f} "
            f"{m.get('stamps_per_s') or 0:9.0f}"
        )


def _print_counts(methods: dict) -> None:
    """The count confusion matrices and the false blends by size, for methods that have them."""
    for name, m in methods.items():
        count = m.get("count")
        if count:
            print(
                f"{name}: source counts (rows true, columns predicted; accuracy "
                f"{count['accuracy']:.3f}, balanced {count['balanced_accuracy']:.3f})"
            )
            for label, row, raw in zip(
                count["classes"], count["confusion"], count["counts"], strict=True
            ):
                cells = " ".join(f"{v:6.3f}" for v in row) if row else "   (none)"
                print(f"  {label:>3} {cells}   n={sum(raw)}")
        sizes = m.get("false_blends_by_hlr")
        if sizes:
            cells = []
            for b in sizes:
                span = f">{b['min']:.2f}" if b["max"] is None else f"{b['min']:.2f}-{b['max']:.2f}"
                rate = "-" if b["flagged"] is None else f"{b['flagged']:.3f}"
                cells.append(f'{span}": {rate} (n={b["n"]})')
            print(f"{name}: singles called blends by half-light radius: " + ", ".join(cells))
