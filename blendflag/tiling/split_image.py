"""``compare`` on one large image split into sub-tiles run as tasks (:mod:`blendflag.tiling.grid`).

:func:`run_split_compare` prepares the sub-tiles (:mod:`blendflag.tiling.preparation`),
runs every sub-tile that owns objects as one task through
:func:`blendflag.tiling.runner.run_tiles` (in this process for one worker, else on a
local Dask cluster or the scheduler given), and combines the stored per-unit
sums with :func:`blendflag.tiling.runner.combine_tiles`: the units are the rows of the
whole catalogue, so the statistics are those of the whole image's run. A rerun
with the same work directory skips the preparation and every finished
sub-tile (their hash covers the input files, the settings and the sub-tile's
place).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from blendflag.errors import BlendflagError
from blendflag.io.images import image_identity, image_shape
from blendflag.tiling.grid import AUTO_SPLIT_PIXELS, DEFAULT_CORE, subtile_hash
from blendflag.tiling.runner import combine_tiles, run_tiles
from blendflag.tiling.subtile_tasks import compare_subtile
from blendflag.tiling.tile_list import files_hash


def split_core(option: str | None, image) -> int:
    """The core side (pixels) ``--sub-tile`` asks for on ``image``; 0 runs it whole.

    ``auto`` (the default) splits images of more than :data:`AUTO_SPLIT_PIXELS`
    pixels into cores of :data:`DEFAULT_CORE`; ``0`` never splits; a number is
    the core side.

    Raises
    ------
    BlendflagError
        Anything else, or a core smaller than 64 pixels.
    """
    text = "auto" if option is None else str(option).strip().lower()
    if text == "auto":
        ny, nx = image_shape(image)
        return DEFAULT_CORE if ny * nx > AUTO_SPLIT_PIXELS else 0
    try:
        core = int(text)
    except ValueError:
        raise BlendflagError(
            f"--sub-tile must be auto, 0 or a core side in pixels, got {option!r}"
        ) from None
    if core != 0 and core < 64:
        raise BlendflagError(f"--sub-tile must be 0 (no split) or at least 64 pixels, got {core}")
    return core


@dataclass(frozen=True)
class SplitImage:
    """One large image to compare in sub-tiles: its files and how to cut it.

    Attributes
    ----------
    image, psf, catalogue : str
        The whole image's files (a PSF image or a PSFEx model; a SExtractor catalogue).
    weight : str or None
        Its weight map.
    core : int
        Side of a sub-tile's core, pixels. [default: :data:`DEFAULT_CORE`]
    true_shear : tuple or None
        The applied shear (g1, g2): m and c are then reported.
    pixel_scale : float or None
        arcsec per pixel when the header has no WCS.
    recentre_psf : bool
        Pad or shift an off-centre PSF instead of refusing it.
    """

    image: str
    psf: str
    catalogue: str
    weight: str | None = None
    core: int = DEFAULT_CORE
    true_shear: tuple | None = None
    pixel_scale: float | None = None
    recentre_psf: bool = False

    @property
    def files(self) -> tuple:
        """The input files, in the order their hash reads them."""
        return (self.image, self.psf, self.catalogue, self.weight)


def run_split_compare(
    pm,
    config,
    names: list[str],
    engine_cls,
    split: SplitImage,
    *,
    work_dir,
    seed: int = 0,
    workers: int = 1,
    scheduler: str | None = None,
    quiet: bool = True,
    n_bootstrap: int | None = None,
    weights=None,
    on_message=print,
    psf_check: str = "warn",
):
    """Compare the selections on one image split into sub-tiles.

    Parameters
    ----------
    pm : pluggy.PluginManager
    config : blendflag.config.PipelineConfig
    names : list of str
        Flagger names (their selections use the flags on the metacal images).
    engine_cls : type
        A stamp shear engine (an image engine has its own cells: refused).
    split : SplitImage
        The image's files, the core size and the known shear.
    work_dir : path-like
        Preparation and per-sub-tile sums; reuse it to resume a killed run.
    seed, workers, scheduler, quiet, n_bootstrap, weights
        As ``compare --image``.
    on_message : callable or None
        Gets one line about the split and the Dask dashboard.
    psf_check : str
        The PSF against the whole catalogue's stellar-locus stars, checked in
        the preparation: ``warn``, ``strict`` (an error before the sub-tiles
        run) or ``record`` (see :func:`blendflag.pipeline.compare.run_compare`).

    Returns
    -------
    blendflag.pipeline.compare.CompareSummary
        With ``sub_tiles`` (cores, margin, counts, seconds per task and stage).

    Raises
    ------
    BlendflagError
        An image engine, bad inputs (one line), sub-tiles that failed
        (after the others finished and were stored), or with
        ``psf_check="strict"`` a PSF that does not match the stars.
    """
    from blendflag.psf.star_check import report_check
    from blendflag.tiling.preparation import prepare_subtiles
    from blendflag.tiling.settings import RunSettings

    if not getattr(engine_cls, "needs_stamps", True):
        raise BlendflagError(
            f"engine {engine_cls.name} measures whole images (its own cells): run it "
            "with --sub-tile 0, or choose a stamp engine with --engine"
        )
    start = time.perf_counter()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    settings = RunSettings.for_run(
        pm, config, names, engine_cls.name, seed, weights=weights,
        pixel_scale=split.pixel_scale, bootstrap=n_bootstrap, recentre_psf=bool(split.recentre_psf),
        true_shear=None if split.true_shear is None else tuple(float(g) for g in split.true_shear),
        core=int(split.core), field=_field_of_image(split.image),
    )  # fmt: skip
    settings = settings.with_(inputs_hash=files_hash(split.files, settings))
    subtiles, info = prepare_subtiles(
        pm, config, *split.files, work, split.core, settings, masking=True,
        pixel_scale=split.pixel_scale, recentre_psf=split.recentre_psf,
    )  # fmt: skip
    settings = settings.with_(reference_noise=info["reference_noise"])
    if psf_check in ("warn", "strict"):
        report_check(info["psf_check"], strict=psf_check == "strict")
    if not info["psf_model"]:
        _before_measuring(engine_cls, config, work, info, workers, scheduler)
    busy = [s for s in subtiles if info["owned"][s.index]]
    if on_message:
        on_message(_split_line(split, info, len(busy), work))
    prep_seconds = time.perf_counter() - start
    status = run_tiles(
        busy, settings, work, workers=workers, scheduler=scheduler, quiet=quiet,
        on_message=on_message, task=compare_subtile, hash_of=subtile_hash,
    )  # fmt: skip
    _raise_on_failures(status, len(busy), work)
    n_boot = config.shear.n_bootstrap if n_bootstrap is None else n_bootstrap
    summary = combine_tiles(busy, work, seed=seed, n_bootstrap=n_boot)
    _as_one_image(summary, split, info)
    summary.sub_tiles = _sub_tiles_info(split, info, busy, status, work)
    summary.psf_check = info["psf_check"]
    summary.timings_s = {"prepare": prep_seconds, "total": time.perf_counter() - start}
    summary.workers = workers
    return summary


def _split_line(split: SplitImage, info: dict, n_busy: int, work: Path) -> str:
    """One line about the split, for the user."""
    return (
        f"{Path(split.image).name}: {info['image_size'][0]}x{info['image_size'][1]} px, "
        f"{info['n_objects']} objects in {n_busy} sub-tiles "
        f"(cores {split.core} px, margin {info['margin']} px), work directory {work}"
    )


def _raise_on_failures(status: dict, n_busy: int, work: Path) -> None:
    """One line naming the first failed sub-tiles, after the others were stored."""
    if status["failed"]:
        reasons = "; ".join(f"{f['tile']}: {f['reason']}" for f in status["failed"][:3])
        raise BlendflagError(
            f"{len(status['failed'])} of {n_busy} sub-tiles failed ({reasons}); "
            f"rerun the same command with --out-dir {work} to retry them"
        )


def _as_one_image(summary, split: SplitImage, info: dict) -> None:
    """Make the combined sub-tiles' summary that of one image: counts and input."""
    for entry in summary.selections:  # one image, whatever its pieces
        entry["n_per_image"] = [int(sum(entry["n_per_image"]))]
    summary.n_measured = summary.n_objects
    summary.n_objects = info["n_objects"]
    summary.tiles = None
    summary.input = {
        "image": str(split.image),
        "psf": str(split.psf),
        "psf_model": info["psf_model"],
        "catalogue": str(split.catalogue),
        "weight": None if split.weight is None else str(split.weight),
    }
    if split.true_shear is not None:
        summary.input["true_shear"] = [float(g) for g in split.true_shear]


