"""One cell of the built-in metadetection engine (see :mod:`blendflag_plugins.metadetect_engine`).

Module-level functions, picklable for worker processes and Dask: the five
metacal images of the cell, detection on each, the Gaussian-weighted moments
and cuts, positions before each version's shear.
"""

from __future__ import annotations

import numpy as np

from blendflag.errors import BlendflagError
from blendflag.shear.results import (
    MCAL_LOW_S2N,
    MCAL_MOMENTS_FAILED,
    MCAL_SMALL_SIZE,
    MCAL_STAMP_FLAGGED,
    METACAL_VERSIONS,
)

#: Float columns of every version's catalogue.
COLUMNS = (
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


def edge_window(shape: tuple[int, int], width: int) -> np.ndarray:
    """A window that rises from 0 to 1 over ``width`` pixels at each edge (cosine taper).

    Deconvolving a cell cut out of an image rings from its hard edges (light of
    galaxies the edge cuts through); tapering the outer part of the buffer
    keeps that ringing orders of magnitude below it, and the cores untouched
    (``width`` is well inside the buffer). ``width`` 0: all ones.
    """
    if width <= 0:
        return np.ones(shape)
    axes = []
    for n in shape:
        t = np.minimum(np.arange(n), np.arange(n)[::-1]).astype(np.float64)
        axes.append(np.where(t < width, 0.5 * (1.0 - np.cos(np.pi * (t + 0.5) / width)), 1.0))
    return axes[0][:, None] * axes[1][None, :]


def measure_cell(
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
    pm=None,
) -> dict:
    """Metadetection of one cell (module level: picklable; one task of ``run_chunks``).

    ``pm`` is the caller's plugin manager, whose ``blendflag_detect`` hook
    detects on each version's image: a :class:`CallerPluginManager` (what a
    task carries), a plugin manager, or None for this process's own
    (:func:`process_plugin_manager`).

    ``seed`` is the cell's noise-correction seed, or its region of a
    whole-image unit field (:func:`blendflag.shear.cells.cell_correction`).

    Returns ``{version: {"columns", "flags", "cell", "stamps"}}`` plus the
    cell's noise sigma and kernel size; positions are the image's, 1-based.
    """
    from blendflag.io.stamps import cut_stamps
    from blendflag.shear.cells import cell_correction
    from blendflag.shear.metacal_ops import MetacalOperators
    from blendflag.shear.moments import weighted_moments

    if isinstance(pm, CallerPluginManager):
        pm = pm.pm
    ops = MetacalOperators.from_psf(psf, pixel_scale, step, settings["kernel"])
    good = np.isfinite(array) if weight is None else np.isfinite(array) & (weight > 0)
    if not np.any(array[good]):  # all masked or all zero: nothing to detect
        return _empty_cell(cell, noise_sigma, ops, flag_stamp_size)
    window = edge_window(array.shape, int(settings["apodize"]))
    images = ops.images(np.where(good, array, 0.0) * window)
    sigma = noise_sigma
    if noise_sigma > 0:
        noise = cell_correction(seed, array.shape, noise_sigma) * window
        ops.add_noise_correction(images, noise)
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
        found = _detect(version_image, detect_weight, config, pm)
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
            "columns": {c: np.zeros(0) for c in COLUMNS},
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


def _detect(image, weight, detect_config, pm=None):
    """The pipeline's detector (``detect_config.backend``) on one metacal image.

    Asks ``pm``'s ``blendflag_detect`` hook; None asks this process's own
    plugin manager (:func:`process_plugin_manager`).

    Raises
    ------
    BlendflagError
        No detector answered for the backend.
    """
    if pm is None:
        pm = process_plugin_manager()
    found = pm.hook.blendflag_detect(image=image, weight=weight, config=detect_config)
    if found is None:
        raise BlendflagError(f"no detector answered for backend {detect_config.backend!r}")
    return found


class CallerPluginManager:
    """The caller's plugin manager, as a :func:`measure_cell` task carries it.

    In the caller's process (cells measured serially) it is the caller's
    own. A plugin manager holds modules, which cannot be pickled, so a task
    sent to a spawned worker process or to Dask carries an empty one
    (``pm`` None) and the worker detects with :func:`process_plugin_manager`:
    plugins the caller registered by hand are not seen there.

    Parameters
    ----------
    pm : pluggy.PluginManager or None
        The caller's plugin manager. [default: None]
    """

    def __init__(self, pm=None):
        self.pm = pm

    def __reduce__(self):
        return (CallerPluginManager, ())


_PM = []


def process_plugin_manager():
    """This process's own plugin manager, built once (building one loads every entry point).

    For cells measured without the caller's (worker processes, Dask, or a
    caller that has none).
    """
    if not _PM:
        from blendflag.plugins import get_plugin_manager

        _PM.append(get_plugin_manager())
    return _PM[0]
