"""The ``ngmix`` metacalibration engine: ngmix's own metacal, Gaussian-weighted or adaptive moments.

Used when ``import ngmix`` works (ngmix is not on PyPI: install it from its
repository). ngmix is imported only inside functions, so this plugin loads
everywhere and simply reports ``available() == False`` without it.

Per stamp it builds an ``ngmix.Observation`` (Jacobian at the stamp centre,
pixel scale in arcsec, weight ``1/sigma^2``) with the PSF observation, and
runs ``ngmix.metacal.MetacalBootstrapper`` on the five versions noshear, 1p,
1m, 2p, 2m with the moments the setting ``shear.options.ngmix.shape`` names,
as the GalSim engine's ``shear.options.metacal.shape`` does: ``wmom`` (the
default of both) is ``ngmix.gaussmom.GaussMom`` with a Gaussian weight of
``weight_fwhm`` arcsec, ``admom`` is ``ngmix.admom.AdmomFitter``.
The reconvolution PSF is the one ``shear.options.ngmix.psf`` names: ngmix's
``"azgauss"`` round Gaussian (the default), ``"gauss"`` or ``"fitgauss"``, or
``"kspace"``, the built-in engine's kernel
(:func:`blendflag.shear.metacal_ops.round_target_psf`) handed to ngmix as a
GalSim object, which ngmix dilates by ``1 + 2 step`` as it does its own: with
it the two engines are the same estimator and agree to round-off. ``fixnoise`` is ngmix's rotated
noise field, on (unless ``fixnoise=False``) whenever the object has noise.
Given noise-correction fields (the paired fields of a simulation,
:func:`blendflag.shear.inputs.paired_noise_fields`), each object's field is
its observation's ``noise`` image and ngmix runs with ``use_noise_image=True``:
ngmix turns it by 90 degrees, runs it through metacal, turns it back and adds
it, the convention of the built-in engine, so the field is passed as given.
The ellipticity stored is the moments' ``e`` (distortion), as in the GalSim engine.
"""

from __future__ import annotations

import time

import numpy as np

from blendflag import hookimpl
from blendflag.errors import BlendflagError
from blendflag.shear.engine import StampShearEngine
from blendflag.shear.inputs import checked_noise_fields
from blendflag.shear.moments import RECENTRE
from blendflag.shear.results import (
    MCAL_ENGINE_FAILED,
    MCAL_MOMENTS_FAILED,
    MCAL_RENDER_FAILED,
    METACAL_VERSIONS,
    MetacalResult,
    VersionSizes,
    filled_result_table,
)

#: Weight used for noiseless stamps (sigma 0), where ngmix needs a finite weight.
NOISELESS_SIGMA = 1.0e-6
#: ``shear.options.ngmix``: the moments (``wmom`` or ``admom``), the wmom weight
#: (arcsec), its recentring steps and the reconvolution PSF.
DEFAULTS = {"shape": "wmom", "weight_fwhm": 1.2, "recentre": RECENTRE, "psf": "azgauss"}
SHAPE_CHOICES = ("wmom", "admom")
#: ngmix's own reconvolution PSFs, and ``kspace``, the built-in engine's kernel.
PSF_CHOICES = ("azgauss", "gauss", "fitgauss", "kspace")