def _sub_tiles_info(split: SplitImage, info: dict, busy: list, status: dict, work: Path) -> dict:
    """The ``sub_tiles`` block: the cut, the counts, and seconds per task and per stage."""
    stages: dict = {}  # seconds per stage, summed over the sub-tiles run now (per worker)
    for done in status["done"]:
        for key, value in (done.get("timings") or {}).items():
            stages[key] = stages.get(key, 0.0) + value
    return {
        "core": int(split.core),
        "margin": info["margin"],
        "image_size": info["image_size"],
        "n": len(busy),
        "run": len(status["done"]),
        "skipped": len(status["skipped"]),
        "work_dir": str(work),
        "objects_per_sub_tile": [info["owned"][s.index] for s in busy],
        "task_seconds": [round(r["seconds"], 2) for r in status["done"]],
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
    }


def _before_measuring(engine_cls, config, work, info, workers, scheduler) -> None:
    """Let the engine set up its per-PSF work once for the whole image, on the run's workers.

    The sub-tiles each see a few thousand objects; the whole image's count
    decides (e.g. the metacal matrices are built once here and memory-mapped
    by every sub-tile, instead of once per worker or not at all).
    """
    import numpy as np

    from blendflag._runtime.parallel import run_chunks
    from blendflag.tiling.preparation import PREP

    with np.load(Path(work) / PREP, allow_pickle=False) as prep:
        psf = np.array(prep["psf"])
    side = int(config.flag.stamp_size)
    # stand-ins: only the count and the shape matter; a noise sigma > 0 counts the
    # noise-correction field of every object too
    stamps = np.broadcast_to(np.zeros((1, side, side)), (int(info["n_objects"]), side, side))
    engine_cls(config.shear).before_measuring(
        stamps,
        psf,
        info["pixel_scale"],
        1.0,
        lambda func, jobs: run_chunks(func, jobs, workers, scheduler=scheduler),
        max(1, workers),
    )


def _field_of_image(path) -> str:
    """The key that seeds a split image's correction fields: the whole image's, as unsplit."""
    from astropy.io import fits

    from blendflag.simulate.field_io import field_key

    return field_key(fits.getheader(path), image_identity(path))
