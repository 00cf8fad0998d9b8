"""The ``metadetect_ext`` engine: the reference metadetection, ``metadetect.do_metadetect``.

An adapter to esheldon's ``metadetect`` (GPL; with ngmix, meds and sxdes, none
of them on PyPI), used only when ``import metadetect`` works. Nothing is
imported at plugin load: without the package the engine is registered and
reports ``available() == False``; selecting it by name then fails with a
one-line error. blendflag never depends on it.

One call = one ``do_metadetect`` on the whole image (one unit); metadetect
itself has no cells. The configuration is metadetect's own shear-test
configuration (:data:`METADETECT_CONFIG`: wmom, weight FWHM 1.2 arcsec,
``psf: fitgauss``, sep threshold 0.8, 32-pixel stamps). Its result (one
structured array per version: ``wmom_g``, ``wmom_flags``, ``wmom_s2n``,
``wmom_T_ratio``, ``sx_row``, ``sx_col`` ...) becomes a
:class:`~blendflag.shear.catalogues.VersionCatalogues` whose cuts are flag
bits, as in the built-in ``metadetect`` engine: ``S/N <= min_s2n`` and
``T/T_psf <= min_t_ratio`` (metadetect's own strict ``>`` cuts).

Settings: ``shear.options.metadetect_ext`` (when the config has ``options``)
overrides :data:`DEFAULTS`.
"""

from __future__ import annotations

import copy
import importlib.util
import time

import numpy as np

from blendflag import hookimpl
from blendflag.errors import BlendflagError
from blendflag.shear import results as _results
from blendflag.shear.catalogues import VersionCatalogues
from blendflag.shear.engine import ImageShearEngine

#: S/N cut: rows with ``wmom_s2n <= MIN_S2N`` get the low-S/N bit. [default: 10]
MIN_S2N = 10.0
#: Size cut: rows with ``wmom_T_ratio <= MIN_T_RATIO`` get the small-size bit. [default: 1.2]
MIN_T_RATIO = 1.2
#: Gaussian weight FWHM of the wmom moments, arcsec. [default: 1.2]
WEIGHT_FWHM = 1.2
#: Settings and their defaults (``shear.options.metadetect_ext`` overrides them).
DEFAULTS = {
    "min_s2n": MIN_S2N,
    "min_t_ratio": MIN_T_RATIO,
    "weight_fwhm": WEIGHT_FWHM,
    # cells as the built-in engine's (blendflag.shear.cells); 0: the whole image
    "cell_size": 200,
    "cell_buffer": 50,
    # the noise-correction field: "shared", the one the built-in engine draws
    # for the same cell and seed (blendflag.shear.cells.correction_noise, given
    # to ngmix as the observation's noise image); "package", ngmix's own draw
    "noise_field": "shared",
}

#: Cut bits: the core's.
LOW_S2N = _results.MCAL_LOW_S2N
SMALL_SIZE = _results.MCAL_SMALL_SIZE
#: Names of the bits this engine sets.
FLAG_NAMES = dict(_results.MCAL_FLAG_NAMES)

#: metadetect's edge bit (``metadetect.defaults.BMASK_EDGE``, ``procflags.EDGE_HIT``).
BMASK_EDGE = 2**30
EDGE_HIT = 2**20
#: bmask bit set on pixels of zero weight: not detected on, and a stamp over one is flagged.
BMASK_MASKED = 1
#: The noise of a noiseless image: this fraction of its peak (metadetect's own
#: noiseless check uses S/N 1e6), so that sep's threshold stays above round-off.
NOISELESS_FRACTION = 1.0e-6

#: 7x7 Gaussian of FWHM 3 pixels: sep's detection filter in metadetect's configuration.
_FILTER_ROWS = (
    (0.004963, 0.021388, 0.051328, 0.068707, 0.051328, 0.021388, 0.004963),
    (0.021388, 0.092163, 0.221178, 0.296069, 0.221178, 0.092163, 0.021388),
    (0.051328, 0.221178, 0.530797, 0.710525, 0.530797, 0.221178, 0.051328),
    (0.068707, 0.296069, 0.710525, 0.951108, 0.710525, 0.296069, 0.068707),
)

