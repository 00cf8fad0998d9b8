"""Metacalibration: the shear-engine interface and the shear statistics.

Engines (plugins registered through ``blendflag_register_shear_engines``)
turn postage stamps into a :class:`MetacalResult`: for every object the
ellipticity measured on five metacalibration versions of its image,

=========  ==========================================
version    operation on the PSF-deconvolved image
=========  ==========================================
noshear    none
1p / 1m    shear by (+step, 0) / (-step, 0)
2p / 2m    shear by (0, +step) / (0, -step)
=========  ==========================================

each reconvolved with the same round, slightly larger PSF. This module then
turns those into shear estimates (design §4):

- shear response ``R11 = (<e1>_1p - <e1>_1m) / (2 step)`` over the selected
  objects, and likewise ``R22``;
- selection response ``R11_S = (<e1_noshear>_{S+} - <e1_noshear>_{S-}) / (2 step)``
  where ``S±`` are the objects the same cut keeps when it is applied to the
  1p / 1m images;
- shear ``g = <e> / (R + R_S)``; with a known shear applied along g1 only,
  ``m = g1 / g1_true - 1`` and ``c = g2``;
- errors by bootstrap of the whole ratio over objects, or over rotated pairs.

The module imports neither GalSim nor ngmix at import time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from blendflag.config import ShearConfig
from blendflag.errors import BlendflagError, PluginError

#: The five metacalibration versions, in the order engines produce them.
METACAL_VERSIONS = ("noshear", "1p", "1m", "2p", "2m")

#: Applied shear of each version, in units of the step: (g1, g2).
VERSION_SHEARS = {
    "noshear": (0, 0),
    "1p": (1, 0),
    "1m": (-1, 0),
    "2p": (0, 1),
    "2m": (0, -1),
}

# ---------------------------------------------------------------------------
# Per-object flags (ngmix style: a bad object is flagged, never raised)
# ---------------------------------------------------------------------------

MCAL_NONFINITE_STAMP = 1  #: the stamp holds NaN or inf pixels
MCAL_EMPTY_STAMP = 2  #: the stamp is all zero (no object to measure)
MCAL_STAMP_FLAGGED = 4  #: the stamp was cut at an image edge or over masked pixels
MCAL_RENDER_FAILED = 8  #: the metacalibration images could not be made
MCAL_MOMENTS_FAILED = 16  #: the shape measurement failed on at least one version
MCAL_NONFINITE_RESULT = 32  #: a measured ellipticity or size is NaN or inf
MCAL_BAD_NOISE = 64  #: the noise sigma of the object is negative or not finite
MCAL_ENGINE_FAILED = 128  #: any other failure inside the engine
MCAL_UNSTABLE = 256  #: the five versions' shapes differ by more than ``max_version_spread``

#: Bit value -> name, to decode ``MCAL_FLAGS``.
MCAL_FLAG_NAMES = {
    MCAL_NONFINITE_STAMP: "nonfinite_stamp",
    MCAL_EMPTY_STAMP: "empty_stamp",
    MCAL_STAMP_FLAGGED: "stamp_flagged",
    MCAL_RENDER_FAILED: "render_failed",
    MCAL_MOMENTS_FAILED: "moments_failed",
    MCAL_NONFINITE_RESULT: "nonfinite_result",
    MCAL_BAD_NOISE: "bad_noise",
    MCAL_ENGINE_FAILED: "engine_failed",
    MCAL_UNSTABLE: "unstable",
}

#: Ellipticity columns of a result table, per version: (e1 column, e2 column).
SHAPE_COLUMNS = {v: (f"G1_{v.upper()}", f"G2_{v.upper()}") for v in METACAL_VERSIONS}


def flag_names(flags: int) -> list[str]:
    """Names of the bits set in one ``MCAL_FLAGS`` value (e.g. ``["empty_stamp"]``)."""
    return [name for bit, name in MCAL_FLAG_NAMES.items() if int(flags) & bit]


def flag_unstable(table: Table, step: float, max_spread: float) -> int:
    """Flag objects whose shape jumps between metacalibration versions.

    A shear of ``step`` changes an ellipticity by about ``step * R`` with
    R between 0 and 2; a spread far larger than that means the shape
    measurement converged to a different solution on some version (a
    neighbour, the stamp edge), and the object's response is meaningless
    (responses of -30 are seen). Such objects get :data:`MCAL_UNSTABLE`.

    Parameters
    ----------
    table : astropy.table.Table
        A result table (changed in place).
    step : float
        Metacalibration shear step.
    max_spread : float
        Largest allowed difference of any ellipticity component between the
        five versions (dimensionless); 0 or less switches the check off.

    Returns
    -------
    int
        Objects newly flagged.
    """
    if max_spread <= 0 or len(table) == 0:
        return 0
    flags = np.asarray(table["MCAL_FLAGS"])
    ok = np.flatnonzero(flags == 0)
    spread = np.zeros(len(ok))
    for comp in (0, 1):
        e = np.stack(
            [
                np.asarray(table[SHAPE_COLUMNS[v][comp]], dtype=np.float64)[ok]
                for v in METACAL_VERSIONS
            ]
        )
        spread = np.maximum(spread, e.max(axis=0) - e.min(axis=0))
    bad = ok[~(spread <= max_spread)]  # NaN spreads count as unstable too
    table["MCAL_FLAGS"][bad] |= MCAL_UNSTABLE
    for col in table.colnames:
        if col != "MCAL_FLAGS":
            table[col][bad] = np.nan
    return len(bad)


def empty_result_table(n: int) -> Table:
    """A result table of ``n`` rows: NaN measurements, zero flags.

    Columns ``G1_<VERSION>``, ``G2_<VERSION>`` (ellipticity, dimensionless),
    ``T_NOSHEAR`` (size ``<x^2> + <y^2>`` of the adaptive Gaussian, arcsec^2),
    ``S2N_NOSHEAR`` (signal-to-noise of the adaptive-weighted flux; inf for a
    noiseless stamp) and ``MCAL_FLAGS`` (int32 bits of :data:`MCAL_FLAG_NAMES`).
    """
    table = Table()
    for version in METACAL_VERSIONS:
        for col in SHAPE_COLUMNS[version]:
            table[col] = np.full(n, np.nan)
    table["T_NOSHEAR"] = np.full(n, np.nan)
    table["S2N_NOSHEAR"] = np.full(n, np.nan)
    table["MCAL_FLAGS"] = np.zeros(n, dtype=np.int32)
    return table


@dataclass
class MetacalResult:
    """What a shear engine returns.

    Attributes
    ----------
    table : astropy.table.Table
        One row per stamp, in input order; see :func:`empty_result_table`.
    images : dict or None
        ``images[version]`` -> ``(n, S, S)`` float32 metacalibration images
        (ADU, noise correction included), for running a blend flagger on the
        sheared versions; None unless requested.
    engine : str
        Name of the engine that measured.
    step : float
        Metacalibration shear step.
    meta : dict
        Engine details worth recording (reconvolution PSF, noise correction, timing).
    flag_names : dict
        ``MCAL_FLAGS`` bit -> name.
    """

    table: Table
    images: dict | None = None
    engine: str = ""
    step: float = 0.01
    meta: dict = field(default_factory=dict)
    flag_names: dict = field(default_factory=lambda: dict(MCAL_FLAG_NAMES))

    @property
    def good(self) -> np.ndarray:
        """bool mask of objects measured without any flag."""
        return np.asarray(self.table["MCAL_FLAGS"]) == 0

    def __len__(self) -> int:
        return len(self.table)


# ---------------------------------------------------------------------------
# Engine interface
# ---------------------------------------------------------------------------


@dataclass
class PreparedInput:
    """Validated engine input (see :meth:`ShearEngine.prepare`)."""

    stamps: np.ndarray  # (n, S, S) float64, non-finite pixels zeroed
    psf: np.ndarray  # (P, P) float64, sum 1
    pixel_scale: float  # arcsec / pixel
    noise_sigma: np.ndarray  # (n,) float64 ADU, bad values set to 0
    flags: np.ndarray  # (n,) int32 flags found before measuring


class ShearEngine:
    """Base class of metacalibration engines.

    Subclasses set :attr:`name`, implement :meth:`measure` and, when they need
    an optional package, :meth:`available`.

    Parameters
    ----------
    config : blendflag.config.ShearConfig or None
        Step and stamp size; None takes the defaults (step 0.01).
    """

    #: Unique engine name (``--engine NAME``).
    name: str = ""

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
            to unit sum here.
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
        psf = np.asarray(psf, dtype=np.float64)
        if psf.ndim != 2 or min(psf.shape) < 3:
            raise BlendflagError(
                f"the PSF must be a 2-d image of at least 3x3 pixels, got shape {psf.shape}"
            )
        if not np.all(np.isfinite(psf)):
            raise BlendflagError("the PSF image holds NaN or inf pixels")
        total = psf.sum()
        if not total > 0:
            raise BlendflagError(f"the PSF image must have a positive sum, got {total:g}")
        psf = psf / total
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

    def measure_context(self, context, return_images: bool = False) -> MetacalResult:
        """Run :meth:`measure` on the stamps of a pipeline context.

        Uses ``context.stamps`` (centre-cropped to ``config.stamp_size`` when
        larger), ``context.psf``, ``context.rng``, the pixel scale from
        ``context.results["pixel_scale"]`` or the image header's WCS (else 1:
        T is then in pixel^2), and the noise from
        ``context.results["noise_sigma"]``, else the weight map around each
        object, else a robust estimate from the stamp borders. Objects whose
        stamp carries ``context.stamp_flags`` get :data:`MCAL_STAMP_FLAGGED`.

        Raises
        ------
        BlendflagError
            No stamps or no PSF in the context.
        """
        if context.stamps is None:
            raise BlendflagError("measure_shear needs stamps: the cutout stage made none")
        if context.psf is None:
            raise BlendflagError("measure_shear needs a PSF image (give --psf)")
        stamps = crop_stamps(np.asarray(context.stamps), int(self.config.stamp_size))
        pixel_scale = context.results.get("pixel_scale")
        if pixel_scale is None:
            pixel_scale = pixel_scale_from_header(context.image_header) or 1.0
        noise = context.results.get("noise_sigma")
        if noise is None and context.weight is not None and context.table is not None:
            noise = noise_from_weight(
                context.weight, context.table["X_IMAGE"], context.table["Y_IMAGE"], stamps.shape[1]
            )
        if noise is None:
            noise = noise_from_stamps(stamps)
        result = self.measure(
            stamps, context.psf, pixel_scale, noise, context.rng, return_images=return_images
        )
        if context.stamp_flags is not None:
            bad = np.asarray(context.stamp_flags) != 0
            result.table["MCAL_FLAGS"][bad] |= MCAL_STAMP_FLAGGED
        result.meta["n_unstable"] = flag_unstable(
            result.table, self.step, self.config.max_version_spread
        )
        result.meta.setdefault("pixel_scale", float(pixel_scale))
        return result


def select_engine(engines: dict[str, type], name: str = "auto") -> type:
    """Pick an engine class by name; ``"auto"`` prefers ngmix when it imports.

    Parameters
    ----------
    engines : dict
        ``{name: class}`` from :func:`blendflag.plugins.get_shear_engines`.
    name : str
        ``"auto"`` or a registered engine name. [default: "auto"]

    Raises
    ------
    PluginError
        The name is not registered, or the engine cannot run here.
    """
    if name == "auto":
        for candidate in ("ngmix", "metacal"):
            cls = engines.get(candidate)
            if cls is not None and cls.available():
                return cls
        for cls in engines.values():
            if cls.available():
                return cls
        raise PluginError(
            f"no shear engine can run here (registered: {', '.join(sorted(engines)) or 'none'})"
        )
    if name not in engines:
        known = ", ".join(sorted(engines)) or "none"
        raise PluginError(f"unknown shear engine {name!r} (registered: {known})")
    cls = engines[name]
    if not cls.available():
        raise PluginError(
            f"shear engine {name!r} is registered but cannot run here (its package does not import)"
        )
    return cls


# ---------------------------------------------------------------------------
# Context helpers
# ---------------------------------------------------------------------------


def crop_stamps(stamps: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop ``(n, S, S)`` stamps to ``size`` pixels when S is larger."""
    side = stamps.shape[-1]
    if size <= 0 or size >= side:
        return stamps
    lo = (side - size) // 2
    return stamps[..., lo : lo + size, lo : lo + size]


