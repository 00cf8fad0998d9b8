"""The built-in metadetection engine ``metadetect``, on GalSim and sep.

Method (Sheldon et al. 2020, ApJ 902, 138), per cell of the image
(:func:`blendflag.shear.cells.cell_grid`: cores that tile the image, each
measured with a buffer around it):

1. the five metacalibration images of the whole cell (noshear, 1p, 1m, 2p,
   2m): deconvolve the PSF, shear by ``±step``, reconvolve with the round,
   dilated kernel, and add the 90-degree rotated, equally processed noise
   field (:class:`blendflag.shear.metacal_ops.MetacalOperators`);
2. detection on each image separately, with the pipeline's detector and its
   settings (``config.detect``, through the ``blendflag_detect`` hook);
   a detection is kept only when it lies in the cell's core;
3. Gaussian-weighted moments (:mod:`blendflag.shear.moments`, weight FWHM
   ``weight_fwhm`` arcsec) on a stamp of each sheared image around each of
   its detections;
4. cuts, as flag bits: stamp at the edge or over masked pixels, failed
   moments, ``S/N < min_s2n``, ``T / T_psf < min_t_ratio`` (``T_psf``: the
   same moments of the reconvolution kernel).

The response is formed by the statistics from the separately detected and
selected catalogues (``VersionCatalogues``): nothing is matched between
versions, so the selection response of the detection and of every cut is in
R. With flaggers, each version's stamps go to them (``images``), so a blend
cut is made on each sheared image's own detections too.

Settings (``shear.options.metadetect`` in the pipeline config; defaults in
:data:`DEFAULTS`): ``cell_size`` and ``cell_buffer`` (pixels),
``weight_fwhm`` (arcsec), ``min_s2n``, ``min_t_ratio``, ``measure_size``
(stamp side for the moments, pixels), ``recentre`` (iterations moving the
weight to the light's weighted centroid; 0 keeps the detection's position,
as metadetect does), ``apodize`` (pixels of cosine taper at each cell's
edges, inside the buffer, against deconvolution ringing; 0 off), ``kernel``
(the reconvolution Gaussian: ``fitgauss``, ngmix's adaptive-moments fit as
metadetect uses, or ``kspace``, the stamp engine's), ``threshold_noise``
(``stated``: the detection threshold counts in units of the metacal images'
stated noise sigma ``sqrt(2) sigma``, as metadetect's does; ``measured``: in
units of the detector's own background rms, which the smoothing of the
metacal images makes smaller), ``detect`` (overrides of the pipeline's
detection settings on the metacal images, e.g. ``{thresh: 0.8, minarea: 4,
filter_fwhm: 3}``, metadetect's).

The noise-correction field of a cell comes from the run's seed and the
cell's index, so the +g and -g images of a pair get the same fields, and the
result does not depend on the number of workers.
"""

from __future__ import annotations

import time

import numpy as np

from blendflag import hookimpl
from blendflag.errors import BlendflagError
from blendflag.shear.catalogues import VersionCatalogues
from blendflag.shear.engine import ImageShearEngine
from blendflag.shear.results import (
    MCAL_FLAG_NAMES,
    METACAL_VERSIONS,
)
from blendflag_plugins.metadetect_cells import COLUMNS, CallerPluginManager, measure_cell

#: Settings and their defaults (``shear.options.metadetect`` overrides them).
DEFAULTS = {
    "cell_size": 200,
    "cell_buffer": 50,
    "weight_fwhm": 1.2,
    "min_s2n": 10.0,
    "min_t_ratio": 1.2,
    "measure_size": 33,
    "recentre": 0,
    "kernel": "fitgauss",
    "apodize": 10,
    "threshold_noise": "stated",
    "detect": {},
}