class NgmixMetacal(StampShearEngine):
    """ngmix metacalibration (``MetacalBootstrapper`` + ``GaussMom`` or ``AdmomFitter``).

    Parameters
    ----------
    config : blendflag.config.ShearConfig or None
        ``step`` is the shear step; ``options["ngmix"]`` may set ``shape``
        (``"wmom"`` or ``"admom"``), ``weight_fwhm`` (arcsec) and ``recentre``
        (``wmom``: moves of the weight to the light's weighted centroid in each
        metacal version, as the built-in engine makes them; 0 is ngmix's own
        ``GaussMom`` at the detection) and ``psf`` (the reconvolution PSF, one
        of :data:`PSF_CHOICES`).
        [default step: 0.01, shape: "wmom", weight_fwhm: 1.2, recentre: 3, psf: "azgauss"]
    psf : galsim.GSObject or None
        A reconvolution PSF given as an object (round, unit flux, before
        ngmix's dilation); it takes precedence over ``shear.options.ngmix.psf``.
        [default: None]
    fixnoise : bool
        Use ngmix's rotated-noise correction for objects with noise sigma > 0.
        [default: True]
    """

    name = "ngmix"
    #: ``--engine auto`` preference: the reference implementation, first when it imports.
    priority = 20
    #: The paired noise-correction fields become each observation's ``noise``
    #: image (ngmix's ``use_noise_image``), so ``auto`` may choose ngmix for
    #: paired simulations.
    takes_noise_fields = True

    takes_psf_per_object = True
    #: Each detection's sub-pixel position is the Jacobian's centre: where the
    #: Gaussian weight sits (``wmom``) or where the adaptive fit starts (``admom``).
    takes_offsets = True

    def __init__(self, config=None, *, psf=None, fixnoise: bool = True):
        super().__init__(config)
        self.psf_choice = psf
        self.fixnoise = bool(fixnoise)
        self.settings = self.engine_settings(DEFAULTS)
        if self.settings["shape"] not in SHAPE_CHOICES:
            raise BlendflagError(
                f"shear.options.{self.name}.shape: must be wmom or admom, "
                f"got {self.settings['shape']!r}"
            )
        recentre = self.settings["recentre"]
        if isinstance(recentre, bool) or not isinstance(recentre, int) or recentre < 0:
            raise BlendflagError(
                f"shear.options.{self.name}.recentre: must be an integer >= 0, got {recentre!r}"
            )
        if not self.settings["weight_fwhm"] > 0:
            raise BlendflagError(f"shear.options.{self.name}.weight_fwhm: must be > 0 (arcsec)")
        if self.settings["psf"] not in PSF_CHOICES:
            raise BlendflagError(
                f"shear.options.{self.name}.psf: must be one of {', '.join(PSF_CHOICES)}, "
                f"got {self.settings['psf']!r}"
            )

    @classmethod
    def available(cls) -> bool:
        try:
            import ngmix  # noqa: F401
        except ImportError:
            return False
        return True

    def _reconvolution_psf(self, data):
        """ngmix's ``psf`` argument: a choice of its own, or the built-in kernel as an object.

        Raises
        ------
        BlendflagError
            ``kspace`` with one PSF per object (it takes one PSF per image).
        """
        if self.psf_choice is not None:
            return self.psf_choice
        choice = self.settings["psf"]
        if choice != "kspace":
            return choice
        if data.psf.ndim == 3:
            raise BlendflagError(
                f"shear.options.{self.name}.psf: kspace takes one PSF per image; this "
                "input has one per object (choose azgauss, gauss or fitgauss)"
            )
        import galsim

        from blendflag.shear.metacal_ops import INTERPOLANT, round_target_psf

        image = galsim.ImageD(np.asarray(data.psf, dtype=np.float64), scale=data.pixel_scale)
        return round_target_psf(galsim.InterpolatedImage(image, x_interpolant=INTERPOLANT))

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
    ):
        """Metacal ellipticities of every stamp (see :meth:`StampShearEngine.measure`).

        ``offsets`` (``(n, 2)`` pixels, each detection's position relative to
        its stamp's central pixel) centre each observation's Jacobian, as
        metadetect centres it on a detection; without them it is the stamp's
        centre.

        ngmix wants a ``numpy.random.RandomState``: one is seeded from ``rng``.
        Noiseless stamps (sigma 0) get a tiny sigma for the weight and no
        noise correction; their S/N is reported as inf. ``noise_fields``
        (``(n, S, S)`` ADU), when given, are the noise-correction images
        (each observation's ``noise``; ngmix turns them by 90 degrees), else
        ngmix draws them; ``meta["noise_fields"]`` records which.

        Raises
        ------
        ValueError
            ``noise_fields`` not one field per stamp.
        """
        import ngmix

        start = time.perf_counter()
        data = self.prepare(stamps, psf, pixel_scale, noise_sigma)
        n, ny, nx = data.stamps.shape
        fields = checked_noise_fields(noise_fields, n, (ny, nx))
        flags = data.flags.copy()
        # ngmix wants numpy.random.RandomState; derive one from the Generator.
        nrng = np.random.RandomState(int(rng.integers(0, 2**31 - 1)))
        psf_choice = self._reconvolution_psf(data)
        observation = _observation_maker(data, offsets, fields if self.fixnoise else None)
        boots = self._bootstrappers(nrng, psf_choice, use_noise_image=fields is not None)
        images = (
            {v: np.zeros((n, ny, nx), dtype=np.float32) for v in METACAL_VERSIONS}
            if return_images
            else None
        )
        shapes, versions = self._measure_objects(data, flags, observation, boots, images)
        table = filled_result_table(shapes, versions.size[0], versions.s2n[0], flags, versions)
        elapsed = time.perf_counter() - start
        meta = {
            "reconvolution_psf": _psf_note(psf_choice),
            "shape": self.settings["shape"],
            "recentre": self.settings["recentre"],
            "fixnoise": self.fixnoise,
            "noise_fields": _fields_note(fields, self.fixnoise),
            "ngmix_version": getattr(ngmix, "__version__", "unknown"),
            "seconds": elapsed,
            "ms_per_object": 1e3 * elapsed / max(n, 1),
        }
        return MetacalResult(
            table=table, images=images, engine=self.name, step=self.step, meta=meta
        )

    def _bootstrappers(self, nrng, psf_choice, use_noise_image: bool = False) -> dict:
        """ngmix's metacal bootstrappers with this engine's moments, without and with fixnoise.

        Parameters
        ----------
        nrng : numpy.random.RandomState
            ngmix's random state (adaptive-moments guesses, noise correction).
        psf_choice : str or galsim.GSObject
            ngmix's reconvolution PSF (:meth:`_reconvolution_psf`).
        use_noise_image : bool
            The fixnoise bootstrapper takes each observation's ``noise`` image
            as its correction field instead of drawing one. [default: False]

        Returns
        -------
        dict
            ``{fixnoise: ngmix.metacal.MetacalBootstrapper}`` for ``fixnoise``
            False and True, both on the five versions with step :attr:`step`.
        """
        import ngmix

        if self.settings["shape"] == "wmom":
            runner = ngmix.runners.Runner(
                fitter=RecentredGaussMom(self.settings["weight_fwhm"], self.settings["recentre"])
            )
        else:
            fitter = ngmix.admom.AdmomFitter(rng=nrng)
            guesser = ngmix.guessers.GMixPSFGuesser(rng=nrng, ngauss=1, guess_from_moms=True)
            runner = ngmix.runners.Runner(fitter=fitter, guesser=guesser)
        # no psf_runner: nothing here uses the reconvolved PSF's moments, and
        # skipping them saves five Admom fits per object
        return {
            fixnoise: ngmix.metacal.MetacalBootstrapper(
                runner=runner,
                psf_runner=None,
                rng=nrng,
                psf=psf_choice,
                types=list(METACAL_VERSIONS),
                step=self.step,
                fixnoise=fixnoise,
                use_noise_image=fixnoise and use_noise_image,
            )
            for fixnoise in (False, True)
        }

    def _measure_objects(self, data, flags, observation, boots, images) -> tuple:
        """Run ngmix's metacal on every unflagged object, in order.

        Parameters
        ----------
        data : blendflag.shear.engine.PreparedInput
            Stamps (ADU), pixel scale (arcsec), noise sigmas (ADU).
        flags : numpy.ndarray
            ``(n,)`` ``MCAL_FLAGS``; objects with flags are skipped, failures
            flagged here (in place).
        observation : callable
            ``observation(i)``: object ``i``'s ``ngmix.Observation`` (:func:`_observation_maker`).
        boots : dict
            :meth:`_bootstrappers`.
        images : dict or None
            ``{version: (n, S, S) float32}``: filled with ngmix's metacal
            images (ADU) when given.

        Returns
        -------
        shapes : numpy.ndarray
            ``(5, 2, n)`` ellipticity ``(e1, e2)`` per version (NaN where not measured).
        versions : blendflag.shear.results.VersionSizes
            Each version's ``T`` (arcsec^2) and S/N (inf for a noiseless
            stamp), and the reconvolved PSF's ``T`` with the same weight
            (``wmom``; NaN for ``admom``).
        """
        import ngmix

        n = len(flags)
        shapes = np.full((len(METACAL_VERSIONS), 2, n), np.nan)
        size = np.full((len(METACAL_VERSIONS), n), np.nan)
        s2n = np.full((len(METACAL_VERSIONS), n), np.nan)
        psf_size = np.full(n, np.nan)
        render_errors = (ngmix.GMixRangeError, ngmix.gexceptions.BootPSFFailure)
        for i in range(n):
            if flags[i]:
                continue
            noisy = data.noise_sigma[i] > 0
            try:
                resdict, obsdict = boots[bool(noisy and self.fixnoise)].go(observation(i))
            except (*render_errors, RuntimeError, ValueError):
                flags[i] |= MCAL_RENDER_FAILED
                continue
            except Exception:  # noqa: BLE001 - one bad object never stops a catalogue
                flags[i] |= MCAL_ENGINE_FAILED
                continue
            measured = _version_results(resdict, noisy)
            if measured is None:
                flags[i] |= MCAL_MOMENTS_FAILED
            else:
                shapes[:, :, i], size[:, i], s2n[:, i] = measured
                psf_size[i] = self._psf_size(obsdict["noshear"].psf)
            if images is not None:
                for version in METACAL_VERSIONS:
                    images[version][i] = obsdict[version].image
        return shapes, VersionSizes(size, s2n, psf_size)

    def _psf_size(self, psf_obs) -> float:
        """``T`` (arcsec^2) of the reconvolved PSF with the ``wmom`` weight (NaN for ``admom``)."""
        import ngmix

        if self.settings["shape"] != "wmom":
            return np.nan
        res = ngmix.gaussmom.GaussMom(fwhm=self.settings["weight_fwhm"]).go(psf_obs)
        return float(res["T"]) if res["flags"] == 0 else np.nan