def pixel_scale_from_header(header) -> float | None:
    """Pixel scale in arcsec from CD or CDELT cards (degrees), or PIXSCALE; None if absent."""
    if header is None:
        return None
    try:
        if "CD1_1" in header:
            cd = np.array(
                [
                    [header.get("CD1_1", 0.0), header.get("CD1_2", 0.0)],
                    [header.get("CD2_1", 0.0), header.get("CD2_2", 0.0)],
                ],
                dtype=float,
            )
            scale = math.sqrt(abs(np.linalg.det(cd))) * 3600.0
        elif "CDELT1" in header:
            cdelt1 = float(header["CDELT1"])
            cdelt2 = float(header.get("CDELT2", cdelt1))
            scale = math.sqrt(abs(cdelt1 * cdelt2)) * 3600.0
        elif "PIXSCALE" in header:
            scale = float(header["PIXSCALE"])
        else:
            return None
    except (TypeError, ValueError):
        return None
    return scale if scale > 0 and math.isfinite(scale) else None


def noise_from_weight(weight, x, y, size: int) -> np.ndarray:
    """Per-object noise sigma (ADU): 1/sqrt(median positive weight) in each stamp.

    ``x``, ``y`` are 1-based pixel positions. Objects without a positive
    weight in their stamp get NaN (flagged :data:`MCAL_BAD_NOISE` later).
    """
    from blendflag.stamps import cut_stamps

    wstamps, _ = cut_stamps(np.asarray(weight, dtype=np.float64), x, y, size)
    wstamps = np.where(wstamps > 0, wstamps, np.nan)
    with np.errstate(all="ignore"):
        all_nan = np.isnan(wstamps).all(axis=(1, 2))
        med = np.full(len(wstamps), np.nan)
        if (~all_nan).any():
            med[~all_nan] = np.nanmedian(wstamps[~all_nan], axis=(1, 2))
        return 1.0 / np.sqrt(med)


