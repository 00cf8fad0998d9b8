"""The pixels of a simulated field: its galaxies pasted in order, then its noise and weight.

Galaxies are drawn in chunks (:func:`blendflag.simulate.field_draw.draw_field_task`,
or :func:`blendflag.simulate.population_draw.draw_population_task` for the
``counts`` population, in worker processes or not) and their noiseless
stamps are added to the float32 image in galaxy order, whatever order the
chunks finish in, so the image's bytes never depend on the number of workers. Used by
:func:`blendflag.simulate.field.simulate_field`.
"""

from __future__ import annotations

import numpy as np

from blendflag._runtime.parallel import run_chunks
from blendflag.simulate.field_draw import draw_field_task, footprint, stamp_signal
from blendflag.simulate.field_layout import GalaxyLayout
from blendflag.simulate.field_stars import paste
from blendflag.simulate.population import uses_counts
from blendflag.simulate.population_draw import draw_population_task
from blendflag.simulate.presets import DatasetConfig


class _GalaxyPaster:
    """``on_done`` of the drawing chunks: pastes their stamps in galaxy order, keeps footprints.

    A chunk that finishes before the ones ahead of it waits for them, so the
    float32 sums are always made in the same order.

    Parameters
    ----------
    image : numpy.ndarray
        float32 image the stamps are added to (ADU), in place.
    layout : GalaxyLayout
        The galaxies (which half of a rotated-pair image each belongs to).
    thresh_field : float or None
        Isophote at the field's own noise (ADU per pixel); None: no footprints
        at the field's depth (a noiseless field).
    bar : progress bar or None
        Advanced by the galaxies of each chunk.
    """

    def __init__(self, image: np.ndarray, layout: GalaxyLayout, thresh_field, bar) -> None:
        n = len(layout.params)
        self.image = image
        self.layout = layout
        self.thresh_field = thresh_field
        self.bar = bar
        self.footprints = [None] * n
        self.signals = [0.0] * n
        self.field_footprints = [None] * n if thresh_field is not None else None
        self._waiting = {}  # chunks that finished early, keyed by first galaxy index
        self._next = 0

    def __call__(self, result) -> None:
        """Take one chunk's ``(first index, stamps)`` and paste every chunk now in turn."""
        self._waiting[result[0]] = result[1]
        while self._next in self._waiting:
            start = self._next
            chunk = self._waiting.pop(start)
            for k, stamp in enumerate(chunk):
                self._paste(start + k, *stamp)
            self._next = start + len(chunk)
        if self.bar is not None:
            self.bar.update(len(result[1]))

    def _paste(self, index: int, x0: int, y0: int, arr, fx0: int, fy0: int, mask) -> None:
        """Keep galaxy ``index``'s footprints and add its stamp (first pixel at 1-based x0, y0)."""
        self.footprints[index] = (fx0, fy0, mask)
        self.signals[index] = stamp_signal(arr)
        if self.thresh_field is not None:
            self.field_footprints[index] = footprint(arr, x0, y0, self.thresh_field)
        lo, hi = self.layout.columns_of(index, self.image.shape[1])
        paste(self.image, arr, x0, y0, lo, hi)


def _galaxy_tasks(config, layout: GalaxyLayout, shear, thresh: float, psf_at, step: int) -> list:
    """Arguments of :func:`draw_field_task` for chunks of ``step`` galaxies (thresh in ADU)."""
    params, xs, ys = layout.params, layout.xs, layout.ys
    return [
        (i, config, params[i : i + step], xs[i : i + step], ys[i : i + step], shear, thresh)
        + ((psf_at,) if psf_at is not None else ())
        for i in range(0, len(params), step)
    ]


def draw_galaxies(
    image: np.ndarray,
    config: DatasetConfig,
    layout: GalaxyLayout,
    shear: tuple[float, float],
    thresholds: tuple,
    psf_at,
    chunking: tuple[int, int],
    progress: bool = False,
) -> tuple[list, list | None, list]:
    """Draw every galaxy of ``layout`` and add it to ``image`` (in place, in galaxy order).

    Parameters
    ----------
    image : numpy.ndarray
        float32 image (ADU), zeros or already holding light.
    config : DatasetConfig
        The preset (PSF, pixel scale, galaxy profiles).
    layout : GalaxyLayout
        The galaxies' parameters and 1-based pixel positions.
    shear : (float, float)
        Reduced shear (g1, g2) applied after each intrinsic shape.
    thresholds : (float, float or None)
        Isophotes (ADU per pixel) of the footprints at the blend label's depth
        and at the field's own depth (None for a noiseless field).
    psf_at : VaryingPSF or None
        The PSF at each position; None: the preset's PSF everywhere.
    chunking : (int, int)
        Worker processes and galaxies per task.
    progress : bool
        Progress bar on a terminal. [default: False]

    Returns
    -------
    footprints : list
        Per galaxy ``(fx0, fy0, mask)`` at the label's depth.
    field_footprints : list or None
        The same at the field's own depth; None for a noiseless field.
    signals : list
        Per galaxy, sqrt(sum I^2) of its noiseless stamp (ADU): its optimal
        S/N times the noise sigma.
    """
    thresh, thresh_field = thresholds
    workers, step = chunking
    tasks = _galaxy_tasks(config, layout, shear, thresh, psf_at, step)
    task = draw_population_task if uses_counts(config) else draw_field_task
    bar = None
    if progress:
        from blendflag._runtime.progress import progress as make_bar

        bar = make_bar(total=len(layout.params), desc="field", unit="gal")
    paster = _GalaxyPaster(image, layout, thresh_field, bar)
    try:
        run_chunks(task, tasks, workers, on_done=paster, keep=False)
    finally:
        if bar is not None:
            bar.close()
    return paster.footprints, paster.field_footprints, paster.signals


def add_noise(image: np.ndarray, rng: np.random.Generator, sigma: float, order=None) -> np.ndarray:
    """Add Gaussian noise of ``sigma`` (ADU) to ``image`` in place; return the weight map.

    Parameters
    ----------
    image : numpy.ndarray
        float32 image, ADU.
    rng : numpy.random.Generator
        The field's random stream (after the galaxies' layout).
    sigma : float
        Noise sigma, ADU; 0 adds nothing.
    order : numpy.ndarray or None
        Flat pixel permutation: pixel ``p`` gets the noise drawn for pixel
        ``order[p]`` (the same draws; :mod:`blendflag.simulate.scene_noise`).
        [default: None, the draws in place]

    Returns
    -------
    numpy.ndarray
        float32 inverse variance, 1/ADU^2 (1 everywhere for a noiseless field).
    """
    if sigma > 0:
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        if order is not None:
            noise = noise.ravel()[order].reshape(image.shape)
        image += noise * np.float32(sigma)
        return np.full(image.shape, 1.0 / sigma**2, dtype=np.float32)
    return np.ones(image.shape, dtype=np.float32)