#: do_metadetect's configuration (metadetect/shear_meas_test/test_shear_meas.py, 0.13.0).
METADETECT_CONFIG = {
    "model": "wmom",
    "weight": {"fwhm": WEIGHT_FWHM},
    "metacal": {"psf": "fitgauss", "types": ["noshear", "1p", "1m", "2p", "2m"]},
    "sx": {
        "detect_thresh": 0.8,
        "deblend_cont": 0.00001,
        "minarea": 4,
        "filter_type": "conv",
        "filter_kernel": [list(r) for r in _FILTER_ROWS + _FILTER_ROWS[2::-1]],
    },
    "meds": {
        "min_box_size": 32,
        "max_box_size": 32,
        "box_type": "iso_radius",
        "rad_min": 4,
        "rad_fac": 2,
        "box_padding": 2,
    },
    "bmask_flags": BMASK_EDGE | BMASK_MASKED,
    "nodet_flags": BMASK_MASKED,
}

#: Float columns of every version's catalogue (as the built-in engine's).
COLUMNS = (
    *("X_IMAGE", "Y_IMAGE", "X_UNSHEARED", "Y_UNSHEARED"),
    *("G1", "G2", "T", "T_RATIO", "S2N", "FLUX"),
)


class MetadetectExternal(ImageShearEngine):
    """``metadetect.do_metadetect`` on each cell of the image (the reference implementation).

    Parameters
    ----------
    config : blendflag.config.ShearConfig or None
        ``step`` (metacal shear step) and, when present,
        ``options["metadetect_ext"]`` (see :data:`DEFAULTS`).
    """

    name = "metadetect_ext"
    #: Last in ``--engine auto``: run only when asked for by name.
    priority = -10

    @classmethod
    def available(cls) -> bool:
        """``metadetect`` and ``ngmix`` can be found (without importing them)."""
        return all(importlib.util.find_spec(m) is not None for m in ("metadetect", "ngmix"))

    @property
    def settings(self) -> dict:
        """:data:`DEFAULTS` updated with ``config.options["metadetect_ext"]``.

        Raises
        ------
        BlendflagError
            An unknown setting, or a ``noise_field`` other than shared or package.
        """
        settings = self.engine_settings(DEFAULTS)
        if settings["noise_field"] not in ("shared", "package"):
            raise BlendflagError(
                f"shear.options.{self.name}.noise_field: must be shared or package, "
                f"got {settings['noise_field']!r}"
            )
        return settings

    def metadetect_config(self) -> dict:
        """The ``config`` given to ``do_metadetect`` (step and weight FWHM from the settings)."""
        settings = self.settings
        config = copy.deepcopy(METADETECT_CONFIG)
        config["metacal"]["step"] = self.step
        config["weight"]["fwhm"] = settings["weight_fwhm"]
        config["metacal"]["use_noise_image"] = settings["noise_field"] == "shared"
        return config

    def measure_image(self, image, weight, psf, pixel_scale, noise_sigma, rng) -> VersionCatalogues:
        """Run ``do_metadetect`` on each cell of the image (one PSF image for all).

        Parameters
        ----------
        image : numpy.ndarray
            2-d image, background subtracted, ADU; non-finite pixels are masked.
        weight : numpy.ndarray or None
            Inverse variance (1/ADU^2), 0 where masked; None: ``1/noise_sigma^2``.
        psf : numpy.ndarray
            PSF image at the same pixel scale, centred (normalised here).
        pixel_scale : float
            arcsec per pixel.
        noise_sigma : float
            Per-pixel noise sigma, ADU; 0 means noiseless (see :data:`NOISELESS_FRACTION`).
        rng : numpy.random.Generator
            Its first draw is the run's seed, as in the built-in engine (see
            :meth:`measure_cells`).

        Returns
        -------
        VersionCatalogues
            See :meth:`measure_cells`.
        """
        seed = int(rng.integers(2**31))
        return self.measure_cells(image, weight, psf, pixel_scale, noise_sigma, seed)

    def measure_context(self, context) -> VersionCatalogues:
        """``do_metadetect`` on the context's image; a varying PSF is read at each cell's centre.

        On a simulated field whose noise follows its sheared scene the shared
        correction field follows it too, as the built-in engine's
        (:func:`blendflag.shear.inputs.context_correction_field`).
        """
        from blendflag.shear.inputs import context_correction_field

        return self.measure_cells(
            *self.context_inputs(context),
            int(context.seed),
            psf_model=getattr(context, "psf_model", None),
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
        psf_model=None,
        correction_field=None,
    ) -> VersionCatalogues:
        """Run ``do_metadetect`` on every cell and convert its five catalogues.

        Parameters
        ----------
        image, weight, psf, pixel_scale, noise_sigma
            As :meth:`measure_image`.
        seed : int
            The run's seed: each cell's noise-correction field (setting
            ``noise_field: shared``, the built-in engine's field for the same
            cell) and the seed of metadetect's ``RandomState``.
        psf_model : blendflag.psf.model.PSFModel or None
            A PSF that varies (a PSFEx model): each cell gets it at the centre
            of its core, drawn at ``psf``'s size; None: ``psf`` everywhere.
        correction_field : numpy.ndarray or None
            A unit-variance correction field of the whole image (setting
            ``noise_field: shared``: each cell's region of it); None: drawn
            per cell from ``seed``.

        Returns
        -------
        VersionCatalogues
            Units are the cells (``blendflag.shear.cells``, ``cell_size`` 0: one
            cell); a cell keeps the detections whose position before the shear
            (``sx_col_noshear``, ``sx_row_noshear``) lies in its core.
            ``meta["failed"]`` holds the reason when metadetect
            returned nothing for a cell (its five catalogues are then empty).

        Raises
        ------
        BlendflagError
            Input no measurement can use (not 2-d, bad PSF or pixel scale).
        """
        import metadetect

        from blendflag.shear.cells import cell_grid, cell_seeds, cells_psf_description

        start = time.perf_counter()
        settings = self.settings
        config = self.metadetect_config()
        image = np.asarray(image)
        if image.ndim != 2:
            raise BlendflagError(f"the image must be 2-d, got shape {image.shape}")
        size = int(settings["cell_size"]) or max(image.shape)
        cells = cell_grid(image.shape, size, int(settings["cell_buffer"]))
        parts, failures, sigma = {v: [] for v in _results.METACAL_VERSIONS}, [], noise_sigma
        for cell, cell_seed in zip(cells, cell_seeds(seed, len(cells)), strict=True):
            y0, y1, x0, x1 = cell.region
            region_weight = None if weight is None else np.asarray(weight)[y0:y1, x0:x1]
            mbobs, sigma = _observation(
                image[y0:y1, x0:x1],
                region_weight,
                cell.psf(psf, psf_model, pixel_scale),
                pixel_scale,
                noise_sigma,
                int(cell_seed) if correction_field is None else correction_field[y0:y1, x0:x1],
            )
            state = np.random.RandomState(int(cell_seed) % (2**31 - 1))
            failed = None
            try:
                result = metadetect.do_metadetect(config, mbobs, state)
            except Exception as exc:  # noqa: BLE001 - a foreign package: any failure is one cell's
                result, failed = None, f"{type(exc).__name__}: {exc}"
            if result is None:
                failures.append(failed or "do_metadetect returned None (PSF fit or no pixels)")
            for v in _results.METACAL_VERSIONS:
                table = _version_table(None if result is None else result.get(v), settings)
                table["X_IMAGE"] += x0
                table["Y_IMAGE"] += y0
                table["X_UNSHEARED"] += x0
                table["Y_UNSHEARED"] += y0
                # metadetect's positions before the shear: one owner per galaxy
                keep = cell.owns(table["X_UNSHEARED"] - 1.0, table["Y_UNSHEARED"] - 1.0)
                table = table[keep]
                table["CELL"] = np.full(len(table), cell.index, dtype=np.int64)
                parts[v].append(table)
        from astropy.table import vstack

        tables = {v: vstack(parts[v], metadata_conflicts="silent") for v in parts}
        units = {v: np.asarray(t["CELL"], dtype=np.int64) for v, t in tables.items()}
        seconds = time.perf_counter() - start
        meta = {
            "seconds": seconds,
            "noise_sigma": float(sigma),
            "metadetect_version": getattr(metadetect, "__version__", "?"),
            "settings": settings,
            "cells": len(cells),
            "psf": cells_psf_description(psf_model),
        }
        if failures:
            meta["failed"] = f"{len(failures)} of {len(cells)} cells: {failures[0]}"
        return VersionCatalogues(
            tables=tables,
            units=units,
            engine=self.name,
            step=self.step,
            meta=meta,
            flag_names=dict(FLAG_NAMES),
            sky_cells=True,  # its units are its cells of the image
        )


