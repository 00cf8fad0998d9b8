"""The shear-engine interface: two kinds of engine, one way to choose them.

A shear engine is a plugin class registered through
``blendflag_register_shear_engines``. The pipeline's ``measure_shear`` stage
calls :meth:`ShearEngine.measure_context` on whichever engine was chosen and
never asks which kind it is:

- a :class:`StampShearEngine` measures postage stamps cut around detections
  (one row per stamp, five metacal shapes each: :class:`MetacalResult`); the
  built-in metacalibration engines are of this kind;
- an :class:`ImageShearEngine` takes a whole image (or a cell of one), makes
  the five metacal images, detects and measures on each, and returns one
  catalogue per version (:class:`VersionCatalogues`): metadetection.

``--engine auto`` runs the available engine of highest :attr:`priority`
(:func:`select_engine`); no engine is preferred by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from blendflag.config import ShearConfig
from blendflag.errors import BlendflagError
from blendflag.shear.catalogues import VersionCatalogues
from blendflag.shear.results import (
    MCAL_BAD_NOISE,
    MCAL_EMPTY_STAMP,
    MCAL_NONFINITE_STAMP,
    MCAL_STAMP_FLAGGED,
    MetacalResult,
)


class ShearEngine:
    """Base class of every shear engine.

    Subclasses set :attr:`name` (and :attr:`priority` to take part in
    ``auto``), implement :meth:`measure_context` through one of the two kinds
    below and, when they need an optional package, :meth:`available`.

    Parameters
    ----------
    config : blendflag.config.ShearConfig or None
        Step and stamp size; None takes the defaults (step 0.01).
    """

    #: Unique engine name (``--engine NAME``).
    name: str = ""
    #: Preference of ``--engine auto``: the available engine with the highest
    #: priority runs (ties go to the name that sorts first). [default: 0]
    priority: int = 0
    #: Whether the engine measures stamps cut around the detections (the
    #: pipeline's ``cutout`` stage then cuts them).
    needs_stamps: bool = False
    #: Whether the engine uses the noise-correction fields it is given (the
    #: paired fields that make ±g and rotated pairs cancel); ``auto`` prefers
    #: engines that do when a simulation provides them.
    takes_noise_fields: bool = False

    def __init__(self, config: ShearConfig | None = None):
        self.config = config if config is not None else ShearConfig()

    @classmethod
    def available(cls) -> bool:
        """Whether the engine can run here (its optional imports work)."""
        return True

    @property
    def step(self) -> float:
        """Metacalibration shear step (dimensionless)."""
        return float(self.config.step)

    def engine_settings(self, defaults: dict) -> dict:
        """``defaults`` updated with ``config.options[name]``, cast to the defaults' types.

        Raises
        ------
        BlendflagError
            A setting the engine does not know, or a value of the wrong type.
        """
        given = dict((self.config.options or {}).get(self.name) or {})
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise BlendflagError(
                f"shear.options.{self.name}: unknown setting {unknown[0]!r} "
                f"(known: {', '.join(defaults)})"
            )
        where = f"shear.options.{self.name}"
        return {
            key: _setting_value(f"{where}.{key}", default, given.get(key, default))
            for key, default in defaults.items()
        }

    def measure_context(self, context) -> MetacalResult | VersionCatalogues:
        """Measure the shear of a pipeline context's sources.

        Parameters
        ----------
        context : blendflag.pipeline.stages.Context
            Image, PSF, detections, stamps, noise, run options (seed, workers).

        Returns
        -------
        MetacalResult or VersionCatalogues
            Either shape gives the statistics their per-unit sums.
        """
        raise NotImplementedError


@dataclass
class PreparedInput:
    """Validated engine input (see :meth:`StampShearEngine.prepare`)."""

    stamps: np.ndarray  # (n, S, S) float64, non-finite pixels zeroed
    psf: np.ndarray  # (P, P) float64, sum 1; or (n, P, P), one per stamp, each sum 1
    pixel_scale: float  # arcsec / pixel
    noise_sigma: np.ndarray  # (n,) float64 ADU, bad values set to 0
    flags: np.ndarray  # (n,) int32 flags found before measuring


class StampShearEngine(ShearEngine):
    """An engine that measures stamps: one row per stamp, five shapes each.

    Subclasses implement :meth:`measure`; :meth:`measure_context` cuts the
    work into chunks run in processes or on Dask (:mod:`blendflag.shear.driver`).
    """

    needs_stamps = True
    takes_noise_fields = True
    #: Whether :meth:`measure` takes one PSF image per stamp (an ``(n, P, P)``
    #: cube): a varying PSF (``context.psf_model``) is then evaluated at every
    #: object; engines that do not get the PSF at the image centre.
    takes_psf_per_object = False
    #: Whether :meth:`measure` takes ``offsets=``: ``(n, 2)`` pixels, each
    #: detection's position relative to its stamp's central pixel.
    takes_offsets = False
    #: Whether :meth:`measure` takes ``neighbour_models=`` (``shear.neighbour_pixels:
    #: model``; :mod:`blendflag.shear.neighbour_weights`).
    takes_neighbour_models = False
    #: How many stamps this process is expected to measure with one PSF in
    #: this run (set by the chunk driver; 0: unknown), for engines whose
    #: set-up pays only over many stamps.
    expected_stamps = 0

    def measure(
        self,
        stamps,
        psf,
        pixel_scale,
        noise_sigma,
        rng,
        return_images=False,
        noise_fields=None,
    ) -> MetacalResult:
        """Measure metacalibration ellipticities of every stamp.

        Parameters
        ----------
        stamps : numpy.ndarray
            ``(n, S, S)`` (or one ``(S, S)``) background-subtracted vignets in
            ADU, each centred on its object.
        psf : numpy.ndarray
            2-d PSF image at the same pixel scale, centred; it is normalised
            to unit sum here. Engines with :attr:`takes_psf_per_object` also
            take an ``(n, P, P)`` cube: the PSF at each stamp's object.
        pixel_scale : float
            arcsec per pixel (sets the units of ``T_NOSHEAR`` only).
        noise_sigma : float or numpy.ndarray
            Per-pixel noise standard deviation in ADU, scalar or ``(n,)``; 0
            means noiseless (no noise correction).
        rng : numpy.random.Generator
            Source of the noise-correction fields.
        return_images : bool
            Also return the metacalibration images. [default: False]
        noise_fields : numpy.ndarray or None
            ``(n, S, S)`` pure-noise images (ADU) to use for the noise
            correction instead of drawing them from ``rng``: a rotated-pair
            simulation passes fields turned like their objects, so that the
            correction noise cancels in pairs as the pixel noise does. An
            engine that cannot take them ignores them and records
            ``meta["noise_fields"] = "ignored"``. [default: None]

        Returns
        -------
        MetacalResult
        """
        raise NotImplementedError

    def measure_context(self, context) -> MetacalResult:
        """Measure every stamp of a pipeline context, in parallel chunks.

        Uses ``context.stamps`` (centre-cropped to ``config.stamp_size``),
        ``context.psf`` (or, when ``context.psf_model`` varies and the engine
        :attr:`takes_psf_per_object`, the model at every object's position:
        :func:`blendflag.shear.inputs.object_psfs`), the pixel scale
        (``context.pixel_scale``, else the image header's WCS, else 1: T is
        then in pixel^2), the per-object
        noise (:func:`blendflag.shear.inputs.object_noise`), the paired
        noise-correction fields of a rotated-pair simulation
        (:func:`blendflag.shear.inputs.context_noise_fields`), and the run
        options ``context.seed``, ``workers``, ``scheduler``, ``quiet``. The
        metacal images are kept when the context has flaggers (to flag each
        version). Objects whose stamp carries ``context.stamp_flags`` get
        :data:`MCAL_STAMP_FLAGGED`. With ``config.neighbours == "mask"`` the
        other sources are masked first (:func:`blendflag.shear.inputs.engine_inputs`).

        Raises
        ------
        BlendflagError
            No stamps or no PSF in the context.
        """
        from blendflag._runtime.progress import progress
        from blendflag.shear import inputs
        from blendflag.shear.driver import measure_parallel

        if context.stamps is None:
            raise BlendflagError("measure_shear needs stamps: the cutout stage made none")
        if context.psf is None:
            raise BlendflagError("measure_shear needs a PSF image (give --psf)")
        stamps = inputs.crop_stamps(np.asarray(context.stamps), int(self.config.stamp_size))
        pixel_scale = inputs.context_pixel_scale(context)
        noise = inputs.object_noise(context, stamps.shape[-1])
        stamps, extras = inputs.engine_inputs(context, self, stamps, noise)  # masking, offsets
        noise_fields = inputs.context_noise_fields(context, noise, stamps.shape[-1])
        psf = inputs.object_psfs(context) if self.takes_psf_per_object else None
        bar = progress(total=len(stamps), desc="shear", quiet=context.quiet, unit="obj")
        try:
            result = measure_parallel(
                type(self),
                self.config,
                stamps,
                context.psf if psf is None else psf,
                pixel_scale,
                noise,
                seed=context.seed,
                workers=context.workers,
                return_images=bool(context.flagger_objects),
                progress=bar.update,
                scheduler=context.scheduler,
                noise_fields=noise_fields,
                extras=extras,
            )
        finally:
            bar.close()
        if context.stamp_flags is not None:
            bad = np.asarray(context.stamp_flags) != 0
            result.table["MCAL_FLAGS"][bad] |= MCAL_STAMP_FLAGGED
        result.meta.setdefault("pixel_scale", float(pixel_scale))
        model = getattr(context, "psf_model", None)
        result.meta["psf"] = (
            "one PSF image"
            if model is None or not model.varies
            else (
                f"{model.description} at every object"
                if psf is not None
                else f"{model.description} at the image centre (engine takes one PSF)"
            )
        )
        result.meta["median_noise_sigma"] = float(np.median(noise)) if len(noise) else None
        return result

    def before_measuring(self, stamps, psf, pixel_scale, noise_sigma, run_tasks, parts):
        """Called once by the chunk driver before the chunks go out; default: nothing.

        An engine that sets up something per PSF for a whole run builds it
        here, with ``run_tasks(func, tasks)`` running picklable tasks on the
        run's ``parts`` workers, where its chunks can find it (a file). It
        may return the :class:`ShearConfig` its chunks use instead of its own
        (a setting fixed for the whole run); None keeps its own.
        """
        return None

    # -- shared helpers -----------------------------------------------------

    def prepare(self, stamps, psf, pixel_scale, noise_sigma) -> PreparedInput:
        """Validate the input of :meth:`measure` and flag bad objects.

        Raises
        ------
        BlendflagError
            Input that no object could be measured with: stamps not 2-d or
            3-d, a PSF that is not a finite 2-d image of positive sum, a
            non-positive pixel scale, or ``noise_sigma`` of the wrong length.
        """
        stamps = np.asarray(stamps, dtype=np.float64)
        if stamps.ndim == 2:
            stamps = stamps[None]
        if stamps.ndim != 3 or stamps.shape[1] < 5 or stamps.shape[2] < 5:
            raise BlendflagError(
                f"stamps must be an (n, S, S) cube with S >= 5, got shape {stamps.shape}"
            )
        n = stamps.shape[0]
        from blendflag.shear.inputs import normalised_psf

        psf = normalised_psf(psf, n, self.takes_psf_per_object)
        try:
            pixel_scale = float(pixel_scale)
        except (TypeError, ValueError):
            raise BlendflagError(f"pixel scale must be a number, got {pixel_scale!r}") from None
        if not (pixel_scale > 0 and math.isfinite(pixel_scale)):
            raise BlendflagError(
                f"pixel scale must be positive (arcsec/pixel), got {pixel_scale!r}"
            )
        sigma = np.asarray(noise_sigma, dtype=np.float64)
        if sigma.ndim == 0:
            sigma = np.full(n, float(sigma))
        if sigma.shape != (n,):
            raise BlendflagError(
                f"noise_sigma must be a number or hold one value per stamp ({n}), "
                f"got shape {sigma.shape}"
            )
        flags = np.zeros(n, dtype=np.int32)
        finite = np.isfinite(stamps).all(axis=(1, 2))
        flags[~finite] |= MCAL_NONFINITE_STAMP
        stamps = np.where(np.isfinite(stamps), stamps, 0.0)
        flags[~(np.abs(stamps).max(axis=(1, 2)) > 0)] |= MCAL_EMPTY_STAMP
        bad_sigma = ~(np.isfinite(sigma) & (sigma >= 0))
        flags[bad_sigma] |= MCAL_BAD_NOISE
        sigma = np.where(bad_sigma, 0.0, sigma)
        return PreparedInput(stamps, psf, pixel_scale, sigma, flags)


class ImageShearEngine(ShearEngine):
    """An engine that measures a whole image: one catalogue per metacal version.

    Subclasses implement :meth:`measure_image`, detecting on each version's
    image themselves (metadetection); the pipeline's detections and stamps
    are not used. A PSF that varies is evaluated per cell with
    ``blendflag.shear.inputs.context_psf_model(context).image_at(x, y, size)``.
    """

    def measure_image(self, image, weight, psf, pixel_scale, noise_sigma, rng) -> VersionCatalogues:
        """Make the five metacal images of ``image``, detect and measure on each.

        Parameters
        ----------
        image : numpy.ndarray
            2-d image, background subtracted, ADU.
        weight : numpy.ndarray or None
            Inverse-variance weight (1/ADU^2), 0 where masked.
        psf : numpy.ndarray
            PSF image at the same pixel scale, centred.
        pixel_scale : float
            arcsec per pixel.
        noise_sigma : float
            Per-pixel noise sigma of the image, ADU.
        rng : numpy.random.Generator
            Source of the noise-correction field.

        Returns
        -------
        VersionCatalogues
        """
        raise NotImplementedError

    def measure_context(self, context) -> VersionCatalogues:
        """Run :meth:`measure_image` on the context's image and PSF.

        Raises
        ------
        BlendflagError
            No image or no PSF in the context.
        """
        image, weight, psf, pixel_scale, noise = self.context_inputs(context)
        return self.measure_image(
            image, weight, psf, pixel_scale, noise, np.random.default_rng(context.seed)
        )

    def context_inputs(self, context) -> tuple:
        """``(image, weight, psf, pixel_scale, noise_sigma)`` of a pipeline context.

        Raises
        ------
        BlendflagError
            No image or no PSF in the context.
        """
        from blendflag.shear.inputs import context_pixel_scale, image_noise

        if context.image is None:
            raise BlendflagError(f"the {self.name} engine needs an image")
        if context.psf is None:
            raise BlendflagError("measure_shear needs a PSF image (give --psf)")
        return (
            context.image,
            context.weight,
            context.psf,
            context_pixel_scale(context),
            image_noise(context),
        )


def _setting_value(where: str, default, value):
    """``value`` as the type of ``default``, refused when the conversion would change it.

    An integer setting takes an integer or a whole float (``3.0``), never
    ``1.5`` or ``True``; a float setting any real number but a boolean; a string
    or boolean setting only its own type.

    Raises
    ------
    BlendflagError
        The value is not of the setting's kind (``where``: the setting's name).
    """
    kind = type(default)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    whole = isinstance(value, float) and value.is_integer()
    if kind is int and not isinstance(value, bool) and whole:
        return int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise BlendflagError(f"{where}: expected {kind.__name__}, got {value!r}")
