"""The built-in metacalibration engine ``metacal``, on plain GalSim.

Method (Huff & Mandelbaum 2017; Sheldon & Huff 2017), per stamp:

1. ``galsim.InterpolatedImage`` of the stamp and of the PSF image (both
   already contain the pixel response), Lanczos-15 interpolation;
2. deconvolve the PSF (``galsim.Deconvolve``): this removes PSF and pixel;
3. shear by ``(±step, 0)`` and ``(0, ±step)`` (and not at all for noshear);
4. reconvolve with the *reconvolution PSF*: a round Gaussian whose Fourier
   profile lies below the PSF's (see :func:`round_target_psf`), dilated by
   ``1 + 2 step`` so that shearing by ``step`` does not push the sheared
   image's power past the PSF's at any k. The same kernel is used for all
   five versions, so the response is a pure shear response (no PSF term);
5. draw on the stamp grid (``method="no_pixel"``: the kernel stands for the
   pixelated PSF) and measure the five versions' shapes, as the setting
   ``shape`` says (:mod:`blendflag.shear.moments`):

   - ``wmom`` (default): moments under one round Gaussian weight of
     ``weight_fwhm`` arcsec (1.2, metadetection's), recentred on the light in
     each version; e = (Mxx - Myy, 2 Mxy) / (Mxx + Myy). A smooth function of
     the pixels that never fails, so the +g and -g images of a pair give
     close shapes even for objects an adaptive fit handles badly;
   - ``admom``: HSM adaptive moments (``galsim.hsm.FindAdaptiveMom``), the
     distortion of the adaptive Gaussian, the quantity ngmix's Admom reports
     as ``e``.

Noise correction ("fixnoise"): deconvolving and shearing turns the pixel
noise into a sheared, correlated field that biases the response. For each
object a pure-noise image of the same sigma is rotated by 90 degrees, run
through the same operations, rotated back and added: its anisotropic
correlations cancel those of the image's own noise (the noise variance
doubles). Noiseless stamps (sigma 0) skip it.

The PSF objects (interpolated PSF, its inverse, the reconvolution kernel)
are built once per call and shared by every stamp. Given one PSF image per
stamp (a varying PSF evaluated at each object, ``takes_psf_per_object``),
setting ``shear.options.metacal.varying_psf`` chooses how:

- ``common`` (default): every object is brought to one round Gaussian PSF
  common to the image, the widest of the PSFs' own kernels over the whole
  image (or ``common_psf_sigma`` arcsec when given, e.g. one value for a
  survey), and all share one operator and its matrices
  (:mod:`blendflag.shear.common_psf`; about 4x faster);
- ``per_object``: each object with its own PSF and reconvolution kernel,
  rendered stamp by stamp.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from blendflag import hookimpl
from blendflag.errors import BlendflagError
from blendflag.shear.engine import StampShearEngine
from blendflag.shear.inputs import checked_noise_fields
from blendflag.shear.metacal_ops import INTERPOLANT, MetacalOperators, round_target_psf  # noqa: F401 (re-exported)
from blendflag.shear.moments import FWHM_PER_SIGMA, version_shapes
from blendflag.shear.neighbour_weights import version_weights
from blendflag.shear.results import (
    MCAL_ENGINE_FAILED,
    MCAL_MOMENTS_FAILED,
    MCAL_RENDER_FAILED,
    METACAL_VERSIONS,
    MetacalResult,
    VersionSizes,
    filled_result_table,
)

#: The reconvolution kernel (:meth:`MetacalOperators.from_psf`); also part of the
#: key of the stored matrices, so both always name the same operator.
KERNEL = "kspace"
#: The operator of the common Gaussian PSF (:meth:`MetacalOperators.for_gaussian_psf`).
COMMON_KERNEL = "common-gaussian"
#: Settings (``shear.options.metacal``); a ``common_psf_sigma`` of 0 is derived.
DEFAULTS = {
    "varying_psf": "common",
    "common_psf_sigma": 0.0,
    "shape": "wmom",
    "weight_fwhm": 1.2,
    "noise_correction": True,
}
VARYING_PSF_CHOICES = ("common", "per_object")
#: ``shape``: HSM adaptive moments, or Gaussian-weighted moments of ``weight_fwhm`` arcsec.
SHAPE_CHOICES = ("admom", "wmom")


@dataclass(frozen=True)
class Rendering:
    """How one :meth:`GalSimMetacal.measure` call makes its stamps' five versions.

    One rendering strategy, chosen once per call (:meth:`GalSimMetacal._rendering`).

    Attributes
    ----------
    operators : callable
        ``operators(i)``: the :class:`MetacalOperators` of object ``i``, or
        None when they cannot be built (the object is then flagged).
    images : callable
        ``images(i, ops)``: ``{version: (S, S) array}`` of object ``i`` (ADU,
        noise correction included), or None when rendering failed (the
        object is then flagged).
    shared_ops : MetacalOperators or None
        The operators every object shares; None when each has its own.
    matrices : bool
        Whether the images came through matrices
        (:mod:`blendflag.shear.metacal_matrix`). [default: False]
    kernel_note : str
        How the reconvolution kernel is shared, for ``meta``. [default: ""]
    """

    operators: Callable
    images: Callable
    shared_ops: MetacalOperators | None
    matrices: bool = False
    kernel_note: str = ""

    @classmethod
    def from_batch(cls, ops, batch: dict, matrices: bool, kernel_note: str = "") -> Rendering:
        """Images made already for all objects, ``batch[version][i]`` (ADU), by one ``ops``."""
        return cls(
            operators=lambda i: ops,
            images=lambda i, _ops: {v: batch[v][i] for v in METACAL_VERSIONS},
            shared_ops=ops,
            matrices=matrices,
            kernel_note=kernel_note,
        )


class ObjectShapes(NamedTuple):
    """What :meth:`GalSimMetacal._measure_objects` measured, per object (NaN where it did not).

    Attributes
    ----------
    shapes : numpy.ndarray
        ``(5, 2, n)`` ellipticity ``(e1, e2)`` of each version, in
        ``METACAL_VERSIONS`` order (dimensionless).
    size : numpy.ndarray
        ``(n,)`` noshear size ``T``, arcsec^2.
    s2n : numpy.ndarray
        ``(n,)`` noshear signal-to-noise (inf for a noiseless stamp).
    kernel_sigma : numpy.ndarray
        ``(n,)`` sigma of each object's reconvolution kernel, arcsec.
    versions : VersionSizes or None
        Each version's size and S/N and the kernel's size (the shear cuts').
    """

    shapes: np.ndarray
    size: np.ndarray
    s2n: np.ndarray
    kernel_sigma: np.ndarray
    versions: VersionSizes | None = None


def _stamp_renderer(data, flags, rng, noise_fields, fixnoise: bool) -> Callable:
    """``images(i, ops)``: stamp ``i``'s five versions rendered on their own with ``ops``.

    Parameters
    ----------
    data : blendflag.shear.engine.PreparedInput
        Stamps (ADU), pixel scale (arcsec), noise sigmas (ADU).
    flags : numpy.ndarray
        ``(n,)`` ``MCAL_FLAGS``: a failed rendering is flagged here (in place),
        :data:`MCAL_RENDER_FAILED` or, for any other error, :data:`MCAL_ENGINE_FAILED`.
    rng : numpy.random.Generator
        Draws the noise-correction field of each noisy object, when rendered.
    noise_fields : numpy.ndarray or None
        ``(n, S, S)`` noise-correction fields (ADU) used instead of drawing.
    fixnoise : bool
        Add the noise correction to objects with noise sigma > 0.

    Returns
    -------
    callable
        ``images(i, ops)`` -> ``{version: (S, S) float64}`` (ADU), or None on failure.
    """
    import galsim

    _, ny, nx = data.stamps.shape
    out_image = galsim.ImageD(nx, ny, scale=data.pixel_scale)

    def images(i, ops):
        try:
            mc = ops.images(data.stamps[i], out_image, fixed_grid=True)
            if fixnoise and data.noise_sigma[i] > 0:
                noise = (
                    noise_fields[i]
                    if noise_fields is not None
                    else rng.normal(0.0, data.noise_sigma[i], size=(ny, nx))
                )
                ops.add_noise_correction(mc, noise, fixed_grid=True)
        except (galsim.GalSimError, RuntimeError, ValueError, MemoryError):
            flags[i] |= MCAL_RENDER_FAILED
            return None
        except Exception:  # noqa: BLE001 - one bad object never stops a catalogue
            flags[i] |= MCAL_ENGINE_FAILED
            return None
        return mc

    return images


def psf_weighted_size(kernel_sigma, weight_fwhm: float) -> np.ndarray:
    """``T`` (arcsec^2) of each object's Gaussian reconvolution kernel, as its moments see it.

    With the ``wmom`` weight (a round Gaussian of FWHM ``weight_fwhm``
    arcsec) a Gaussian of sigma ``s`` has weighted ``T = 2 s^2 w^2 / (s^2 +
    w^2)`` (``w`` the weight's sigma); adaptive moments (``weight_fwhm`` 0)
    see ``2 s^2``.
    """
    s2 = np.asarray(kernel_sigma, dtype=np.float64) ** 2
    if not weight_fwhm:
        return 2.0 * s2
    w2 = (weight_fwhm / FWHM_PER_SIGMA) ** 2
    return 2.0 * s2 * w2 / (s2 + w2)


def _signal_to_noise(numerator, denominator, noise_var, ok) -> np.ndarray:
    """S/N from the moments' sums: ``numerator / (sqrt(noise_var) denominator)``.

    Parameters
    ----------
    numerator, denominator : numpy.ndarray
        ``(..., n)`` the weighted flux and its noise factor (:func:`version_shapes`).
    noise_var : numpy.ndarray
        ``(n,)`` pixel noise variance, ADU^2 (doubled by the noise correction).
    ok : numpy.ndarray
        ``(n,)`` bool: objects measured without a flag.

    Returns
    -------
    numpy.ndarray
        ``(..., n)`` S/N (dimensionless); inf for a measured noiseless object with flux.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        s2n = numerator / (np.sqrt(noise_var) * denominator)
    return np.where(ok & (noise_var == 0) & (numerator > 0), np.inf, s2n)


class GalSimMetacal(StampShearEngine):
    """Metacalibration with GalSim: deconvolve, shear, reconvolve, moments (``shape``).

    Parameters
    ----------
    config : blendflag.config.ShearConfig or None
        ``step`` is the shear step. [default step: 0.01]
    fixnoise : bool
        Add the 90-degree rotated, metacal-processed noise field to cancel
        the correlated-noise bias (only for objects with noise sigma > 0);
        the setting ``noise_correction: false`` also switches it off.
        [default: True]
    """

    name = "metacal"
    takes_offsets = True
    #: ``--engine auto`` preference (built on GalSim alone: runs everywhere).
    priority = 10
    takes_psf_per_object = True

    def __init__(self, config=None, *, fixnoise: bool = True):
        super().__init__(config)
        self._fixnoise = bool(fixnoise)

    @property
    def fixnoise(self) -> bool:
        """Whether the noise correction is added: ``fixnoise`` and the setting ``noise_correction``.

        ``shear.options.metacal.noise_correction: false`` switches it off, as
        standard metacalibration with neighbour subtraction ran without it in
        Sheldon et al. 2020's reference code (its noise images were not set).
        """
        return self._fixnoise and bool(self.settings["noise_correction"])

    @classmethod
    def available(cls) -> bool:
        """GalSim is installed (found without importing it: `plugins` stays light)."""
        import importlib.util

        return importlib.util.find_spec("galsim") is not None

    @property
    def settings(self) -> dict:
        """:data:`DEFAULTS` updated with ``config.options["metacal"]``.

        Raises
        ------
        BlendflagError
            An unknown setting or choice, or a negative sigma.
        """
        settings = self.engine_settings(DEFAULTS)
        for key, choices in (("varying_psf", VARYING_PSF_CHOICES), ("shape", SHAPE_CHOICES)):
            if settings[key] not in choices:
                raise BlendflagError(
                    f"shear.options.{self.name}.{key}: must be {' or '.join(choices)}, "
                    f"got {settings[key]!r}"
                )
        if not settings["weight_fwhm"] > 0:
            raise BlendflagError(f"shear.options.{self.name}.weight_fwhm: must be > 0 (arcsec)")
        if not settings["common_psf_sigma"] >= 0:
            raise BlendflagError(f"shear.options.{self.name}.common_psf_sigma: must be >= 0")
        return settings

    @property
    def takes_neighbour_models(self) -> bool:
        """Neighbour models lower the ``wmom`` weight (HSM's adaptive weight takes none)."""
        return self.settings["shape"] == "wmom"

    def with_common_sigma(self, sigma: float):
        """This engine's config with the common Gaussian fixed at ``sigma`` arcsec."""
        from dataclasses import replace

        options = dict(self.config.options or {})
        options[self.name] = dict(options.get(self.name) or {}, common_psf_sigma=float(sigma))
        return replace(self.config, options=options)

    def measure_context(self, context):
        """As :meth:`StampShearEngine.measure_context`; a varying PSF's common Gaussian first.

        With ``varying_psf: common`` and no ``common_psf_sigma``, the Gaussian
        is the widest kernel of the PSF model over its whole image (a 7 x 7
        grid), so every part of a split image uses the same one.
        """
        from blendflag.shear.inputs import context_pixel_scale

        model = getattr(context, "psf_model", None)
        settings = self.settings
        if (
            model is not None
            and model.varies
            and settings["varying_psf"] == "common"
            and not settings["common_psf_sigma"]
        ):
            from blendflag.shear.metacal_ops import common_target_sigma

            scale = context_pixel_scale(context)
            size = None if context.psf is None else int(np.shape(context.psf)[0])
            image = getattr(context, "image", None)
            shape = model.domain or (None if image is None else np.shape(image)[:2])
            try:  # without a known image, each run's stack decides (before_measuring)
                grid = model.domain_images(shape, size, scale)
            except (TypeError, ValueError):
                grid = None
            if grid is not None:
                self.config = self.with_common_sigma(common_target_sigma(grid, scale))
        return super().measure_context(context)

    # -- engine ---------------------------------------------------------------

    def measure(
        self,
        stamps,
        psf,
        pixel_scale,
        noise_sigma,
        rng,
        return_images=False,
        noise_fields=None,
        offsets=None,
        neighbour_models=None,
    ):
        """Metacal ellipticities of every stamp (see :meth:`StampShearEngine.measure`).

        ``rng`` draws the noise-correction fields (one per noisy object)
        unless ``noise_fields`` gives them; ``offsets`` (``(n, 2)`` pixels,
        each detection's position relative to its stamp's central pixel)
        start the ``wmom`` weight's centring; ``neighbour_models`` lower it
        in each version (:func:`blendflag.shear.neighbour_weights.version_weights`);
        ``meta`` records the reconvolution kernel and the time per object.
        """
        start = time.perf_counter()
        data = self.prepare(stamps, psf, pixel_scale, noise_sigma)
        n, ny, nx = data.stamps.shape
        noise_fields = checked_noise_fields(noise_fields, n, (ny, nx))
        offsets = np.zeros((n, 2)) if offsets is None else np.asarray(offsets, float).reshape(n, 2)
        models = [None] * n if neighbour_models is None else neighbour_models
        settings = self.settings
        weight_fwhm = settings["weight_fwhm"] if settings["shape"] == "wmom" else 0.0
        flags = data.flags.copy()
        rendering = self._rendering(data, settings, flags, rng, noise_fields)
        images = (
            {v: np.zeros((n, ny, nx), dtype=np.float32) for v in METACAL_VERSIONS}
            if return_images
            else None
        )
        measured = self._measure_objects(
            data, flags, rendering, weight_fwhm, offsets, models, images
        )
        table = filled_result_table(
            measured.shapes, measured.size, measured.s2n, flags, measured.versions
        )
        elapsed = time.perf_counter() - start
        meta = self._meta(rendering, measured.kernel_sigma, weight_fwhm, noise_fields, n, elapsed)
        return MetacalResult(
            table=table, images=images, engine=self.name, step=self.step, meta=meta
        )

    # -- rendering strategies: chosen once per call -----------------------------

    def _rendering(self, data, settings, flags, rng, noise_fields) -> Rendering:
        """How this call renders its stamps' five versions: one strategy, chosen once.

        One PSF image for all stamps: :meth:`_render_one_psf`. One PSF per
        stamp: ``settings["varying_psf"]`` names :meth:`_render_common_psf`
        (``common``) or :meth:`_render_per_object` (``per_object``).

        Parameters
        ----------
        data : blendflag.shear.engine.PreparedInput
            Stamps (ADU), PSF image(s), pixel scale (arcsec), noise sigmas (ADU).
        settings : dict
            :attr:`settings`.
        flags : numpy.ndarray
            ``(n,)`` ``MCAL_FLAGS``; objects with flags are skipped, failures
            flagged here (in place).
        rng : numpy.random.Generator
            Draws the noise-correction fields unless ``noise_fields`` gives them.
        noise_fields : numpy.ndarray or None
            ``(n, S, S)`` noise-correction fields (ADU).

        Returns
        -------
        Rendering
        """
        strategy = "one_psf" if data.psf.ndim != 3 else settings["varying_psf"]
        render = {
            "one_psf": self._render_one_psf,
            "common": self._render_common_psf,
            "per_object": self._render_per_object,
        }[strategy]
        return render(data, settings, flags, rng, noise_fields)

    def _render_one_psf(self, data, settings, flags, rng, noise_fields) -> Rendering:
        """One PSF for every stamp: one operator, through its matrices when they pay.

        The matrices (:mod:`blendflag.shear.metacal_matrix`) render all stamps
        at once when built already or when this call (or the whole run,
        ``expected_stamps``) renders at least as many stamps as a stamp has
        pixels; else each stamp is rendered on its own. Parameters as
        :meth:`_rendering` (``settings`` unused).

        Raises
        ------
        BlendflagError
            The PSF cannot be reconvolved (undersampled): bad input for the
            whole image, not for one object.
        """
        from blendflag.shear import metacal_matrix as mm

        _, ny, nx = data.stamps.shape
        try:
            ops = MetacalOperators.from_psf(data.psf, data.pixel_scale, self.step, KERNEL)
        except ValueError as exc:
            raise BlendflagError(
                f"metacalibration cannot use this PSF: {exc} (is it undersampled?)"
            ) from None
        key = mm.operator_key(data.psf, data.pixel_scale, self.step, KERNEL, (ny, nx))
        batch = mm.matrix_images(
            ops, key, data, flags, rng, noise_fields, self.fixnoise, self.expected_stamps
        )
        if batch is not None:
            return Rendering.from_batch(ops, batch, matrices=True)
        return Rendering(
            operators=lambda i: ops,
            images=_stamp_renderer(data, flags, rng, noise_fields, self.fixnoise),
            shared_ops=ops,
        )

    def _render_common_psf(self, data, settings, flags, rng, noise_fields) -> Rendering:
        """A PSF per stamp, every object brought to one common round Gaussian PSF.

        The Gaussian's sigma is ``settings["common_psf_sigma"]`` (arcsec), or
        the widest kernel of the stack's PSFs when that is 0; all objects then
        share one operator and its matrices (:mod:`blendflag.shear.common_psf`).
        Parameters as :meth:`_rendering`.
        """
        from blendflag.shear import metacal_matrix as mm
        from blendflag.shear.common_psf import common_psf_images, stack_sigma

        _, ny, nx = data.stamps.shape
        sigma = settings["common_psf_sigma"] or stack_sigma(data.psf, data.pixel_scale)
        key = mm.operator_key(
            np.array([sigma]), data.pixel_scale, self.step, COMMON_KERNEL, (ny, nx)
        )
        expected = self.expected_stamps * (2 if self.fixnoise else 1)
        ops, batch, matrices = common_psf_images(
            data, flags, sigma, self.step, self.fixnoise, rng, noise_fields, key, expected
        )
        note = "; common to the image: each object's PSF brought to it"
        return Rendering.from_batch(ops, batch, matrices, kernel_note=note)

    def _render_per_object(self, data, settings, flags, rng, noise_fields) -> Rendering:
        """A PSF per stamp, each object rendered with its own operator and kernel.

        An object whose PSF gives no operator is flagged
        :data:`MCAL_RENDER_FAILED`. Parameters as :meth:`_rendering`
        (``settings`` unused).
        """
        import galsim

        def operators(i):
            try:
                return MetacalOperators.from_psf(data.psf[i], data.pixel_scale, self.step, KERNEL)
            except (galsim.GalSimError, RuntimeError, ValueError, MemoryError):
                flags[i] |= MCAL_RENDER_FAILED
                return None

        return Rendering(
            operators=operators,
            images=_stamp_renderer(data, flags, rng, noise_fields, self.fixnoise),
            shared_ops=None,
            kernel_note="; median of the per-object kernels",
        )

    # -- measuring --------------------------------------------------------------

    def _measure_objects(
        self, data, flags, rendering, weight_fwhm, offsets, models, images
    ) -> ObjectShapes:
        """Render and measure the five versions of every unflagged object, in order.

        Parameters
        ----------
        data : blendflag.shear.engine.PreparedInput
            Stamps (ADU), pixel scale (arcsec), noise sigmas (ADU).
        flags : numpy.ndarray
            ``(n,)`` ``MCAL_FLAGS``; objects with flags are skipped, failures
            flagged here (in place).
        rendering : Rendering
            This call's rendering strategy (:meth:`_rendering`).
        weight_fwhm : float
            FWHM of the ``wmom`` weight, arcsec; 0 measures ``admom``.
        offsets : numpy.ndarray
            ``(n, 2)`` pixels: where the ``wmom`` weight's centring starts.
        models : sequence
            Per object, its neighbour models or None.
        images : dict or None
            ``{version: (n, S, S) float32}``: filled with the rendered
            versions (ADU) when given.

        Returns
        -------
        ObjectShapes
        """
        n, ny, nx = data.stamps.shape
        shapes = np.full((len(METACAL_VERSIONS), 2, n), np.nan)
        size = np.full((len(METACAL_VERSIONS), n), np.nan)  # each version's T, arcsec^2
        s2n_num = np.full((len(METACAL_VERSIONS), n), np.nan)
        s2n_den = np.full((len(METACAL_VERSIONS), n), np.nan)
        kernel_sigma = np.full(n, np.nan)  # reconvolution sigma per object, arcsec
        noise_var = data.noise_sigma**2  # ADU^2; doubled by the noise correction
        fixnoise = self.fixnoise  # resolved once: it reads the settings
        for i in range(n):
            if flags[i]:
                continue
            ops = rendering.operators(i)
            if ops is None:
                continue
            kernel_sigma[i] = ops.target.sigma
            mc = rendering.images(i, ops)
            if mc is None:
                continue
            if fixnoise and data.noise_sigma[i] > 0:
                noise_var[i] *= 2.0
            if images is not None:
                for version in METACAL_VERSIONS:
                    images[version][i] = mc[version]
            guess = max(1.0, 1.5 * ops.target.sigma / data.pixel_scale)  # admom's start, px
            masks = version_weights(models[i], self.step, (ny, nx))
            measured = version_shapes(mc, data.pixel_scale, weight_fwhm, guess, offsets[i], masks)
            if measured is None:
                flags[i] |= MCAL_MOMENTS_FAILED
                continue
            shapes[:, :, i], size[:, i], s2n_num[:, i], s2n_den[:, i] = measured
        s2n = _signal_to_noise(s2n_num, s2n_den, noise_var, flags == 0)
        versions = VersionSizes(size, s2n, psf_weighted_size(kernel_sigma, weight_fwhm))
        return ObjectShapes(
            shapes=shapes, size=size[0], s2n=s2n[0], kernel_sigma=kernel_sigma, versions=versions
        )

    def _meta(self, rendering, kernel_sigma, weight_fwhm, noise_fields, n, elapsed) -> dict:
        """What ``meta`` records about a call: kernel, shape, noise correction, matrices.

        Parameters
        ----------
        rendering : Rendering
            The call's rendering strategy.
        kernel_sigma : numpy.ndarray
            ``(n,)`` reconvolution sigma of each rendered object, arcsec (NaN elsewhere).
        weight_fwhm : float
            FWHM of the ``wmom`` weight, arcsec; 0 for ``admom``.
        noise_fields : numpy.ndarray or None
            The noise-correction fields, when given.
        n : int
            Objects in the call.
        elapsed : float
            Seconds the call took.
        """
        if rendering.shared_ops is not None:
            sigma_k = rendering.shared_ops.target.sigma
        elif np.isfinite(kernel_sigma).any():
            sigma_k = float(np.nanmedian(kernel_sigma))
        else:
            sigma_k = float("nan")
        return {
            "reconvolution_psf": f"round Gaussian, sigma {sigma_k:.4f} arcsec "
            f"(dilated by 1 + 2 step{rendering.kernel_note})",
            "reconvolution_sigma_arcsec": float(sigma_k),
            "shape": f"wmom, weight FWHM {weight_fwhm:g} arcsec" if weight_fwhm else "admom",
            "fixnoise": self.fixnoise,
            "noise_fields": "given" if noise_fields is not None else "drawn",
            "interpolant": INTERPOLANT,
            "matrices": rendering.matrices,  # blendflag.shear.metacal_matrix
            "seconds": elapsed,
            "ms_per_object": 1e3 * elapsed / max(n, 1),
        }

    def before_measuring(self, stamps, psf, pixel_scale, noise_sigma, run_tasks, parts):
        """Store the matrices of a run's one PSF, built on its workers, when they pay.

        See :mod:`blendflag.shear.metacal_matrix`; the chunks then memory-map
        them. With a PSF per object and ``varying_psf: common``, the one PSF
        is the common Gaussian, fixed here for every chunk: the config
        returned carries it.
        """
        from functools import partial

        from blendflag.shear import metacal_matrix as mm
        from blendflag.shear.metacal_ops import MetacalOperators

        if not len(stamps) or np.ndim(psf) not in (2, 3):
            return None
        config = None
        stack = np.ndim(psf) == 3
        if stack and self.settings["varying_psf"] != "common":
            return None
        if stack:
            from blendflag.shear.common_psf import stack_sigma

            sigma = self.settings["common_psf_sigma"] or stack_sigma(
                np.asarray(psf, dtype=np.float64), float(pixel_scale)
            )
            config = self.with_common_sigma(sigma)
            key_psf, kernel = np.array([sigma]), COMMON_KERNEL
            make_ops = partial(MetacalOperators.for_gaussian_psf, sigma, pixel_scale, self.step)
        data = self.prepare(stamps[:1], psf[:1] if stack else psf, pixel_scale, [1.0])
        shape = data.stamps.shape[1:]
        if not stack:
            key_psf, kernel = data.psf, KERNEL
            make_ops = partial(MetacalOperators.from_psf, data.psf, pixel_scale, self.step, KERNEL)
        if mm.worth_building(len(stamps) * (2 if self.fixnoise else 1), shape):
            key = mm.operator_key(key_psf, data.pixel_scale, self.step, kernel, shape)
            mm.store_operator(make_ops, key, shape, run_tasks, parts)
        return config


@hookimpl
def blendflag_register_shear_engines():
    return [GalSimMetacal]
