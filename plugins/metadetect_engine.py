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
as metadetect does), ``kernel`` (the reconvolution Gaussian: ``fitgauss``,
ngmix's adaptive-moments fit as metadetect uses, or ``kspace``, the stamp
engine's), ``threshold_noise`` (``stated``: the detection threshold counts in units of
the metacal images' stated noise sigma ``sqrt(2) sigma``, as metadetect's
does; ``measured``: in units of the detector's own background rms, which the
smoothing of the metacal images makes smaller), ``detect`` (overrides of the
pipeline's detection settings on the metacal images, e.g.
``{thresh: 0.8, minarea: 4, filter_fwhm: 3}``, metadetect's).

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
    MCAL_LOW_S2N,
    MCAL_MOMENTS_FAILED,
    MCAL_SMALL_SIZE,
    MCAL_STAMP_FLAGGED,
    METACAL_VERSIONS,
)

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
    "threshold_noise": "stated",
    "detect": {},
}

#: Float columns of every version's catalogue.
_COLUMNS = (
    "X_IMAGE",
    "Y_IMAGE",
    "X_UNSHEARED",
    "Y_UNSHEARED",
    "G1",
    "G2",
    "T",
    "T_RATIO",
    "S2N",
    "FLUX",
)


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
        given = dict((self.config.options or {}).get(self.name) or {})
        unknown = sorted(set(given) - set(DEFAULTS))
        if unknown:
            raise BlendflagError(
                f"shear.options.{self.name}: unknown setting {unknown[0]!r} "
                f"(known: {', '.join(DEFAULTS)})"
            )
        settings = {k: type(v)(given.get(k, v)) for k, v in DEFAULTS.items()}
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
        if settings["cell_size"] < 32 or settings["cell_buffer"] < settings["measure_size"]:
            raise BlendflagError(
                f"shear.options.{self.name}: cell_size must be >= 32 and cell_buffer >= "
                f"measure_size ({settings['measure_size']}) pixels"
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
        """Metadetection of the context's image, cells on ``context.workers`` or Dask."""
        from blendflag.shear.inputs import context_pixel_scale, image_noise

        if context.image is None:
            raise BlendflagError(f"the {self.name} engine needs an image")
        if context.psf is None:
            raise BlendflagError("measure_shear needs a PSF image (give --psf)")
        return self.measure_cells(
            context.image,
            context.weight,
            context.psf,
            context_pixel_scale(context),
            image_noise(context),
            int(context.seed),
            context.config.detect,
            context.config.flag,
            workers=context.workers,
            scheduler=context.scheduler,
            return_images=bool(context.flagger_objects),
            quiet=context.quiet,
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

        Returns
        -------
        VersionCatalogues
            Units are the cells.
        """
        from blendflag.parallel import run_chunks
        from blendflag.progress import progress
        from blendflag.shear.cells import cell_grid

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
        seeds = np.random.SeedSequence(seed).generate_state(len(cells))
        tasks = []
        for cell, cell_seed in zip(cells, seeds, strict=True):
            y0, y1, x0, x1 = cell.region
            tasks.append(
                (
                    cell,
                    image[y0:y1, x0:x1],
                    None if weight is None else np.asarray(weight)[y0:y1, x0:x1],
                    np.asarray(psf, dtype=np.float64),
                    float(pixel_scale),
                    float(noise_sigma),
                    self.step,
                    settings,
                    detect_config,
                    int(flag_config.stamp_size) if return_images else 0,
                    int(cell_seed),
                )
            )
        bar = progress(total=len(cells), desc="metadetect", quiet=quiet, unit="cell")
        try:
            parts = run_chunks(
                _measure_cell, tasks, workers, on_done=lambda r: bar.update(1), scheduler=scheduler
            )
        finally:
            bar.close()
        return _join(parts, self, return_images, time.perf_counter() - start, len(cells))


def _join(parts, engine, return_images, seconds, n_cells) -> VersionCatalogues:
    """One catalogue per version from the cells' parts (cell index = unit)."""
    from astropy.table import Table

    tables, units, images = {}, {}, {} if return_images else None
    for v in METACAL_VERSIONS:
        cols = {c: np.concatenate([p[v]["columns"][c] for p in parts]) for c in _COLUMNS}
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
    )


def _measure_cell(
    cell,
    array,
    weight,
    psf,
    pixel_scale,
    noise_sigma,
    step,
    settings,
    detect_config,
    flag_stamp_size,
    seed,
) -> dict:
    """Metadetection of one cell (module level: picklable; one task of ``run_chunks``).

    Returns ``{version: {"columns", "flags", "cell", "stamps"}}`` plus the
    cell's noise sigma and kernel size; positions are the image's, 1-based.
    """
    from blendflag.shear.metacal_ops import MetacalOperators
    from blendflag.shear.moments import weighted_moments
    from blendflag.stamps import cut_stamps

    ops = MetacalOperators.from_psf(psf, pixel_scale, step, settings["kernel"])
    good = np.isfinite(array) if weight is None else np.isfinite(array) & (weight > 0)
    if not np.any(array[good]):  # all masked or all zero: nothing to detect
        return _empty_cell(cell, noise_sigma, ops, flag_stamp_size)
    images = ops.images(np.where(good, array, 0.0))
    sigma = noise_sigma
    if noise_sigma > 0:
        rng = np.random.default_rng(seed)
        ops.add_noise_correction(images, rng.normal(0.0, noise_sigma, size=array.shape))
        sigma = noise_sigma * np.sqrt(2.0)
    size = int(settings["measure_size"])
    half = size // 2
    psf_moments = weighted_moments(
        ops.target_image(size)[None],
        np.array([[half, half]]),
        settings["weight_fwhm"],
        pixel_scale,
        0.0,
    )
    t_psf = float(psf_moments.T[0])
    detect_weight = np.where(good, 1.0 / max(sigma, 1e-30) ** 2, 0.0)
    y0, _, x0, _ = cell.region
    out = {"noise_sigma": float(noise_sigma), "target_sigma": float(ops.target.sigma)}
    for version, version_image in images.items():
        config = detect_config
        if settings["threshold_noise"] == "stated" and sigma > 0:
            config = _stated_threshold(version_image, good, sigma, detect_config)
        found = _detect(version_image, detect_weight, config)
        x = np.asarray(found["X_IMAGE"], dtype=np.float64) - 1.0  # 0-based, cell
        y = np.asarray(found["Y_IMAGE"], dtype=np.float64) - 1.0
        # ownership by the position before the version's shear: the images of
        # two cells are sheared about different centres, the galaxy is one
        ux, uy = _unshear(x, y, array.shape, ops.shears[version])
        keep = cell.owns(ux + x0, uy + y0)
        x, y, ux, uy = x[keep], y[keep], ux[keep], uy[keep]
        stamps, stamp_flags = cut_stamps(version_image, x + 1.0, y + 1.0, size, weight=weight)
        centres = np.column_stack([half + x - np.rint(x), half + y - np.rint(y)])
        moments = weighted_moments(
            stamps, centres, settings["weight_fwhm"], pixel_scale, sigma, settings["recentre"]
        )
        flags = np.zeros(len(x), dtype=np.int32)
        flags[stamp_flags != 0] |= MCAL_STAMP_FLAGGED
        flags[~moments.ok] |= MCAL_MOMENTS_FAILED
        with np.errstate(invalid="ignore"):
            flags[moments.ok & ~(moments.s2n >= settings["min_s2n"])] |= MCAL_LOW_S2N
            t_ratio = moments.T / t_psf
            flags[moments.ok & ~(t_ratio >= settings["min_t_ratio"])] |= MCAL_SMALL_SIZE
        columns = {
            "X_IMAGE": x + x0 + 1.0,
            "Y_IMAGE": y + y0 + 1.0,
            "X_UNSHEARED": ux + x0 + 1.0,
            "Y_UNSHEARED": uy + y0 + 1.0,
            "G1": moments.e1,
            "G2": moments.e2,
            "T": moments.T,
            "T_RATIO": t_ratio,
            "S2N": moments.s2n,
            "FLUX": moments.flux,
        }
        stamps_out = None
        if flag_stamp_size:
            stamps_out, _ = cut_stamps(version_image, x + 1.0, y + 1.0, flag_stamp_size)
        out[version] = {
            "columns": {c: np.asarray(v, dtype=np.float64) for c, v in columns.items()},
            "flags": flags,
            "cell": np.full(len(x), cell.index, dtype=np.int64),
            "stamps": stamps_out,
        }
    return out


def _empty_cell(cell, noise_sigma, ops, flag_stamp_size) -> dict:
    """The part of a cell with no pixel to measure: no detection in any version."""
    out = {"noise_sigma": float(noise_sigma), "target_sigma": float(ops.target.sigma)}
    for version in METACAL_VERSIONS:
        out[version] = {
            "columns": {c: np.zeros(0) for c in _COLUMNS},
            "flags": np.zeros(0, dtype=np.int32),
            "cell": np.zeros(0, dtype=np.int64),
            "stamps": np.zeros((0, flag_stamp_size, flag_stamp_size), np.float32)
            if flag_stamp_size
            else None,
        }
    return out


def _unshear(x, y, shape, shear):
    """Positions before the version's shear (0-based cell pixels).

    The metacal images are sheared about the cell's centre (GalSim's true
    centre of the drawn image), so a position ``c + S d`` maps back to
    ``c + S^-1 (p - c)``: what truth matching on each version needs.
    """
    if shear is None:
        return x, y
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    inverse = np.linalg.inv(shear.getMatrix())
    d = inverse @ np.vstack([x - cx, y - cy])
    return d[0] + cx, d[1] + cy


def _stated_threshold(image, good, sigma, detect_config):
    """The detection settings with ``thresh`` rescaled to count in units of ``sigma``.

    The detector thresholds in units of its own background rms; the
    metacal images' pixel rms is below their stated noise (the reconvolution
    smooths the noise), so ``thresh`` is multiplied by ``sigma / rms``.
    """
    from dataclasses import replace

    pixels = image[good]
    if pixels.size < 100:
        return detect_config
    mad = np.median(np.abs(pixels - np.median(pixels)))
    rms = 1.4826 * mad
    if not rms > 0:
        return detect_config
    return replace(detect_config, thresh=float(detect_config.thresh * sigma / rms))


def _detect(image, weight, detect_config):
    """The pipeline's detector (``detect_config.backend``) on one metacal image."""
    from blendflag.plugins import get_plugin_manager

    found = _plugin_manager(get_plugin_manager).hook.blendflag_detect(
        image=image, weight=weight, config=detect_config
    )
    if found is None:
        raise BlendflagError(f"no detector answered for backend {detect_config.backend!r}")
    return found


_PM = []


def _plugin_manager(factory):
    """One plugin manager per process (building one loads every entry point)."""
    if not _PM:
        _PM.append(factory())
    return _PM[0]


@hookimpl
def blendflag_register_shear_engines():
    return [Metadetection]