class RecentredGaussMom:
    """ngmix's ``GaussMom`` with its weight moved onto the light's weighted centroid.

    Each of ``steps`` moves puts the observation's Jacobian centre (where
    ``GaussMom`` centres its weight) on the weighted first moment, as
    :func:`blendflag.shear.moments.weighted_moments` moves the built-in
    engine's weight; a coordinate whose move is not finite or reaches 2
    pixels stays. With ``steps`` 0 it is ``GaussMom`` itself.

    Parameters
    ----------
    fwhm : float
        FWHM of the round Gaussian weight, arcsec.
    steps : int
        Moves of the weight before the measurement.
    """

    kind = "wmom"

    def __init__(self, fwhm: float, steps: int):
        import ngmix

        self.moments = ngmix.gaussmom.GaussMom(fwhm=fwhm)
        self.steps = int(steps)

    def go(self, obs):
        """The weighted moments of ``obs`` after the moves (ngmix's result dict)."""
        for _ in range(self.steps):
            res = self.moments.go(obs)
            if res["flags"] != 0 or not res["flux"] > 0:
                break
            obs = _moved_to_centroid(obs, res)
        return self.moments.go(obs)


def _moved_to_centroid(obs, res):
    """A copy of ``obs`` whose Jacobian is centred on ``res``'s weighted centroid."""
    import ngmix

    sums = res["sums"]
    flux = sums[ngmix.moments.MOMENTS_NAME_MAP["MF"]]
    v = sums[ngmix.moments.MOMENTS_NAME_MAP["Mv"]] / flux
    u = sums[ngmix.moments.MOMENTS_NAME_MAP["Mu"]] / flux
    jac = obs.jacobian.copy()
    old = np.array(jac.get_cen())
    new = np.array(jac.get_rowcol(v, u), dtype=float)
    step = np.where(np.isfinite(new - old) & (np.abs(new - old) < 2.0), new - old, 0.0)
    jac.set_cen(row=old[0] + step[0], col=old[1] + step[1])
    moved = obs.copy()
    moved.jacobian = jac
    return moved