class Metadetection(ImageShearEngine):
    """Metadetection on cells: metacal images of the whole cell, detection on each.

    Parameters
    ----------
    config : blendflag.config.ShearConfig or None
        ``step`` and ``options["metadetect"]`` (see :data:`DEFAULTS`).
    """

    name = "metadetect"
    #: Below the per-object engines: ``--engine auto`` keeps per-object metacal.
    priority = 5

    @classmethod
    def available(cls) -> bool:
        """GalSim and sep are installed (found without importing them)."""
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in ("galsim", "sep"))

    @property
    def settings(self) -> dict:
        """:data:`DEFAULTS` updated with ``config.options["metadetect"]``.

        Raises
        ------
        BlendflagError
            An unknown setting, or a value out of range.
        """
        settings = self.engine_settings(DEFAULTS)
        if settings["threshold_noise"] not in ("stated", "measured"):
            raise BlendflagError(
                f"shear.options.{self.name}.threshold_noise: must be stated or measured, "
                f"got {settings['threshold_noise']!r}"
            )
        if settings["kernel"] not in ("kspace", "fitgauss"):
            raise BlendflagError(
                f"shear.options.{self.name}.kernel: must be kspace or fitgauss, "
                f"got {settings['kernel']!r}"
            )
        margin = settings["measure_size"] // 2 + 1 + max(settings["apodize"], 0)
        if settings["cell_size"] < 32 or settings["cell_buffer"] < margin:
            raise BlendflagError(
                f"shear.options.{self.name}: cell_size must be >= 32 and cell_buffer >= "
                f"measure_size / 2 + 1 + apodize ({margin}) pixels"
            )
        return settings

    def measure_image(self, image, weight, psf, pixel_scale, noise_sigma, rng) -> VersionCatalogues:
        """Metadetection of a whole image, serially (see the module docstring)."""
        from blendflag.config import DetectConfig, FlagConfig

        seed = int(rng.integers(2**31))
        return self.measure_cells(
            image, weight, psf, pixel_scale, noise_sigma, seed, DetectConfig(), FlagConfig()
        )

    def measure_context(self, context) -> VersionCatalogues:
        """Metadetection of the context's image, cells on ``context.workers`` or Dask.

        On a simulated field whose noise follows its sheared scene the
        correction field follows it too
        (:func:`blendflag.shear.inputs.context_correction_field`).
        """
        from blendflag.shear.inputs import context_correction_field

        return self.measure_cells(
            *self.context_inputs(context),
            int(context.seed),
            context.config.detect,
            context.config.flag,
            workers=context.workers,
            scheduler=context.scheduler,
            return_images=bool(context.flagger_objects),
            quiet=context.quiet,
            psf_model=getattr(context, "psf_model", None),
            pm=getattr(context, "pm", None),
            correction_field=context_correction_field(context),
        )

    def measure_cells(
        self,
        image,
        weight,
        psf,
        pixel_scale,
        noise_sigma,
        seed,
        detect_config,
        flag_config,
        workers=1,
        scheduler=None,
        return_images=False,
        quiet=True,
        psf_model=None,
        pm=None,
        correction_field=None,
    ) -> VersionCatalogues:
        """Measure every cell of ``image`` and join the cells' catalogues.

        Parameters
        ----------
        image : numpy.ndarray
            2-d image, background subtracted, ADU.
        weight : numpy.ndarray or None
            Inverse-variance weight; pixels of weight 0 are masked.
        psf : numpy.ndarray
            PSF image (sum 1, centred) at ``pixel_scale``.
        pixel_scale : float
            arcsec per pixel.
        noise_sigma : float
            Per-pixel noise sigma of the image, ADU.
        seed : int
            Seed of the cells' noise-correction fields.
        detect_config : blendflag.config.DetectConfig
        flag_config : blendflag.config.FlagConfig
            ``stamp_size`` of the stamps kept for flaggers.
        workers : int
            Processes. [default: 1]
        scheduler : str or None
            Dask scheduler address: cells become Dask tasks.
        return_images : bool
            Keep each version's stamps of its detections (for flaggers).
        quiet : bool
            No progress bar.
        psf_model : blendflag.psf.model.PSFModel or None
            A PSF that varies (a PSFEx model): each cell gets it at the centre
            of its core, drawn at ``psf``'s size; None: ``psf`` everywhere.
        pm : pluggy.PluginManager or None
            The caller's plugin manager: its ``blendflag_detect`` hook detects
            on the metacal images of cells measured in this process (a worker
            process or Dask uses its own, see
            :class:`~blendflag_plugins.metadetect_cells.CallerPluginManager`);
            None: this process's own too.
        correction_field : numpy.ndarray or None
            A unit-variance noise-correction field of the whole image, each
            cell correcting with its region of it; None: each cell's field is
            drawn from its seed (:func:`blendflag.shear.cells.cell_seeds`).

        Returns
        -------
        VersionCatalogues
            Units are the cells.
        """
        from blendflag._runtime.parallel import run_chunks
        from blendflag._runtime.progress import progress
        from blendflag.shear.cells import cell_grid, cell_seeds, cells_psf_description

        start = time.perf_counter()
        settings = self.settings
        image = np.asarray(image, dtype=np.float64)
        if settings["detect"]:
            from dataclasses import replace

            try:
                detect_config = replace(detect_config, **settings["detect"])
                detect_config.validate(f"shear.options.{self.name}.detect")
            except TypeError as exc:
                raise BlendflagError(f"shear.options.{self.name}.detect: {exc}") from None
        cells = cell_grid(image.shape, settings["cell_size"], settings["cell_buffer"])
        seeds = cell_seeds(seed, len(cells))
        caller_pm = CallerPluginManager(pm)
        tasks = []
        for cell, cell_seed in zip(cells, seeds, strict=True):
            y0, y1, x0, x1 = cell.region
            tasks.append(
                (
                    cell,
                    image[y0:y1, x0:x1],
                    None if weight is None else np.asarray(weight)[y0:y1, x0:x1],
                    cell.psf(psf, psf_model, pixel_scale),
                    float(pixel_scale),
                    float(noise_sigma),
                    self.step,
                    settings,
                    detect_config,
                    int(flag_config.stamp_size) if return_images else 0,
                    int(cell_seed) if correction_field is None else correction_field[y0:y1, x0:x1],
                    caller_pm,
                )
            )
        bar = progress(total=len(cells), desc="metadetect", quiet=quiet, unit="cell")
        try:
            parts = run_chunks(
                measure_cell, tasks, workers, on_done=lambda r: bar.update(1), scheduler=scheduler
            )
        finally:
            bar.close()
        result = _join(parts, self, return_images, time.perf_counter() - start, len(cells))
        result.meta["psf"] = cells_psf_description(psf_model)
        return result


