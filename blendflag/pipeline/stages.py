"""The catalogue pipeline: an ordered list of named stages over one context.

The core stages are ``detect`` (only when no catalogue was given), ``cutout``,
``match_truth`` (simulated fields only), ``measure_shear``,
``measure_shear_masked`` (for the ``all_masked`` selection) and
``shear_statistics`` (only when a shear engine is set) and ``annotate``.
Plugins edit the list through the ``blendflag_pipeline_stages`` hook; the
built-in ``flag_stage`` plugin inserts ``flag_blends`` after ``cutout`` and
``flag_metacal_blends`` after ``measure_shear``, exactly as a third party
would insert its own steps. ``flag``, ``compare`` and ``compare --tiles`` all
run these stages; see docs/architecture.md for the walk of one object.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from blendflag.config import PipelineConfig
from blendflag.errors import BlendflagError, CatalogueError, PluginError
from blendflag.flagging.detectors import pop_segmentation
from blendflag.io.annotation import Annotation
from blendflag.io.stamps import check_positions, cut_stamps, stamp_flags

if TYPE_CHECKING:  # astropy is imported where tables are made, not to build the manager
    from astropy.table import Table

    from blendflag.io.catalog import Catalogue


@dataclass
class Stage:
    """One named step of the pipeline.

    Attributes
    ----------
    name : str
        Unique name other plugins use to place their stages.
    run : callable
        ``run(context)``; reads and writes attributes of the context.
    """

    name: str
    run: Callable[[Context], None]


class Stages(list):
    """An ordered list of :class:`Stage` with helpers to place stages by name."""

    def names(self) -> list[str]:
        return [s.name for s in self]

    def index_of(self, name: str) -> int:
        for i, stage in enumerate(self):
            if stage.name == name:
                return i
        raise PluginError(f"no pipeline stage named {name!r} (stages: {', '.join(self.names())})")

    def insert_after(self, name: str, stage: Stage) -> None:
        """Insert ``stage`` right after the stage called ``name``."""
        self.insert(self.index_of(name) + 1, stage)

    def insert_before(self, name: str, stage: Stage) -> None:
        """Insert ``stage`` right before the stage called ``name``."""
        self.insert(self.index_of(name), stage)

    def remove_named(self, name: str) -> Stage:
        """Remove and return the stage called ``name``."""
        return self.pop(self.index_of(name))


@dataclass
class Context:
    """Everything the stages share.

    Attributes
    ----------
    config : PipelineConfig
    pm : pluggy.PluginManager
    image, weight, psf : numpy.ndarray or None
        Science image (ADU), inverse-variance weight, PSF image.
    psf_model : blendflag.psf.model.PSFModel or None
        A PSF that varies across the image; engines evaluate it where they
        measure (:func:`blendflag.shear.inputs.context_psf_model`). None:
        ``psf`` everywhere.
    image_header : astropy.io.fits.Header or None
    catalogue : Catalogue or None
        The input catalogue file, when one was given.
    table : astropy.table.Table or None
        The objects being processed (from ``catalogue`` or from ``detect``).
    segmentation : numpy.ndarray or None
        int32 segmentation map of the image from ``detect`` (0 sky, else the
        NUMBER of the object a pixel belongs to); None when the detector gives
        none or a catalogue was given (neighbour masking then makes one, see
        :func:`blendflag.shear.masking.context_segment_ids`).
    stamps : numpy.ndarray or None
        ``(n, size, size)`` stamps around the objects; ``stamp_flags`` their bits.
    flaggers : list of str
        Flagger names to run.
    flagger_objects : list of blendflag.flagging.flaggers.Flagger
        The flaggers themselves, built once before the run.
    flag_original : bool
        Run the flaggers on the original stamps (``flag_blends``); a run that
        only needs the flags on the metacal images can skip it. [default: True]
    shear_engine : str or None
        Shear engine to run in ``measure_shear``; None skips it.
    pixel_scale : float or None
        Arcsec per pixel; None reads the image header's WCS.
    noise_sigma : float or None
        Known per-pixel noise (ADU) of a simulated image; None estimates it.
    truth : astropy.table.Table or None
        The galaxies of a simulated field (positions, rotated pairs, overlaps).
    true_shear : tuple of float or None
        The shear applied to a simulated field.
    shear_sign : int
        +1, or -1 for the -g twin of a ±g pair of images (its unit sums are
        paired with the +g image's). [default: 1]
    seed : int
        Seed of the metacal noise-correction fields and of the bootstrap.
    workers : int
        Processes for the shear measurement. [default: 1]
    scheduler : str or None
        Dask scheduler address for the shear measurement.
    quiet : bool
        No progress bars. [default: True]
    n_bootstrap : int or None
        Bootstrap resamplings; None takes ``config.shear.n_bootstrap``.
    masked_selection : bool
        Also measure every object with the other sources' pixels filled with
        noise (``measure_shear_masked``), for the selection ``all_masked``.
        [default: False]
    results : dict
        Per-stage outputs, e.g. ``results["flags"][name]`` -> FlagResult.
    annotation : Annotation
        Columns and cards collected for the output catalogue.
    timings : dict
        Seconds spent per stage.
    rng : numpy.random.Generator
    """

    config: PipelineConfig
    pm: Any
    image: np.ndarray | None = None
    weight: np.ndarray | None = None
    psf: np.ndarray | None = None
    psf_model: Any = None
    image_header: Any = None
    catalogue: Catalogue | None = None
    table: Table | None = None
    segmentation: np.ndarray | None = None
    stamps: np.ndarray | None = None
    stamp_flags: np.ndarray | None = None
    flaggers: list[str] = field(default_factory=list)
    flagger_objects: list = field(default_factory=list)
    flag_original: bool = True
    shear_engine: str | None = None
    pixel_scale: float | None = None
    noise_sigma: float | None = None
    truth: Table | None = None
    true_shear: tuple | None = None
    shear_sign: int = 1
    seed: int = 0
    workers: int = 1
    scheduler: str | None = None
    quiet: bool = True
    n_bootstrap: int | None = None
    masked_selection: bool = False
    results: dict = field(default_factory=dict)
    annotation: Annotation = field(default_factory=Annotation)
    timings: dict = field(default_factory=dict)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


# ---------------------------------------------------------------------------
# Core stages
# ---------------------------------------------------------------------------


def stage_detect(context: Context) -> None:
    """Detect sources when no catalogue was given; keep the segmentation map apart."""
    if context.table is not None:
        return
    if context.image is None:
        raise BlendflagError("nothing to detect on: no image")
    table = context.pm.hook.blendflag_detect(
        image=context.image, weight=context.weight, config=context.config.detect
    )
    if table is None:
        raise PluginError(f"no detector answered for backend {context.config.detect.backend!r}")
    context.segmentation = pop_segmentation(table, context.image.shape)
    context.table = table


def stage_cutout(context: Context) -> None:
    """Check positions against the image; cut stamps when a flagger or engine needs them."""
    needed = (
        context.results.get("needs_stamps", False)
        or (context.shear_engine is not None and _engine_class(context).needs_stamps)
        or any(f.needs_stamps for f in context.flagger_objects)
    )
    if context.image is None or context.table is None:
        return
    x = np.asarray(context.table["X_IMAGE"], dtype=np.float64)
    y = np.asarray(context.table["Y_IMAGE"], dtype=np.float64)
    check_positions(x, y, context.image.shape)
    if not needed:  # the edge and mask bits all the same (the catalogue's STAMP_FLAGS)
        context.stamp_flags = stamp_flags(
            context.image, x, y, context.config.flag.stamp_size, weight=context.weight
        )
        return
    context.stamps, context.stamp_flags = cut_stamps(
        context.image, x, y, context.config.flag.stamp_size, weight=context.weight
    )


def stage_match_truth(context: Context) -> None:
    """Match detections to the truth of a simulated field (rotated-pair ids)."""
    if context.truth is None or context.table is None:
        return
    from blendflag.truth import match_truth, pair_ids

    context.results["truth_match"] = match_truth(context.table, context.truth)
    context.results["pair_id"] = pair_ids(context.table, context.truth)


def _engine_class(context: Context) -> type:
    from blendflag.plugins import get_shear_engines

    engines = get_shear_engines(context.pm)
    if context.shear_engine not in engines:
        raise PluginError(f"unknown shear engine {context.shear_engine!r}")
    return engines[context.shear_engine]


def stage_measure_shear(context: Context) -> None:
    """Run the shear engine named in ``context.shear_engine`` (if any)."""
    if context.shear_engine is None:
        return
    if context.table is not None and len(context.table) == 0:
        raise BlendflagError("no sources detected: nothing to measure")
    engine = _engine_class(context)(context.config.shear)
    context.results["shear"] = engine.measure_context(context)


def stage_measure_shear_masked(context: Context) -> None:
    """Measure again with neighbours masked, for ``all_masked`` (when asked and not done)."""
    if context.shear_engine is None or not context.masked_selection:
        return
    cls = _engine_class(context)
    if not cls.needs_stamps or context.config.shear.neighbours == "mask":
        return  # no stamps to mask, or the main measurement is masked already
    from dataclasses import replace

    engine = cls(replace(context.config.shear, neighbours="mask"))
    view = replace(context, flagger_objects=[])  # no metacal images, no flags
    context.results["shear_masked"] = engine.measure_context(view)


def stage_shear_statistics(context: Context) -> None:
    """Shear, responses, m and c of every selection (see blendflag.shear.selections)."""
    if context.results.get("shear") is None:
        return
    from blendflag.shear.selections import measure_selections

    measure_selections(context)


def stage_annotate(context: Context) -> None:
    """Collect columns and cards from every ``blendflag_annotate_catalogue`` hook."""
    for annotation in context.pm.hook.blendflag_annotate_catalogue(
        table=context.table, context=context
    ):
        context.annotation.merge(annotation)


def default_stages() -> Stages:
    """The core stages, before plugins edit them."""
    return Stages(
        [
            Stage("detect", stage_detect),
            Stage("cutout", stage_cutout),
            Stage("match_truth", stage_match_truth),
            Stage("measure_shear", stage_measure_shear),
            Stage("measure_shear_masked", stage_measure_shear_masked),
            Stage("shear_statistics", stage_shear_statistics),
            Stage("annotate", stage_annotate),
        ]
    )


def build_stages(pm) -> Stages:
    """Default stages edited by every ``blendflag_pipeline_stages`` hook.

    Raises
    ------
    PluginError
        Two stages share a name after the plugins ran.
    """
    stages = default_stages()
    pm.hook.blendflag_pipeline_stages(stages=stages)
    names = stages.names()
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PluginError(f"pipeline stage names used twice: {', '.join(dupes)}")
    return stages


def run_pipeline(context: Context, stages: Stages | None = None) -> Context:
    """Run ``stages`` (default: :func:`build_stages`) in order over ``context``."""
    if stages is None:
        stages = build_stages(context.pm)
    context.results.setdefault("stage_order", [])
    for stage in stages:
        start = time.perf_counter()
        stage.run(context)
        context.timings[stage.name] = time.perf_counter() - start
        context.results["stage_order"].append(stage.name)
    return context


def table_from_catalogue(catalogue: Catalogue) -> Table:
    """The objects of ``catalogue`` as a Table, checking the position columns."""
    for col in ("X_IMAGE", "Y_IMAGE"):
        if col not in catalogue.colnames:
            raise CatalogueError(
                f"{catalogue.path.name if catalogue.path else 'catalogue'} has no {col} column "
                "(positions are needed to cut stamps)"
            )
    catalogue.positions()  # numeric and finite, else one line
    return catalogue.table


def flag_catalogue_file(
    pm,
    config,
    flaggers,
    catalogue_path,
    image_path,
    weight_path=None,
    flag_map_path=None,
    quiet=True,
):
    """Run the pipeline's stages with ``flaggers`` over a catalogue file and its image.

    What ``flag`` and ``flag --tiles`` both do before writing.

    Returns
    -------
    Context
        With ``catalogue`` (the file read) and ``annotation`` (the columns to add).

    Raises
    ------
    CatalogueError
        Unreadable files, positions missing or outside the image.
    """
    from blendflag.io.catalog import read_catalogue
    from blendflag.io.images import load_image_and_weight

    catalogue = read_catalogue(catalogue_path)
    image, weight, header = load_image_and_weight(image_path, weight_path, flag_map_path)
    context = Context(
        config=config,
        pm=pm,
        image=image,
        weight=weight,
        image_header=header,
        catalogue=catalogue,
        table=table_from_catalogue(catalogue),
        flagger_objects=list(flaggers),
        quiet=quiet,
    )
    context.flaggers = [f.name for f in flaggers]
    return run_pipeline(context)