def _psf_note(psf_choice) -> str:
    """``meta["reconvolution_psf"]``: ngmix's named choice, or the kernel given (sigma, arcsec)."""
    if isinstance(psf_choice, str):
        return f"ngmix {psf_choice!r}"
    sigma = getattr(psf_choice, "sigma", None)
    size = f" sigma {sigma:.4f} arcsec" if sigma is not None else ""
    return f"{type(psf_choice).__name__}{size} given to ngmix, dilated by 1 + 2 step"


def _fields_note(fields, fixnoise: bool) -> str:
    """``meta["noise_fields"]``: ``given`` (used), ``ignored`` (fixnoise off) or ``drawn``."""
    if fields is None:
        return "drawn"
    return "given" if fixnoise else "ignored"


def _psf_observation(psf, pixel_scale: float):
    """The ngmix observation of one PSF image (centred Jacobian, near-noiseless weight).

    Parameters
    ----------
    psf : numpy.ndarray
        ``(P, P)`` PSF image, sum 1.
    pixel_scale : float
        arcsec per pixel.
    """
    import ngmix

    psf_jac = ngmix.DiagonalJacobian(
        row=(psf.shape[0] - 1) / 2.0, col=(psf.shape[1] - 1) / 2.0, scale=pixel_scale
    )
    psf_sigma = psf.max() / 1.0e3
    return ngmix.Observation(psf, weight=np.full(psf.shape, 1.0 / psf_sigma**2), jacobian=psf_jac)