def _observation(image, weight, psf, pixel_scale, noise_sigma, cell_seed):
    """The one-band ``ngmix.MultiBandObsList`` of the image, and the noise sigma used.

    Its noise image is :func:`blendflag.shear.cells.cell_correction` of
    ``cell_seed`` (a seed, or the cell's region of a whole-image unit field)
    at the noise sigma used.
    """
    import ngmix

    from blendflag.shear.cells import cell_correction

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 32:
        raise BlendflagError(f"the image must be 2-d and at least 32x32 pixels, got {image.shape}")
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2 or not np.all(np.isfinite(psf)) or not psf.sum() > 0:
        raise BlendflagError("the PSF must be a finite 2-d image of positive sum")
    psf = psf / psf.sum()
    scale = float(pixel_scale)
    if not (np.isfinite(scale) and scale > 0):
        raise BlendflagError(f"pixel scale must be positive (arcsec/pixel), got {pixel_scale!r}")
    good = np.isfinite(image)
    if weight is not None:
        weight = np.asarray(weight, dtype=np.float64)
        good &= np.isfinite(weight) & (weight > 0)
    image = np.where(good, image, 0.0)
    sigma = float(noise_sigma) if np.isfinite(noise_sigma) else 0.0
    if sigma <= 0:
        sigma = NOISELESS_FRACTION * max(float(np.abs(image).max()), 1e-30)
    if weight is None or sigma != float(noise_sigma):
        weight = np.full(image.shape, 1.0 / sigma**2)
    weight = np.where(good, weight, 0.0)
    ny, nx = image.shape
    jac = ngmix.DiagonalJacobian(row=(ny - 1) / 2.0, col=(nx - 1) / 2.0, scale=scale)
    psf_jac = ngmix.DiagonalJacobian(
        row=(psf.shape[0] - 1) / 2.0, col=(psf.shape[1] - 1) / 2.0, scale=scale
    )
    psf_obs = ngmix.Observation(
        psf, weight=np.full(psf.shape, (1e3 / psf.max()) ** 2), jacobian=psf_jac
    )
    obs = ngmix.Observation(
        image,
        weight=weight,
        bmask=np.where(good, 0, BMASK_MASKED).astype(np.int32),
        ormask=np.zeros(image.shape, dtype=np.int32),
        noise=cell_correction(cell_seed, image.shape, sigma),
        jacobian=jac,
        psf=psf_obs,
        ignore_zero_weight=False,
    )
    obslist = ngmix.ObsList()
    obslist.append(obs)
    mbobs = ngmix.MultiBandObsList()
    mbobs.append(obslist)
    return mbobs, sigma


