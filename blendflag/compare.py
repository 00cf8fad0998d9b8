"""Shear three ways: all sources, and without the blends of each flagger.

`compare` builds one pipeline context from its input (a simulated field with
truth, or the user's image, PSF and catalogue) and runs the pipeline's stages:
detect, cutout, flag_blends, match_truth, measure_shear, flag_metacal_blends,
shear_statistics, annotate. The selections and their statistics are
:mod:`blendflag.shear.selections`'; this module only prepares the input
(:func:`simulated_input`, :func:`file_input`) and writes the JSON document.
``compare --tiles`` (:mod:`blendflag.tiles`) calls :func:`run_compare` per tile,
so both routes measure the same way.

The catalogue columns ``BLEND_<NAME>`` are the flags on the original images
(as ``flag`` writes them); ``MCAL_BLEND_<NAME>`` are the flags on the noshear
metacal images that the selections use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from blendflag.errors import CatalogueError
from blendflag.pipeline import Context, run_pipeline

if TYPE_CHECKING:
    from astropy.table import Table

#: The default `compare` run: a CFIS-like field with a known shear.
DEFAULT_DATASET = "cfis"
DEFAULT_SHEAR = (0.02, 0.0)
DEFAULT_SEED = 1
#: Galaxies of the default field (half of them the 90-degree rotated copies).
DEFAULT_N_GALAXIES = 10000
#: Noise sigma of the default field (ADU): a deep field (median S/N ~200), so that m is
#: measured to 1% with 10,000 galaxies in a few minutes.
DEFAULT_NOISE = 2.0


@dataclass
class FieldInput:
    """The image data `compare` works on.

    Attributes
    ----------
    image, weight, psf : numpy.ndarray
        Science image (ADU), inverse-variance weight (or None), PSF image.
    header : astropy.io.fits.Header or None
    pixel_scale : float
        Arcsec per pixel.
    catalogue : blendflag.catalog.Catalogue or None
        A user catalogue; None detects sources.
    true_shear : tuple or None
        The applied shear of a simulated field.
    truth : astropy.table.Table or None
        The simulated galaxies (positions, PAIR_ID).
    noise_sigma : float or None
        Known noise sigma (ADU), for simulated fields.
    reference_noise : float or None
        Noise sigma (ADU) of the depth at which the truth defines blends (the
        preset's ``default_noise``), for network flaggers with a reference
        plane; None takes the image's noise.
    description : dict
        Where the data came from (for the JSON).
    """

    image: np.ndarray
    weight: np.ndarray | None
    psf: np.ndarray
    header: object = None
    pixel_scale: float = 1.0
    catalogue: object = None
    true_shear: tuple | None = None
    truth: Table | None = None
    noise_sigma: float | None = None
    reference_noise: float | None = None
    description: dict = field(default_factory=dict)


def simulated_input(
    dataset=DEFAULT_DATASET,
    n_galaxies=DEFAULT_N_GALAXIES,
    shear=DEFAULT_SHEAR,
    seed=DEFAULT_SEED,
    noise=DEFAULT_NOISE,
    workers=None,
    progress=False,
    stamp_size=51,
):
    """A simulated field with 90-degree rotated pairs, as :class:`FieldInput`.

    Galaxy centres stay half a stamp (``stamp_size // 2 + 1`` pixels) inside
    each half, so no stamp reaches into the other half.
    """
    from blendflag.simulate.field import simulate_field
    from blendflag.simulate.galaxies import label_reference_noise
    from blendflag.simulate.presets import load_dataset

    preset = load_dataset(dataset)
    fld = simulate_field(
        dataset,
        n_galaxies=n_galaxies,
        shear=shear,
        seed=seed,
        rotated_pairs=True,
        noise=noise,
        workers=workers,
        progress=progress,
        margin=int(stamp_size) // 2 + 1,
    )
    reference = label_reference_noise(preset) or fld.noise_sigma or preset.default_noise
    return FieldInput(
        image=fld.image,
        weight=fld.weight,
        psf=fld.psf,
        header=None,
        pixel_scale=fld.pixel_scale,
        true_shear=tuple(fld.shear),
        truth=fld.truth,
        noise_sigma=fld.noise_sigma,
        reference_noise=reference,
        description={
            "dataset": fld.dataset,
            "n_galaxies": len(fld.truth),
            "shear": list(fld.shear),
            "seed": seed,
            "noise_sigma": fld.noise_sigma,
            "reference_noise": reference,
            "rotated_pairs": True,
            "margin": int(stamp_size) // 2 + 1,
            "image_size": list(fld.image.shape[::-1]),
        },
    )


def file_input(image, psf, catalogue=None, weight=None, pixel_scale=None):
    """The user's image, PSF, optional catalogue and weight, as :class:`FieldInput`.

    Raises
    ------
    CatalogueError
        Unreadable files, a catalogue without positions or positions outside
        the image, a PSF that is not a small 2-d image.
    """
    from pathlib import Path

    from blendflag.catalog import read_catalogue
    from blendflag.images import load_image_and_weight, pixel_scale_from_header, read_image
    from blendflag.stamps import check_positions

    img, wgt, header = load_image_and_weight(image, weight)
    psf_img, psf_header = read_image(psf, "PSF image")
    if not np.all(np.isfinite(psf_img)) or psf_img.sum() <= 0:
        raise CatalogueError(f"PSF image {Path(psf).name} has NaN pixels or no positive flux")
    if max(psf_img.shape) > 256:
        raise CatalogueError(
            f"PSF image {Path(psf).name} is {psf_img.shape[1]}x"
            f"{psf_img.shape[0]}: expected a PSF stamp, not an image"
        )
    cat = None
    if catalogue is not None:
        cat = read_catalogue(catalogue)
        for col in ("X_IMAGE", "Y_IMAGE"):
            if col not in cat.colnames:
                raise CatalogueError(
                    f"{Path(catalogue).name} has no {col} column: compare needs source positions"
                )
        x, y = cat.positions()
        check_positions(x, y, img.shape)
    scale = pixel_scale or pixel_scale_from_header(header) or pixel_scale_from_header(psf_header)
    if scale is None:
        raise CatalogueError(
            "no pixel scale in the image header (CD/CDELT/PIXSCALE): give --pixel-scale"
        )
    return FieldInput(
        image=img,
        weight=wgt,
        psf=psf_img,
        header=header,
        pixel_scale=scale,
        catalogue=cat,
        description={
            "image": str(image),
            "psf": str(psf),
            "catalogue": str(catalogue) if catalogue else None,
            "weight": str(weight) if weight else None,
        },
    )


@dataclass
class CompareResult:
    """Everything `compare` produces.

    Attributes
    ----------
    json : dict
        The JSON document (keys: see :func:`_compare_json`).
    context : blendflag.pipeline.Context
        The pipeline's context after the run (annotation, results, timings).
    """

    json: dict
    context: Context

    @property
    def sums(self) -> dict:
        """``{selection name: (per-unit sums, n_good)}``, what ``--tiles`` stores."""
        return self.context.results["selection_sums"]

    @property
    def metacal(self):
        """The shear engine's result."""
        return self.context.results["shear"]


def run_compare(
    pm,
    config,
    data: FieldInput,
    flaggers,
    engine_cls,
    *,
    seed: int = 0,
    workers: int = 1,
    scheduler: str | None = None,
    quiet: bool = True,
    n_bootstrap: int | None = None,
    flag_original: bool = True,
) -> CompareResult:
    """Detect, flag, measure and compare the selections: the pipeline's stages, in order.

    Parameters
    ----------
    pm : pluggy.PluginManager
    config : blendflag.config.PipelineConfig
    data : FieldInput
    flaggers : list of blendflag.flaggers.Flagger
    engine_cls : type
        The shear engine class (its ``name`` is what the pipeline runs).
    seed : int
        Seed of the noise-correction fields and the bootstrap.
    workers : int
        Processes for the shear measurement. [default: 1]
    scheduler : str or None
        Dask scheduler address for the shear measurement.
    quiet : bool
        No progress bar. [default: True]
    n_bootstrap : int or None
        Bootstrap resamplings; None takes the config's.
    flag_original : bool
        Also run the flaggers on the original stamps (the pipeline's
        ``flag_blends`` stage: the ``BLEND_<NAME>`` columns of the annotated
        catalogue). The selections use only the flags on the metacal images,
        so a run that writes no catalogue can skip them. [default: True]
    """
    start = time.perf_counter()
    for flagger in flaggers:  # the depth of the truth's blend definition (simulations)
        flagger.default_reference_noise(data.reference_noise)
    context = Context(
        config=config,
        pm=pm,
        image=data.image,
        weight=data.weight,
        psf=data.psf,
        image_header=data.header,
        catalogue=data.catalogue,
        table=data.catalogue.table if data.catalogue is not None else None,
        flagger_objects=list(flaggers),
        flag_original=flag_original,
        shear_engine=engine_cls.name,
        pixel_scale=data.pixel_scale,
        noise_sigma=data.noise_sigma if data.noise_sigma else None,
        truth=data.truth,
        true_shear=data.true_shear,
        seed=seed,
        workers=workers,
        scheduler=scheduler,
        quiet=quiet,
        n_bootstrap=n_bootstrap,
        rng=np.random.default_rng(seed),
    )
    context.flaggers = [f.name for f in flaggers]
    run_pipeline(context)
    context.timings["total"] = time.perf_counter() - start
    return CompareResult(json=_compare_json(context, data, flaggers), context=context)


def _compare_json(context: Context, data: FieldInput, flaggers) -> dict:
    """The JSON document of one comparison (the README's compare contract; docs/architecture.md)."""
    from blendflag.truth import truth_summary

    result = context.results["shear"]
    masks = context.results["selection_masks"]
    pid = context.results.get("pair_id")
    truth_info = None
    if data.truth is not None:
        blend_flags = {
            name: flags["noshear"]
            for name, flags in (context.results.get("metacal_flags") or {}).items()
        }
        truth_info = truth_summary(context.results["truth_match"], data.truth, blend_flags)
    return {
        "engine": result.engine,
        "true_shear": list(data.true_shear) if data.true_shear is not None else None,
        "selections": context.results["selections"],
        "n_objects": len(context.table),
        "n_measured": int(result.good.sum()),
        "n_in_complete_pairs": int(masks["all"]["noshear"].sum()) if pid is not None else None,
        "step": result.step,
        "input": data.description,
        "truth": truth_info,
        "flaggers": {f.name: {k: v for k, v, _ in f.provenance()} for f in flaggers},
        "original_images_flagged": bool(context.flag_original),
        "timings_s": {k: round(v, 2) for k, v in context.timings.items()},
        "workers": context.workers,
    }