def _jacobian_centres(offsets, n: int, shape: tuple[int, int]) -> np.ndarray:
    """``(n, 2)`` (row, column) pixel of each stamp where its Jacobian is centred.

    The detection's position (stamp centre pixel plus ``offsets``, ``(n, 2)``
    pixels ``(dx, dy)``), or the stamp's centre without offsets.
    """
    ny, nx = shape
    if offsets is None:
        return np.tile([(ny - 1) / 2.0, (nx - 1) / 2.0], (n, 1))
    dxdy = np.asarray(offsets, dtype=float).reshape(n, 2)
    return np.column_stack([ny // 2 + dxdy[:, 1], nx // 2 + dxdy[:, 0]])


def _observation_maker(data, offsets, fields=None):
    """``observation(i)``: the ngmix observation of stamp ``i``, with its PSF's.

    Parameters
    ----------
    data : blendflag.shear.engine.PreparedInput
        Stamps (ADU), PSF image or one per stamp, pixel scale (arcsec), noise sigmas (ADU).
    offsets : array_like or None
        ``(n, 2)`` pixels: each detection relative to its stamp's central pixel.
    fields : numpy.ndarray or None
        ``(n, S, S)`` noise-correction fields (ADU): each noisy object's is
        its observation's ``noise`` image. [default: None]

    Returns
    -------
    callable
        ``observation(i)`` -> ``ngmix.Observation``: Jacobian at the detection,
        weight ``1 / sigma^2`` (1/ADU^2; :data:`NOISELESS_SIGMA` for sigma 0).
    """
    import ngmix

    n, ny, nx = data.stamps.shape
    per_object = data.psf.ndim == 3  # one PSF per stamp: a varying PSF
    psf_obs = None if per_object else _psf_observation(data.psf, data.pixel_scale)
    centres = _jacobian_centres(offsets, n, (ny, nx))

    def observation(i):
        sigma = data.noise_sigma[i]
        weight = np.full((ny, nx), 1.0 / (sigma if sigma > 0 else NOISELESS_SIGMA) ** 2)
        psf_i = _psf_observation(data.psf[i], data.pixel_scale) if per_object else psf_obs.copy()
        jac = ngmix.DiagonalJacobian(row=centres[i, 0], col=centres[i, 1], scale=data.pixel_scale)
        noise = fields[i].copy() if fields is not None and sigma > 0 else None
        return ngmix.Observation(
            data.stamps[i].copy(), weight=weight, jacobian=jac, psf=psf_i, noise=noise
        )

    return observation


def _version_results(resdict, noisy: bool):
    """One object's five ellipticities, noshear size and S/N from ngmix's results.

    Parameters
    ----------
    resdict : dict
        ``{version: result}`` of ``MetacalBootstrapper.go``.
    noisy : bool
        The object has noise (else its S/N is inf).

    Returns
    -------
    tuple or None
        ``(e, T, s2n)``: ``(5, 2)`` ellipticities, ``(5,)`` sizes (arcsec^2)
        and S/N in ``METACAL_VERSIONS`` order; None when any version's
        moments failed.
    """
    if any(resdict[version]["flags"] != 0 for version in METACAL_VERSIONS):
        return None
    e = np.array([resdict[version]["e"] for version in METACAL_VERSIONS])
    T = np.array([resdict[version]["T"] for version in METACAL_VERSIONS], dtype=float)
    s2n = np.array([resdict[version]["s2n"] for version in METACAL_VERSIONS], dtype=float)
    return e, T, (s2n if noisy else np.full(len(METACAL_VERSIONS), np.inf))


@hookimpl
def blendflag_register_shear_engines():
    return [NgmixMetacal]