def noise_from_stamps(stamps: np.ndarray, border: int = 4) -> np.ndarray:
    """Per-stamp noise sigma (ADU) from the MAD of the outer ``border`` pixels.

    The stamp edges are assumed mostly sky; a neighbour there biases the
    estimate high, which only lowers the reported S/N.
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    edge = np.ones(stamps.shape[1:], dtype=bool)
    b = max(1, min(border, stamps.shape[-1] // 4))
    edge[b:-b, b:-b] = False
    pix = stamps[:, edge]
    med = np.median(pix, axis=1, keepdims=True)
    return 1.4826 * np.median(np.abs(pix - med), axis=1)


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


def _good_shapes(table) -> np.ndarray:
    """Objects without flags whose five versions all have finite e1, e2."""
    good = np.asarray(table["MCAL_FLAGS"]) == 0
    for version in METACAL_VERSIONS:
        for col in SHAPE_COLUMNS[version]:
            good &= np.isfinite(np.asarray(table[col], dtype=np.float64))
    return good


def _column(table, col, good) -> np.ndarray:
    return np.where(good, np.asarray(table[col], dtype=np.float64), 0.0)


def shear_response(result_table, mask=None, step: float = 0.01) -> np.ndarray:
    """Mean shear response matrix of the (masked, unflagged) objects.

    Parameters
    ----------
    result_table : astropy.table.Table
        A :class:`MetacalResult` table.
    mask : array_like of bool or None
        Objects to average over; None takes all. Flagged objects are
        always excluded.
    step : float
        Metacalibration step the table was made with. [default: 0.01]

    Returns
    -------
    numpy.ndarray
        ``[[R11, R12], [R21, R22]]`` with ``Rij = (<ei>_jp - <ei>_jm) / (2 step)``;
        NaN when no object is left.
    """
    good = _good_shapes(result_table)
    if mask is not None:
        good &= np.asarray(mask, dtype=bool)
    if not good.any():
        return np.full((2, 2), np.nan)
    R = np.empty((2, 2))
    for i in range(2):
        for j, (p, m) in enumerate((("1p", "1m"), ("2p", "2m"))):
            ep = np.asarray(result_table[SHAPE_COLUMNS[p][i]], dtype=np.float64)[good]
            em = np.asarray(result_table[SHAPE_COLUMNS[m][i]], dtype=np.float64)[good]
            R[i, j] = (ep.mean() - em.mean()) / (2.0 * step)
    return R


def _normalise_masks(selection_masks, n: int) -> dict[str, np.ndarray]:
    if selection_masks is None:
        return {v: np.ones(n, dtype=bool) for v in METACAL_VERSIONS}
    if not isinstance(selection_masks, dict):
        mask = np.asarray(selection_masks, dtype=bool)
        if mask.shape != (n,):
            raise BlendflagError(f"selection mask has shape {mask.shape}, expected ({n},)")
        return {v: mask for v in METACAL_VERSIONS}
    missing = [v for v in METACAL_VERSIONS if v not in selection_masks]
    if missing:
        raise BlendflagError(
            f"selection masks are missing version(s) {', '.join(missing)}: give one mask per "
            "metacal version (noshear, 1p, 1m, 2p, 2m), or a single mask for no selection response"
        )
    out = {}
    for v in METACAL_VERSIONS:
        mask = np.asarray(selection_masks[v], dtype=bool)
        if mask.shape != (n,):
            raise BlendflagError(f"selection mask {v!r} has shape {mask.shape}, expected ({n},)")
        out[v] = mask
    return out


# Column layout of the per-object sums matrix used for point estimates and bootstrap.
_SUM_TERMS = (
    # (mask version, value column or None for the count)
    ("noshear", None),  # 0  N_S
    ("noshear", "G1_NOSHEAR"),  # 1
    ("noshear", "G2_NOSHEAR"),  # 2
    ("noshear", "G1_1P"),  # 3
    ("noshear", "G1_1M"),  # 4
    ("noshear", "G2_2P"),  # 5
    ("noshear", "G2_2M"),  # 6
    ("1p", None),  # 7
    ("1p", "G1_NOSHEAR"),  # 8
    ("1m", None),  # 9
    ("1m", "G1_NOSHEAR"),  # 10
    ("2p", None),  # 11
    ("2p", "G2_NOSHEAR"),  # 12
    ("2m", None),  # 13
    ("2m", "G2_NOSHEAR"),  # 14
)


def _estimates(S: np.ndarray, step: float, true_g1: float | None) -> dict[str, np.ndarray]:
    """Shear estimates from sums ``S`` of shape ``(..., 15)`` (see ``_SUM_TERMS``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n0 = S[..., 0]
        e1 = S[..., 1] / n0
        e2 = S[..., 2] / n0
        R11 = (S[..., 3] - S[..., 4]) / n0 / (2 * step)
        R22 = (S[..., 5] - S[..., 6]) / n0 / (2 * step)
        R11_S = (S[..., 8] / S[..., 7] - S[..., 10] / S[..., 9]) / (2 * step)
        R22_S = (S[..., 12] / S[..., 11] - S[..., 14] / S[..., 13]) / (2 * step)
        out = {
            "R11": R11,
            "R22": R22,
            "R11_S": R11_S,
            "R22_S": R22_S,
            "g1": e1 / (R11 + R11_S),
            "g2": e2 / (R22 + R22_S),
            "g1_noRS": e1 / R11,
            "g2_noRS": e2 / R22,
        }
        if true_g1:
            out["m"] = out["g1"] / true_g1 - 1.0
            out["m_noRS"] = out["g1_noRS"] / true_g1 - 1.0
    return out


def _bootstrap_sums(X, units, n_units, rng, n_bootstrap, chunk_elems=4_000_000):
    """Sums of ``X`` over ``n_bootstrap`` resamplings (with replacement) of the units."""
    n_obj = X.shape[0]
    chunk = max(1, min(n_bootstrap, chunk_elems // max(1, max(n_obj, n_units))))
    out = np.empty((n_bootstrap, X.shape[1]))
    done = 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        draws = rng.integers(0, n_units, size=(b, n_units))
        draws += (np.arange(b) * n_units)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n_units).reshape(b, n_units)
        weights = counts[:, units].astype(np.float64)
        out[done : done + b] = weights @ X
        done += b
    return out


def _float_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def selection_statistics(
    table,
    name: str,
    selection_masks=None,
    step: float = 0.01,
    true_shear=None,
    rng: np.random.Generator | None = None,
    n_bootstrap: int = 200,
    pair_id=None,
) -> dict:
    """Shear, responses and biases of one selection (one ``compare`` JSON entry).

    Parameters
    ----------
    table : astropy.table.Table
        A :class:`MetacalResult` table (objects with ``MCAL_FLAGS != 0`` or
        non-finite ellipticities are excluded everywhere).
    name : str
        Selection name, e.g. ``"all"`` or ``"no_vgg16_blends"``.
    selection_masks : dict, array_like or None
        ``{version: bool mask}`` for the five versions ``noshear, 1p, 1m, 2p,
        2m``: the objects the cut keeps when it is applied to each version's
        image (e.g. the blend flagger run on that version). A single mask
        applies to every version (no selection response); None keeps all.
    step : float
        Metacalibration shear step. [default: 0.01]
    true_shear : (float, float) or None
        The applied shear (g1, g2), applied along g1 only; None leaves m, c
        and their errors null.
    rng : numpy.random.Generator or None
        For the bootstrap. [default: a Generator seeded with 0]
    n_bootstrap : int
        Bootstrap resamplings. [default: 200]
    pair_id : array_like of int or None
        Rotated-pair label of each object: the bootstrap then resamples
        pairs, keeping both members together. None resamples objects.

    Returns
    -------
    dict
        ``name, n, R11, R22, g1, g1_err, g2, g2_err, m, m_err, c, c_err``
        (design §3) plus ``R11_S, R22_S`` (selection responses), ``g1_noRS,
        m_noRS, m_noRS_err`` (correcting by R_gamma only, as a pipeline that
        ignores the selection would) and ``fraction_kept`` (n over the number
        of unflagged objects). Non-finite values are None. ``g = <e>/(R + R_S)``;
        errors are bootstrap standard deviations of the whole ratio.
    """
    sums, n_good = selection_unit_sums(table, selection_masks, pair_id)
    return statistics_from_sums(name, sums, n_good, step, true_shear, rng, n_bootstrap)


def selection_unit_sums(table, selection_masks=None, pair_id=None) -> tuple[np.ndarray, int]:
    """The sums a selection's statistics need, per bootstrap unit.

    Parameters
    ----------
    table, selection_masks, pair_id
        As for :func:`selection_statistics`.

    Returns
    -------
    sums : numpy.ndarray
        ``(n_units, 15)``: per object (or per rotated pair, when ``pair_id`` is
        given, in sorted id order) the selected counts and ellipticity sums of
        every version (see ``_SUM_TERMS``). Sums of several tiles can be
        stacked and reduced with :func:`statistics_from_sums`.
    n_good : int
        Objects measured without a flag (for ``fraction_kept``).
    """
    n_obj = len(table)
    masks = _normalise_masks(selection_masks, n_obj)
    good = _good_shapes(table)
    X = np.empty((n_obj, len(_SUM_TERMS)))
    for k, (version, col) in enumerate(_SUM_TERMS):
        sel = (masks[version] & good).astype(np.float64)
        X[:, k] = sel if col is None else sel * _column(table, col, good)
    if pair_id is None:
        return X, int(good.sum())
    pair_id = np.asarray(pair_id)
    if pair_id.shape != (n_obj,):
        raise BlendflagError(f"pair_id has shape {pair_id.shape}, expected ({n_obj},)")
    _, units = np.unique(pair_id, return_inverse=True)
    units = units.ravel()
    n_units = int(units.max()) + 1 if n_obj else 0
    sums = np.zeros((n_units, X.shape[1]))
    np.add.at(sums, units, X)
    return sums, int(good.sum())


def statistics_from_sums(
    name: str,
    sums: np.ndarray,
    n_good: int,
    step: float = 0.01,
    true_shear=None,
    rng: np.random.Generator | None = None,
    n_bootstrap: int = 200,
) -> dict:
    """One ``compare`` JSON entry from per-unit sums (see :func:`selection_unit_sums`).

    The bootstrap resamples the rows of ``sums`` (objects or rotated pairs).
    """
    sums = np.asarray(sums, dtype=np.float64)
    n_units = len(sums)
    # The contract applies the shear along g1 only: c = g2 is the additive
    # bias (true g2 should be 0 and is not subtracted).
    true_g1 = None if true_shear is None else float(true_shear[0])
    point = _estimates(sums.sum(axis=0), step, true_g1)
    rng = rng if rng is not None else np.random.default_rng(0)
    errors: dict[str, float | None] = {}
    if n_units > 1 and n_bootstrap >= 2:
        units = np.arange(n_units)
        boot = _estimates(
            _bootstrap_sums(sums, units, n_units, rng, int(n_bootstrap)), step, true_g1
        )
        for key in ("g1", "g2", "m", "m_noRS"):
            if key not in boot:
                continue
            values = boot[key][np.isfinite(boot[key])]
            errors[key] = float(np.std(values, ddof=1)) if values.size >= 2 else None
    n_sel = int(np.rint(sums[:, 0].sum()))
    entry = {
        "name": name,
        "n": n_sel,
        "R11": _float_or_none(point["R11"]),
        "R22": _float_or_none(point["R22"]),
        "g1": _float_or_none(point["g1"]),
        "g1_err": errors.get("g1"),
        "g2": _float_or_none(point["g2"]),
        "g2_err": errors.get("g2"),
        "m": None,
        "m_err": None,
        "c": None,
        "c_err": None,
        "R11_S": _float_or_none(point["R11_S"]),
        "R22_S": _float_or_none(point["R22_S"]),
        "g1_noRS": _float_or_none(point["g1_noRS"]),
        "m_noRS": None,
        "m_noRS_err": None,
        "fraction_kept": n_sel / n_good if n_good else None,
    }
    if true_shear is not None:
        entry["c"] = entry["g2"]
        entry["c_err"] = entry["g2_err"]
        if "m" in point:  # not with true g1 = 0
            entry["m"] = _float_or_none(point["m"])
            entry["m_err"] = errors.get("m")
            entry["m_noRS"] = _float_or_none(point["m_noRS"])
            entry["m_noRS_err"] = errors.get("m_noRS")
    return entry


# ---------------------------------------------------------------------------
# Test data and benchmark
# ---------------------------------------------------------------------------


@dataclass
class GalaxySet:
    """Isolated-galaxy stamps with a known shear (see :func:`isolated_galaxy_pairs`).

    Attributes
    ----------
    stamps : numpy.ndarray
        ``(n, S, S)`` float32, ADU.
    psf : numpy.ndarray
        PSF image (unit sum) at the same pixel scale.
    pixel_scale : float
        arcsec / pixel.
    noise_sigma : float
        Gaussian noise added per pixel, ADU.
    true_shear : tuple of float
        The applied (g1, g2).
    pair_id : numpy.ndarray
        Objects ``2k`` and ``2k + 1`` are a pair, the second rotated by 90 degrees.
    """

    stamps: np.ndarray
    psf: np.ndarray
    pixel_scale: float
    noise_sigma: float
    true_shear: tuple
    pair_id: np.ndarray


def isolated_galaxy_pairs(
    n_pairs: int,
    rng: np.random.Generator,
    true_shear=(0.02, 0.0),
    stamp_size: int = 51,
    pixel_scale: float = 0.187,
    psf_fwhm: float = 0.65,
    psf_shear=(0.0, 0.0),
    hlr_range=(0.3, 0.7),
    flux: float = 1.0e4,
    noise_sigma: float = 0.0,
    sigma_e: float = 0.25,
) -> GalaxySet:
    """Simple exponential galaxies in 90-degree rotated pairs, for tests and benchmarks.

    Each pair shares size, flux and sub-pixel offset; the second member's
    intrinsic shape is rotated by 90 degrees so intrinsic ellipticities
    cancel in the pair mean. Both are sheared by ``true_shear`` and convolved
    with a Moffat (beta 2.5) PSF.

    Parameters
    ----------
    n_pairs : int
        Number of pairs (``2 n_pairs`` stamps).
    rng : numpy.random.Generator
    true_shear : (float, float)
        Applied reduced shear. [default: (0.02, 0)]
    stamp_size : int
        Stamp side in pixels. [default: 51]
    pixel_scale : float
        arcsec / pixel. [default: 0.187, CFIS]
    psf_fwhm : float
        PSF FWHM in arcsec. [default: 0.65]
    psf_shear : (float, float)
        PSF ellipticity as a reduced shear. [default: round]
    hlr_range : (float, float)
        Uniform range of half-light radii, arcsec. [default: (0.3, 0.7)]
    flux : float
        Galaxy flux in ADU. [default: 1e4]
    noise_sigma : float
        Gaussian pixel noise in ADU; 0 for noiseless. [default: 0]
    sigma_e : float
        Per-component rms of the intrinsic shear. [default: 0.25]
    """
    import galsim

    psf_obj = galsim.Moffat(beta=2.5, fwhm=psf_fwhm).shear(g1=psf_shear[0], g2=psf_shear[1])
    psf_img = psf_obj.drawImage(nx=stamp_size, ny=stamp_size, scale=pixel_scale).array
    psf_img = psf_img / psf_img.sum()
    stamps = np.empty((2 * n_pairs, stamp_size, stamp_size), dtype=np.float32)
    image = galsim.ImageD(stamp_size, stamp_size, scale=pixel_scale)
    for k in range(n_pairs):
        hlr = rng.uniform(*hlr_range)
        while True:
            g = rng.normal(0.0, sigma_e, size=2)
            if np.hypot(*g) < 0.7:
                break
        offset = rng.uniform(-0.5, 0.5, size=2)
        for j, angle in enumerate((0.0, 90.0)):
            gal = galsim.Exponential(half_light_radius=hlr, flux=flux).shear(g1=g[0], g2=g[1])
            gal = gal.rotate(angle * galsim.degrees).shear(g1=true_shear[0], g2=true_shear[1])
            galsim.Convolve(gal, psf_obj).drawImage(image=image, offset=offset)
            stamps[2 * k + j] = image.array
    if noise_sigma > 0:
        stamps += rng.normal(0.0, noise_sigma, size=stamps.shape).astype(np.float32)
    return GalaxySet(
        stamps=stamps,
        psf=psf_img,
        pixel_scale=pixel_scale,
        noise_sigma=float(noise_sigma),
        true_shear=(float(true_shear[0]), float(true_shear[1])),
        pair_id=np.repeat(np.arange(n_pairs), 2),
    )


def bench_shear_engines(
    pm=None,
    n: int = 100,
    rng: np.random.Generator | None = None,
    names=None,
    noise_sigma: float = 10.0,
) -> list[dict]:
    """Throughput of every available shear engine on the same stamps.

    Parameters
    ----------
    pm : pluggy.PluginManager or None
        Where to find engines. [default: a fresh manager]
    n : int
        Stamps per engine (rounded up to an even number). [default: 100]
    rng : numpy.random.Generator or None
        [default: seeded with 0]
    names : list of str or None
        Engines to time. [default: every available one]
    noise_sigma : float
        Pixel noise (ADU) of the bench stamps, so the noise correction runs
        as in production (flux 1e4 ADU: S/N about 60). [default: 10]

    Returns
    -------
    list of dict
        Per available engine, single process: ``{"stage": "shear engine
        NAME", "name", "n", "seconds", "objects_per_s", "ms_per_object",
        "n_flagged"}``; an engine that raises gets ``objects_per_s`` None and
        ``"error"``.
    """
    from blendflag.plugins import get_plugin_manager, get_shear_engines

    rng = rng if rng is not None else np.random.default_rng(0)
    pm = pm if pm is not None else get_plugin_manager()
    engines = get_shear_engines(pm)
    chosen = names if names is not None else sorted(engines)
    data = isolated_galaxy_pairs((n + 1) // 2, rng, noise_sigma=noise_sigma)
    count = len(data.stamps)
    rows = []
    for name in chosen:
        cls = engines[name]
        if not cls.available():
            continue
        row = {"stage": f"shear engine {name}", "name": name, "n": count}
        engine = cls(ShearConfig())
        try:
            # warm up (imports, JIT compilation) outside the timing
            engine.measure(data.stamps[:2], data.psf, data.pixel_scale, data.noise_sigma, rng)
            start = time.perf_counter()
            result = engine.measure(data.stamps, data.psf, data.pixel_scale, data.noise_sigma, rng)
            seconds = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            row.update(objects_per_s=None, error=f"{type(exc).__name__}: {exc}")
            rows.append(row)
            continue
        row.update(
            seconds=seconds,
            objects_per_s=count / seconds if seconds > 0 else None,
            ms_per_object=1e3 * seconds / count,
            n_flagged=int((~result.good).sum()),
        )
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# Chunked, parallel measurement
# ---------------------------------------------------------------------------

#: Objects per task when measuring in worker processes.
MEASURE_CHUNK = 256


def _measure_chunk(
    engine_cls, config, stamps, psf, pixel_scale, noise, seed, return_images, noise_fields=None
):
    """One task of :func:`measure_parallel` (module level: picklable)."""
    engine = engine_cls(config)
    kwargs = {"noise_fields": noise_fields} if noise_fields is not None else {}
    return engine.measure(
        stamps,
        psf,
        pixel_scale,
        noise,
        np.random.default_rng(seed),
        return_images=return_images,
        **kwargs,
    )


def measure_parallel(
    engine_cls,
    config,
    stamps,
    psf,
    pixel_scale,
    noise_sigma,
    seed: int,
    workers: int = 1,
    return_images: bool = False,
    progress=None,
    scheduler: str | None = None,
    noise_fields=None,
) -> MetacalResult:
    """Measure ``stamps`` in chunks, serially, in spawned processes or on Dask.

    The noise-correction fields of chunk k come from ``seed`` and k, so the
    result does not depend on ``workers``.

    Parameters
    ----------
    engine_cls : type
        A :class:`ShearEngine` subclass.
    config : blendflag.config.ShearConfig
    stamps : numpy.ndarray
        ``(n, S, S)`` stamps (ADU).
    psf : numpy.ndarray
        PSF image at the stamps' pixel scale.
    pixel_scale : float
        Arcsec per pixel.
    noise_sigma : float or numpy.ndarray
        Noise sigma per stamp (ADU).
    seed : int
        Seed of the noise-correction fields.
    workers : int
        Processes (1: in this process). [default: 1]
    return_images : bool
        Keep the five metacal images of every stamp.
    progress : callable or None
        Called with the number of objects of each finished chunk.
    scheduler : str or None
        A Dask scheduler address; chunks become Dask tasks.
    noise_fields : numpy.ndarray or None
        ``(n, S, S)`` noise-correction fields (see :meth:`ShearEngine.measure`).

    Returns
    -------
    MetacalResult
        Rows in input order.
    """
    from astropy.table import vstack

    from blendflag.parallel import run_chunks

    n = len(stamps)
    noise = np.broadcast_to(np.asarray(noise_sigma, dtype=np.float64), (n,))
    seeds = np.random.SeedSequence(seed).generate_state(max(1, -(-n // MEASURE_CHUNK)))
    tasks = [
        (
            engine_cls,
            config,
            stamps[i : i + MEASURE_CHUNK],
            psf,
            pixel_scale,
            noise[i : i + MEASURE_CHUNK],
            int(seeds[k]),
            return_images,
            None if noise_fields is None else noise_fields[i : i + MEASURE_CHUNK],
        )
        for k, i in enumerate(range(0, n, MEASURE_CHUNK))
    ]
    done = (lambda r: progress(len(r))) if progress else None
    parts = run_chunks(_measure_chunk, tasks, workers, on_done=done, scheduler=scheduler)
    images = None
    if return_images:
        images = {v: np.concatenate([p.images[v] for p in parts]) for v in METACAL_VERSIONS}
    first = parts[0]
    table = vstack([p.table for p in parts], metadata_conflicts="silent")
    meta = dict(
        first.meta,
        chunks=len(parts),
        workers=workers,
        n_unstable=flag_unstable(table, first.step, config.max_version_spread),
    )
    return MetacalResult(
        table=table,
        images=images,
        engine=first.engine,
        step=first.step,
        meta=meta,
        flag_names=first.flag_names,
    )