def _version_table(data, settings):
    """One version's catalogue from metadetect's structured array (None: no detection)."""
    from astropy.table import Table

    if data is None or len(data) == 0:
        cols = {c: np.zeros(0) for c in COLUMNS}
        cols["MCAL_FLAGS"] = np.zeros(0, dtype=np.int32)
        cols["WMOM_FLAGS"] = np.zeros(0, dtype=np.int32)
        return Table(cols)
    g = np.asarray(data["wmom_g"], dtype=np.float64)
    wmom_flags = np.asarray(data["wmom_flags"], dtype=np.int64)
    s2n = np.asarray(data["wmom_s2n"], dtype=np.float64)
    t_ratio = np.asarray(data["wmom_T_ratio"], dtype=np.float64)
    flags = np.zeros(len(data), dtype=np.int32)
    flags[(wmom_flags & EDGE_HIT) != 0] |= _results.MCAL_STAMP_FLAGGED
    flags[(wmom_flags & ~EDGE_HIT) != 0] |= _results.MCAL_MOMENTS_FAILED
    ok = wmom_flags == 0
    flags[ok & ~np.isfinite(g).all(axis=1)] |= _results.MCAL_NONFINITE_RESULT
    with np.errstate(invalid="ignore"):
        flags[ok & ~(s2n > settings["min_s2n"])] |= LOW_S2N
        flags[ok & ~(t_ratio > settings["min_t_ratio"])] |= SMALL_SIZE
    cols = {
        "X_IMAGE": np.asarray(data["sx_col"], dtype=np.float64) + 1.0,
        "Y_IMAGE": np.asarray(data["sx_row"], dtype=np.float64) + 1.0,
        "X_UNSHEARED": np.asarray(data["sx_col_noshear"], dtype=np.float64) + 1.0,
        "Y_UNSHEARED": np.asarray(data["sx_row_noshear"], dtype=np.float64) + 1.0,
        "G1": g[:, 0],
        "G2": g[:, 1],
        "T": np.asarray(data["wmom_T"], dtype=np.float64),
        "T_RATIO": t_ratio,
        "S2N": s2n,
        "FLUX": np.asarray(data["wmom_band_flux"], dtype=np.float64).reshape(len(data)),
        "MCAL_FLAGS": flags,
        "WMOM_FLAGS": wmom_flags.astype(np.int32),
    }
    return Table(cols)


@hookimpl
def blendflag_register_shear_engines():
    return [MetadetectExternal]