def _join(parts, engine, return_images, seconds, n_cells) -> VersionCatalogues:
    """One catalogue per version from the cells' parts (cell index = unit)."""
    from astropy.table import Table

    tables, units, images = {}, {}, {} if return_images else None
    for v in METACAL_VERSIONS:
        cols = {c: np.concatenate([p[v]["columns"][c] for p in parts]) for c in COLUMNS}
        cols["MCAL_FLAGS"] = np.concatenate([p[v]["flags"] for p in parts]).astype(np.int32)
        cols["CELL"] = np.concatenate([p[v]["cell"] for p in parts]).astype(np.int64)
        tables[v] = Table(cols)
        units[v] = cols["CELL"]
        if return_images:
            images[v] = np.concatenate([p[v]["stamps"] for p in parts])
    n = len(tables["noshear"])
    names = dict(MCAL_FLAG_NAMES)
    meta = {
        "cells": n_cells,
        "seconds": seconds,
        "ms_per_detection": 1e3 * seconds / max(n, 1),
        "median_noise_sigma": parts[0]["noise_sigma"] if parts else None,
        "reconvolution_sigma_arcsec": parts[0]["target_sigma"] if parts else None,
        "settings": engine.settings,
    }
    return VersionCatalogues(
        tables=tables,
        images=images,
        units=units,
        engine=engine.name,
        step=engine.step,
        meta=meta,
        flag_names=names,
        sky_cells=True,  # its units are its cells of the image
    )


@hookimpl
def blendflag_register_shear_engines():
    return [Metadetection]
