"""``blendflag-shear compare``: the shear measured three ways, with R, m and c."""

from __future__ import annotations

import os

from blendflag.commands.common import (
    add_flagger_options,
    check_output_path,
    guard_outputs,
    load_config,
    write_json,
)
from blendflag.errors import BlendflagError
from blendflag.flagging.flaggers import flagger_overrides, make_flaggers
from blendflag.pipeline.field_input import (
    DEEP_NOISE,
    DEFAULT_DATASET,
    DEFAULT_N_GALAXIES,
    DEFAULT_SEED,
    DEFAULT_SHEAR,
)


def register(cli) -> None:
    parser = cli.add_command(
        "compare",
        func=run,
        help="measure the shear with all sources and without each flagger's blends",
        description="With no input it simulates the CFIS r-band sky (cfis_survey: galaxies "
        "from number counts, most below the detection limit, at the survey's noise) with shear "
        "(0.02, 0) and "
        "90-degree rotated pairs, detects, flags with the config's flaggers "
        "that are valid on metacalibration images, "
        "runs metacalibration and reports R, g, m and c per selection (with and "
        "without the selection response R_S). With --image/--psf it runs on your "
        "data (m and c are null unless --true-shear or --truth gives the applied shear).",
    )
    data = parser.add_argument_group("your data")
    data.add_argument("--image", metavar="FITS", help="science image")
    data.add_argument("--catalogue", metavar="FITS", help="SExtractor catalogue (else detect)")
    data.add_argument(
        "--psf",
        metavar="FITS",
        help="PSF image at the image's pixel scale, or a PSFEx .psf model "
        "(evaluated at every object by engines that can)",
    )
    data.add_argument("--weight", metavar="FITS", help="weight map (noise and masking)")
    data.add_argument(
        "--flag-map", metavar="FITS", help="integer flag map; a non-zero pixel is masked"
    )
    data.add_argument(
        "--pixel-scale", type=float, metavar="ARCSEC", help="pixel scale when the header has no WCS"
    )
    data.add_argument(
        "--true-shear",
        metavar="G1,G2",
        help="the shear applied to your simulated image (with --tiles: to the +g image of "
        "each pair): m and c are then reported",
    )
    data.add_argument(
        "--truth",
        metavar="FITS",
        help="truth table of your simulated image (as simulate-field writes it: its "
        "SHEAR1/SHEAR2 cards give the true shear, its rows the no_true_blends selection)",
    )
    data.add_argument(
        "--recentre-psf",
        action="store_true",
        help="pad an even-sized PSF and shift an off-centre one onto its central pixel "
        "(logged) instead of refusing it",
    )
    data.add_argument(
        "--sub-tile",
        metavar="PIX|auto|0",
        help="split --image into overlapping sub-tiles with cores of PIX pixels, each a "
        "task (a Dask task with --workers > 1 or --scheduler), resumable with --out-dir; "
        "auto splits images over 25 Mpx into 2500-px cores, 0 never splits [default: auto]",
    )
    many = parser.add_argument_group("many tiles (one Dask task each; resumable)")
    many.add_argument(
        "--tiles",
        metavar="GLOB|LIST",
        help="a glob of images (siblings psf.fits, weight.fits, catalogue.fits, "
        "truth.fits are used) or a file of 'image=... psf=...' lines",
    )
    many.add_argument(
        "--no-truth",
        action="store_true",
        help="ignore the tiles' truth tables (truth.fits siblings, truth= tokens): "
        "for images whose truth.fits is not simulate-field's",
    )
    many.add_argument(
        "--out-dir",
        metavar="DIR",
        help="per-tile catalogues and sums; with a split --image, its sub-tiles' work "
        "directory (rerun with the same DIR to resume)",
    )
    sim = parser.add_argument_group("simulated field (the default)")
    sim.add_argument("--dataset", default=None, help=f"preset [default: {DEFAULT_DATASET}]")
    sim.add_argument(
        "--n-galaxies",
        type=int,
        help="galaxies drawn, the undetected included [default: "
        f"{DEFAULT_N_GALAXIES['counts']} for a number-counts sky, "
        f"{DEFAULT_N_GALAXIES['loguniform']} for a log-uniform preset]",
    )
    sim.add_argument("--shear", help="G1,G2 [default: 0.02,0]")
    sim.add_argument("--seed", type=int, default=DEFAULT_SEED, help="[default: 1]")
    sim.add_argument(
        "--density",
        type=float,
        metavar="PER_ARCMIN2",
        help="galaxies per arcmin^2 drawn (sets the field's size; a number-counts "
        "preset's counts are scaled to it) [default: the preset's]",
    )
    sim.add_argument(
        "--single-sign",
        action="store_true",
        help="only the +g field (by default the same galaxies and pixel noise are also "
        "drawn with -g, and m, c come from the pair)",
    )
    sim.add_argument(
        "--noise",
        type=float,
        help="noise sigma, ADU [default: the survey's for a number-counts sky, "
        f"{DEEP_NOISE} (a deep field) for a log-uniform preset]",
    )
    parser.add_argument(
        "--engine",
        default=None,
        help="auto (the available engine of highest priority) or a registered engine "
        "name ('blendflag-shear plugins' lists them) [default: the config's shear.engine]",
    )
    parser.add_argument(
        "--flaggers",
        metavar="NAMES",
        help="comma-separated flaggers [default: the config's flag.flaggers whose model "
        "is available and that are valid on metacal images (metacal_safe)]",
    )
    add_flagger_options(parser, ("weights",), cli.pm)
    run_on = parser.add_mutually_exclusive_group()
    run_on.add_argument(
        "--workers", type=int, help="processes for metacalibration [default: the idle cores]"
    )
    run_on.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler to run on")
    parser.add_argument("--bootstrap", type=int, metavar="N", help="bootstrap resamplings")
    parser.add_argument("--json", metavar="PATH", help="write the results here")
    parser.add_argument("--plot", metavar="PNG", help="m and c per selection")
    parser.add_argument(
        "--catalogue-out", metavar="FITS", help="annotated catalogue with blend and metacal columns"
    )
    parser.add_argument(
        "--keep-stars",
        action="store_true",
        help="keep the stars in the selections (by default the detections that are stars, "
        "by the truth or else the catalogue's stellar locus, are left out of every "
        "selection; config shear.keep_stars)",
    )
    parser.add_argument(
        "--strict-psf",
        action="store_true",
        help="stop with an error, instead of a warning, when the PSF model does not match "
        "the catalogue's stars (size 3%%, ellipticity 0.01)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _default_flaggers(pm, config):
    """The config's flaggers (``flag.flaggers``) that can run here and on metacal images.

    A flagger without its model, one marked ``metacal_safe = False``, or one
    not registered is left out (name it with ``--flaggers`` to include it anyway).
    """
    from blendflag.plugins import get_flaggers

    names = []
    classes = get_flaggers(pm)
    for name in config.flag.flaggers:
        if name not in classes or not getattr(classes[name], "metacal_safe", True):
            continue
        try:
            make_flaggers(pm, [name], config)
        except BlendflagError:
            continue
        names.append(name)
    return names


def run(args, pm) -> int:
    from blendflag.pipeline.compare import run_compare
    from blendflag.plugins import get_shear_engines, select_engine

    config = _with_star_options(args, load_config(args))
    if args.tiles:
        return run_tiles_command(args, pm, config)
    if args.no_truth:
        raise BlendflagError("--no-truth goes with --tiles (without --tiles, leave out --truth)")
    user_data = args.image is not None or args.psf is not None or args.catalogue is not None
    _check_direct_options(args, user_data)
    engine_cls = select_engine(
        get_shear_engines(pm), args.engine or config.shear.engine, paired=not user_data
    )
    names = args.flaggers.split(",") if args.flaggers else _default_flaggers(pm, config)
    flaggers = make_flaggers(pm, names, config, flagger_overrides(pm, names, weights=args.weights))
    workers = args.workers or os.cpu_count() or 1
    core = _split_core(args, user_data)
    if core:
        from blendflag.commands.compare_split import run_split

        return _report(args, run_split(args, pm, config, names, engine_cls, workers, core))
    data = _direct_input(args, config, user_data, workers)
    # the flags on the original stamps only fill the catalogue's BLEND_* columns
    result = run_compare(
        pm,
        config,
        data,
        flaggers,
        engine_cls,
        seed=args.seed,
        workers=workers,
        scheduler=args.scheduler,
        quiet=args.quiet,
        n_bootstrap=args.bootstrap,
        flag_original=bool(args.catalogue_out),
        psf_check=psf_check_mode(args),
    )
    _report(args, result.summary)
    if args.catalogue_out:
        from blendflag.io.catalog import write_output_catalogue

        ctx = result.context
        write_output_catalogue(
            ctx.catalogue, ctx.table, ctx.annotation, args.catalogue_out, ctx.image_header
        )
    return 0


def _with_star_options(args, config):
    """``config`` with ``shear.keep_stars`` set by ``--keep-stars``."""
    if not getattr(args, "keep_stars", False):
        return config
    from dataclasses import replace

    return replace(config, shear=replace(config.shear, keep_stars=True))


def psf_check_mode(args) -> str:
    """The PSF check against the stars: an error with ``--strict-psf``, else a warning."""
    return "strict" if getattr(args, "strict_psf", False) else "warn"


def _check_direct_options(args, user_data: bool) -> None:
    """Refuse options that do not go together (one line each), and unsafe outputs."""
    if (args.true_shear or args.truth) and not user_data:
        raise BlendflagError("--true-shear and --truth go with --image/--psf (your data)")
    if user_data and (args.image is None or args.psf is None):
        raise BlendflagError(
            "your data needs both --image and --psf (and optionally --catalogue, --weight)"
        )
    sim_opts = (args.dataset, args.n_galaxies, args.shear, args.noise, args.density)
    if user_data and any(v is not None for v in sim_opts):
        raise BlendflagError(
            "--dataset/--n-galaxies/--shear/--noise/--density are for simulated "
            "fields; leave them out with --image"
        )
    if args.n_galaxies is not None and args.n_galaxies < 2:
        raise BlendflagError("--n-galaxies must be at least 2")
    if args.workers is not None and args.workers < 1:
        raise BlendflagError("--workers must be at least 1")
    guard_outputs(
        args, ("image", "psf", "catalogue", "weight", "truth"), ("json", "plot", "catalogue_out")
    )
    for path in (args.json, args.plot, args.catalogue_out):
        if path:
            check_output_path(path)


def _split_core(args, user_data: bool) -> int:
    """The sub-tile core ``--sub-tile`` asks for on ``--image`` (0: run it whole)."""
    if not user_data:
        if args.sub_tile is not None:
            raise BlendflagError("--sub-tile goes with --image (your data)")
        return 0
    from blendflag.tiling.split_image import split_core

    return split_core(args.sub_tile, args.image)


def _direct_input(args, config, user_data: bool, workers: int):
    """The images to compare: your files, or the simulated field and its -g twin."""
    if user_data:
        from blendflag.commands.compare_inputs import user_input

        return user_input(args)
    from blendflag.pipeline.field_input import simulated_inputs
    from blendflag.simulate.field import parse_shear

    return simulated_inputs(
        args.dataset or DEFAULT_DATASET,
        args.n_galaxies,
        parse_shear(args.shear) if args.shear else DEFAULT_SHEAR,
        args.seed,
        args.noise,
        workers=workers,
        progress=not args.quiet,
        stamp_size=max(config.flag.stamp_size, config.shear.stamp_size),
        density=args.density,
        shear_pairs=not args.single_sign,
    )


def _report(args, summary) -> int:
    """Every route's end: print the table; write ``--json`` and ``--plot`` when asked."""
    document = summary.document(getattr(args, "command_line", None))
    print_table(document)
    if args.json:
        write_json(document, args.json)
    if args.plot:
        from blendflag.plots import plot_compare

        plot_compare(document, args.plot)
    return 0


def run_tiles_command(args, pm, config) -> int:
    """``compare --tiles``: every tile a task, then the combined statistics."""
    from dataclasses import replace

    from blendflag.psf.star_check import report_check
    from blendflag.tiling.runner import combine_tiles, run_tiles
    from blendflag.tiling.tile_list import read_tiles

    _check_tiles_options(args)
    tiles = read_tiles(args.tiles)
    if args.no_truth:
        tiles = [replace(t, truth=None) for t in tiles]
    _check_tile_files(args, tiles)
    _check_tile_truths(tiles)
    settings = _tiles_settings(args, pm, config, tiles)
    workers = args.workers or os.cpu_count() or 1
    status = run_tiles(
        tiles, settings, args.out_dir, workers=workers, scheduler=args.scheduler, quiet=args.quiet
    )
    print(
        f"tiles: {len(status['done'])} run, {len(status['skipped'])} already done, "
        f"{len(status['failed'])} failed"
    )
    for failure in status["failed"]:
        print(f"  failed {failure['tile']}: {failure['reason']}")
    summary = combine_tiles(
        tiles,
        args.out_dir,
        seed=args.seed,
        n_bootstrap=config.shear.n_bootstrap if args.bootstrap is None else args.bootstrap,
    )
    summary.tiles["status"] = status
    summary.workers = workers
    _report(args, summary)
    report_check(summary.psf_check, strict=psf_check_mode(args) == "strict")
    if status["failed"]:
        raise BlendflagError(
            f"{len(status['failed'])} of {len(tiles)} tiles failed (listed "
            "above); rerun the same command to retry them"
        )
    return 0


def _check_tiles_options(args) -> None:
    """Refuse what ``--tiles`` replaces, and unsafe outputs."""
    if not args.out_dir:
        raise BlendflagError("--tiles needs --out-dir for the per-tile results")
    if args.image or args.psf or args.catalogue or args.truth:
        raise BlendflagError("--tiles replaces --image/--psf/--catalogue/--truth")
    for path in (args.json, args.plot):
        if path:
            check_output_path(path)


def _check_tile_files(args, tiles: list) -> None:
    """Refuse outputs that would overwrite a tile's input, and tiles without a PSF."""
    from pathlib import Path

    tile_inputs = {  # per-tile outputs are checked by run_tiles
        f"{key} of tile {t.name}": getattr(t, key)
        for t in tiles
        for key in ("image", "psf", "catalogue", "weight", "truth")
    }
    tile_inputs["--tiles"] = args.tiles if Path(args.tiles).is_file() else None
    guard_outputs(args, (), ("json", "plot"), extra_inputs=tile_inputs)
    missing = [t.name for t in tiles if not t.psf]
    if missing:
        raise BlendflagError(f"tile {missing[0]} has no PSF (psf= or psf.fits beside the image)")


def _check_tile_truths(tiles: list) -> None:
    """Refuse a tile whose truth table is not simulate-field's (read from its headers)."""
    from blendflag.simulate.field_io import check_truth_file

    for tile in tiles:
        if tile.truth:
            check_truth_file(tile.truth)


def _tiles_settings(args, pm, config, tiles: list):
    """The run's settings (the engine by priority; paired correction fields for simulations)."""
    from blendflag.plugins import get_shear_engines, select_engine
    from blendflag.simulate.field import parse_shear
    from blendflag.tiling.settings import RunSettings

    simulated = any(t.truth for t in tiles)  # paired noise fields: engines that take them
    engine = select_engine(
        get_shear_engines(pm), args.engine or config.shear.engine, paired=simulated
    ).name
    names = args.flaggers.split(",") if args.flaggers else _default_flaggers(pm, config)
    overrides = flagger_overrides(pm, names, weights=args.weights)
    make_flaggers(pm, names, config, overrides)  # fail early
    return RunSettings.for_run(
        pm,
        config,
        names,
        engine,
        args.seed,
        weights=args.weights,
        pixel_scale=args.pixel_scale,
        bootstrap=args.bootstrap,
        recentre_psf=bool(args.recentre_psf),
        true_shear=parse_shear(args.true_shear) if args.true_shear else None,
    )


def print_table(data: dict) -> None:
    """The comparison as a table on stdout: one row per selection."""
    rows = data["selections"]
    pairs = " (±g pairs)" if data.get("shear_pairs") else ""
    fields = f", correction fields {data['noise_fields']}" if data.get("noise_fields") else ""
    if data.get("shape"):
        fields = f" ({data['shape']}){fields}"
    if data.get("neighbour_masking"):
        fields += f", all_masked: {data['neighbour_masking']}"
    print(
        f"engine: {data['engine']}{fields}   true shear: {data['true_shear']}{pairs}   "
        f"objects: {data['n_objects']} ({data['n_measured']} measured)"
    )
    head = (
        f"{'selection':<22} {'N':>6} {'kept':>6} {'R11':>6} {'R11_S':>7} {'m':>16} "
        f"{'c1':>17} {'c2':>17} {'dm_vs_all':>16} {'dm_vs_truth':>16}"
    )
    print(head)
    print("-" * len(head))

    def pm_(value, error, fmt="{:+.4f}", err="{:.4f}"):
        if value is None:
            return "-"
        text = fmt.format(value)
        return f"{text}±{err.format(error)}" if error is not None else text

    for r in rows:
        print(
            f"{r['name']:<22} {r['n']:>6} {r['fraction_kept'] or 0:6.3f} "
            f"{r['R11'] or float('nan'):6.3f} {r.get('R11_S') or 0:+7.4f} "
            f"{pm_(r['m'], r['m_err']):>16} "
            f"{pm_(r.get('c1'), r.get('c1_err'), '{:+.5f}', '{:.5f}'):>17} "
            f"{pm_(r.get('c2'), r.get('c2_err'), '{:+.5f}', '{:.5f}'):>17} "
            f"{pm_(r.get('dm_vs_all'), r.get('dm_vs_all_err')):>16} "
            f"{pm_(r.get('dm_vs_truth'), r.get('dm_vs_truth_err')):>16}"
        )
    reasons: dict = {}
    for r in rows:
        if r.get("null_reason"):
            reasons.setdefault(r["null_reason"], []).append(r["name"])
    for reason, names in reasons.items():
        which = "every selection" if len(names) == len(rows) else ", ".join(names)
        print(f"m is null for {which}: {reason}")
    _print_stars(data.get("stars") or {})


def _print_stars(stars: dict) -> None:
    """One line on the stars, when some were found or none could be looked for."""
    if stars.get("n"):
        what = "kept in" if stars.get("kept") else "left out of"
        print(f"stars: {stars['n']} {what} every selection ({stars['identified_by']})")
    elif stars.get("note"):
        print(f"stars: {stars['note']}")
