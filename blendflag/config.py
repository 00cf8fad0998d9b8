"""YAML configuration files loaded into dataclasses and validated once, at the edge.

A config file is a mapping whose top-level keys are sections (``detect``,
``flag``, ``shear``, ...). Unknown keys, wrong types and out-of-range values
raise :class:`~blendflag.errors.ConfigError` naming the key, e.g.
``config error in pipeline.yaml: detect.thresh: expected a number, got 'high'``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from blendflag.errors import ConfigError

# ---------------------------------------------------------------------------
# Generic loading
# ---------------------------------------------------------------------------


def load_yaml(path) -> dict:
    """Read a YAML mapping from ``path``.

    Raises
    ------
    ConfigError
        The file is missing, is not valid YAML, or is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"invalid YAML in {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, where: str):
    """Check ``value`` against the annotation ``tp``, converting int -> float."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_mapping(tp, value, where)
    if tp in (list, tuple):
        tp = tp[typing.Any]
        origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(
                _convert(v, a, f"{where}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else typing.Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is typing.Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def from_mapping(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from a mapping, validating every key.

    Missing keys take the dataclass defaults; unknown keys are errors. After
    construction, ``cls.validate()`` is called when it exists.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (allowed: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        sub = f"{where}.{key}" if where else key
        kwargs[key] = _convert(value, hints[key], sub)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(where or cls.__name__.lower())
    return obj


def to_mapping(obj) -> dict:
    """The plain-data form of a config dataclass (for saving beside outputs)."""
    return dataclasses.asdict(obj)


def _check(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where}: {message}")


# ---------------------------------------------------------------------------
# Pipeline configuration
# ---------------------------------------------------------------------------


@dataclass
class DetectConfig:
    """Source detection settings (the original study's sep/SExtractor call).

    Attributes
    ----------
    backend : str
        ``"sep"`` (built-in) or ``"sextractor"`` (the binary on PATH). [default: "sep"]
    thresh : float
        Detection threshold in units of the global background rms. [default: 1.5]
    minarea : int
        Minimum number of connected pixels above threshold. [default: 5]
    deblend_nthresh : int
        Number of deblending sub-thresholds. [default: 32]
    deblend_cont : float
        Minimum contrast ratio for deblending. [default: 0.005]
    clean : bool
        Clean spurious detections near bright objects. [default: True]
    clean_param : float
        Cleaning efficiency. [default: 1.0]
    back_size : int
        Background mesh size in pixels. [default: 64]
    back_filtersize : int
        Background filter size in meshes. [default: 3]
    kron_fact : float
        Kron factor of FLUX_AUTO (SExtractor PHOT_AUTOPARAMS). [default: 2.5]
    min_radius : float
        Minimum Kron radius (SExtractor PHOT_AUTOPARAMS). [default: 3.5]
    sextractor_binary : str or None
        Path of the SExtractor binary; None searches ``source-extractor`` then
        ``sex`` on PATH. [default: None]
    """

    backend: str = "sep"
    thresh: float = 1.5
    minarea: int = 5
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    clean: bool = True
    clean_param: float = 1.0
    back_size: int = 64
    back_filtersize: int = 3
    kron_fact: float = 2.5
    min_radius: float = 3.5
    sextractor_binary: str | None = None

    def validate(self, where: str) -> None:
        _check(self.thresh > 0, f"{where}.thresh", "must be positive")
        _check(self.minarea >= 1, f"{where}.minarea", "must be at least 1")
        _check(1 <= self.deblend_nthresh <= 64, f"{where}.deblend_nthresh", "must be in 1..64")
        _check(0 <= self.deblend_cont <= 1, f"{where}.deblend_cont", "must be in 0..1")
        _check(self.back_size >= 8, f"{where}.back_size", "must be at least 8 pixels")
        _check(self.back_filtersize >= 1, f"{where}.back_filtersize", "must be at least 1")


@dataclass
class FlagConfig:
    """Blend flagging settings.

    Attributes
    ----------
    flaggers : list of str
        Flagger names to run, in order. [default: ["sextractor", "vgg16"]]
    stamp_size : int
        Side of the postage stamps cut around sources, in pixels (odd). [default: 51]
    batch_size : int
        Stamps per batch sent to a network flagger. [default: 256]
    options : dict
        Per-flagger options, keyed by flagger name, e.g.
        ``{"vgg16": {"weights": "my.npz", "threshold": 0.5}}``.
    """

    flaggers: list[str] = field(default_factory=lambda: ["sextractor", "vgg16"])
    stamp_size: int = 51
    batch_size: int = 256
    options: dict = field(default_factory=dict)

    def validate(self, where: str) -> None:
        _check(len(self.flaggers) > 0, f"{where}.flaggers", "name at least one flagger")
        _check(
            self.stamp_size >= 9 and self.stamp_size % 2 == 1,
            f"{where}.stamp_size",
            "must be an odd number of pixels >= 9",
        )
        _check(self.batch_size >= 1, f"{where}.batch_size", "must be at least 1")


@dataclass
class ShearConfig:
    """Shear measurement settings.

    Attributes
    ----------
    engine : str
        ``"auto"`` (ngmix when it imports, else the GalSim engine), or an
        engine name. [default: "auto"]
    step : float
        Metacalibration shear step. [default: 0.01]
    stamp_size : int
        Vignet side for shape measurement, in pixels. [default: 51]
    n_bootstrap : int
        Bootstrap resamplings for errors. [default: 200]
    max_version_spread : float
        Objects whose ellipticity differs by more than this between the five
        metacalibration versions are flagged ``unstable`` (a step of 0.01
        moves a shape by about 0.01-0.02; 0.2 means a response of 10 or more,
        a measurement that jumped to another solution); 0 switches the check
        off. [default: 0.2]
    """

    engine: str = "auto"
    step: float = 0.01
    stamp_size: int = 51
    n_bootstrap: int = 200
    max_version_spread: float = 0.2

    def validate(self, where: str) -> None:
        _check(0 < self.step < 0.1, f"{where}.step", "must be in (0, 0.1)")
        _check(self.n_bootstrap >= 10, f"{where}.n_bootstrap", "must be at least 10")
        _check(self.max_version_spread >= 0, f"{where}.max_version_spread", "must be >= 0")


@dataclass
class PipelineConfig:
    """The whole pipeline configuration (``configs/pipeline.yaml``)."""

    detect: DetectConfig = field(default_factory=DetectConfig)
    flag: FlagConfig = field(default_factory=FlagConfig)
    shear: ShearConfig = field(default_factory=ShearConfig)
    plugins: dict = field(default_factory=dict)


def load_pipeline_config(path=None) -> PipelineConfig:
    """Load a pipeline config; ``None`` gives the packaged defaults."""
    if path is None:
        return PipelineConfig()
    data = load_yaml(path)
    try:
        return from_mapping(PipelineConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"config error in {Path(path).name}: {exc}") from None


def _configs_dir() -> Path:
    """``configs/``: installed as ``blendflag.configs``, or beside the source tree."""
    try:
        return Path(str(resources.files("blendflag.configs")))
    except ModuleNotFoundError:  # running from a source checkout that shadows the install
        return Path(__file__).resolve().parent.parent / "configs"


def packaged_config(name: str) -> Path:
    """Path of a YAML file shipped in ``configs/`` (installed as ``blendflag.configs``)."""
    return _configs_dir() / f"{name}.yaml"


#: Packaged YAML files that are not dataset presets.
NON_DATASET_CONFIGS = ("pipeline", "train_vgg16", "train_great3")


def dataset_names() -> list[str]:
    """Names of the packaged dataset presets."""
    names = [p.name[:-5] for p in _configs_dir().iterdir() if p.name.endswith(".yaml")]
    return sorted(n for n in names if n not in NON_DATASET_CONFIGS and not n.startswith("train"))


# ---------------------------------------------------------------------------
# Dataset presets (simulations: configs/great3.yaml, euclid.yaml, cfis.yaml)
# ---------------------------------------------------------------------------

PSF_TYPES = ("moffat", "airy", "gaussian")
GALAXY_PROFILES = ("exponential", "sersic", "bulge_disk")


def _check_range(pair, where: str, low: float = 0.0) -> None:
    _check(
        pair[0] > low and pair[1] >= pair[0],
        where,
        f"expected [min, max] with {low} < min <= max, got {list(pair)}",
    )


@dataclass
class PSFSpec:
    """The point-spread function of a dataset.

    Attributes
    ----------
    type : str
        ``"moffat"``, ``"airy"`` or ``"gaussian"``. [default: "moffat"]
    fwhm : float
        Full width at half maximum, in arcsec (Moffat and Gaussian). [default: 0.65]
    beta : float
        Moffat index. [default: 2.5]
    lam_over_diam : float
        Airy lambda / D, in arcsec; FWHM ~= 1.03 lam_over_diam unobscured. [default: 0.165]
    obscuration : float
        Airy central obscuration, as a fraction of the diameter. [default: 0.0]
    g1, g2 : float
        PSF shape as a reduced shear (constant over the field). [default: 0.0]
    image_size : int
        Side of the PSF image written beside fields, in pixels (odd). [default: 51]
    """

    type: str = "moffat"
    fwhm: float = 0.65
    beta: float = 2.5
    lam_over_diam: float = 0.165
    obscuration: float = 0.0
    g1: float = 0.0
    g2: float = 0.0
    image_size: int = 51

    def validate(self, where: str) -> None:
        _check(
            self.type in PSF_TYPES,
            f"{where}.type",
            f"unknown PSF type {self.type!r} (allowed: {', '.join(PSF_TYPES)})",
        )
        _check(self.fwhm > 0, f"{where}.fwhm", "must be positive (arcsec)")
        _check(self.beta > 1.1, f"{where}.beta", "must be > 1.1")
        _check(self.lam_over_diam > 0, f"{where}.lam_over_diam", "must be positive (arcsec)")
        _check(0 <= self.obscuration < 1, f"{where}.obscuration", "must be in [0, 1)")
        _check(self.g1**2 + self.g2**2 < 0.25, f"{where}.g1/g2", "|g| must be < 0.5")
        _check(
            self.image_size >= 9 and self.image_size % 2 == 1,
            f"{where}.image_size",
            "must be an odd number of pixels >= 9",
        )


@dataclass
class GalaxySpec:
    """The galaxy population of a dataset.

    Attributes
    ----------
    profile : str
        ``"exponential"``, ``"sersic"`` (index drawn from ``sersic_n``) or
        ``"bulge_disk"`` (exponential disk + de Vaucouleurs bulge). [default: "exponential"]
    sersic_n : list of float
        Sersic indices drawn uniformly (a short list keeps GalSim's caches warm). [default: [1.0]]
    bulge_fraction : [float, float]
        Range of the bulge-to-total flux ratio, drawn uniformly (``bulge_disk``).
        [default: [0, 0.5]]
    bulge_size_ratio : float
        Bulge half-light radius over the disk's. [default: 0.5]
    hlr : [float, float]
        Half-light radius range, in arcsec, drawn log-uniformly. [default: [0.3, 0.9]]
    flux : [float, float]
        Total flux range, in ADU, drawn log-uniformly. [default: [3000, 40000]]
    ellipticity_sigma : float
        Standard deviation of each intrinsic reduced-shear component. [default: 0.25]
    ellipticity_max : float
        Intrinsic |g| is redrawn above this. [default: 0.7]
    """

    profile: str = "exponential"
    sersic_n: list[float] = field(default_factory=lambda: [1.0])
    bulge_fraction: tuple[float, float] = (0.0, 0.5)
    bulge_size_ratio: float = 0.5
    hlr: tuple[float, float] = (0.3, 0.9)
    flux: tuple[float, float] = (3000.0, 40000.0)
    ellipticity_sigma: float = 0.25
    ellipticity_max: float = 0.7

    def validate(self, where: str) -> None:
        _check(
            self.profile in GALAXY_PROFILES,
            f"{where}.profile",
            f"unknown profile {self.profile!r} (allowed: {', '.join(GALAXY_PROFILES)})",
        )
        _check(
            len(self.sersic_n) > 0 and all(0.3 <= n <= 6.2 for n in self.sersic_n),
            f"{where}.sersic_n",
            "give one or more indices in [0.3, 6.2]",
        )
        _check(
            0 <= self.bulge_fraction[0] <= self.bulge_fraction[1] <= 1,
            f"{where}.bulge_fraction",
            "expected [min, max] within [0, 1]",
        )
        _check(self.bulge_size_ratio > 0, f"{where}.bulge_size_ratio", "must be positive")
        _check_range(self.hlr, f"{where}.hlr")
        _check_range(self.flux, f"{where}.flux")
        _check(
            0 <= self.ellipticity_sigma <= 0.5, f"{where}.ellipticity_sigma", "must be in [0, 0.5]"
        )
        _check(0 < self.ellipticity_max < 1, f"{where}.ellipticity_max", "must be in (0, 1)")


@dataclass
class BlendSpec:
    """How two-galaxy stamps are placed (see :mod:`blendflag.simulate`).

    Attributes
    ----------
    isophote_nsigma : float
        A source's footprint is the set of stamp pixels where its noiseless
        (PSF-convolved, pixelated) image exceeds this many noise sigmas; two
        sources are blended when their footprints share a pixel. [default: 1.0]
    isophote_reference : str
        Which sigma sets the isophote: ``"default_noise"`` (the preset's
        ``default_noise``, so the label is a property of the pair, the same at
        every noise level) or ``"stamp_noise"`` (each stamp's own sigma, so the
        same pair is a blend at low noise and separated at high noise).
        [default: "default_noise"]
    min_separation : float
        Smallest centre-to-centre distance of a blend, in pixels. [default: 1.0]
    separated_max_factor : float
        Separated companions are drawn at up to this many times the blend
        reach (the sum of the footprints' radii). [default: 3.0]
    edge_margin : int
        A companion's centre stays this many pixels inside the stamp. [default: 4]
    min_snr : float
        Every source's optimal S/N (sqrt(sum I^2) / sigma of its noiseless
        image) is at least this; fainter draws are redrawn, so no stamp holds an
        invisible "blend" companion or an empty "single". [default: 5.0]
    """

    isophote_nsigma: float = 1.0
    isophote_reference: str = "default_noise"
    min_separation: float = 1.0
    separated_max_factor: float = 3.0
    edge_margin: int = 4
    min_snr: float = 5.0

    def validate(self, where: str) -> None:
        _check(self.isophote_nsigma > 0, f"{where}.isophote_nsigma", "must be positive")
        _check(
            self.isophote_reference in ("default_noise", "stamp_noise"),
            f"{where}.isophote_reference",
            "must be default_noise or stamp_noise",
        )
        _check(self.min_separation >= 0, f"{where}.min_separation", "must be >= 0 pixels")
        _check(self.separated_max_factor >= 1, f"{where}.separated_max_factor", "must be >= 1")
        _check(self.edge_margin >= 0, f"{where}.edge_margin", "must be >= 0 pixels")
        _check(0 <= self.min_snr <= 100, f"{where}.min_snr", "must be in [0, 100]")


@dataclass
class FieldSpec:
    """Settings of simulated fields (``simulate-field``).

    Attributes
    ----------
    n_galaxies : int
        Galaxies per field when not given on the command line. [default: 2000]
    size : int
        Side of the (square) field image, in pixels; 0 chooses it from
        ``n_galaxies`` and ``density``. [default: 0]
    density : float
        Galaxies per square arcminute, used when ``size`` is 0. [default: 30]
    margin : int
        Galaxy centres stay this many pixels inside the image. [default: 10]
    """

    n_galaxies: int = 2000
    size: int = 0
    density: float = 30.0
    margin: int = 10

    def validate(self, where: str) -> None:
        _check(self.n_galaxies >= 1, f"{where}.n_galaxies", "must be at least 1")
        _check(
            self.size == 0 or self.size >= 64,
            f"{where}.size",
            "must be 0 (automatic) or at least 64 pixels",
        )
        _check(self.density > 0, f"{where}.density", "must be positive (per arcmin^2)")
        _check(self.margin >= 0, f"{where}.margin", "must be >= 0 pixels")


@dataclass
class DatasetConfig:
    """A simulated dataset: instrument, galaxies, noise, stamps and fields.

    Attributes
    ----------
    name : str
        Short name, written into output headers.
    description : str
        One line.
    pixel_scale : float
        Arcsec per pixel.
    stamp_size : int
        Side of the postage stamps, in pixels (odd). [default: 51]
    noise_grid : list of float
        Gaussian noise sigmas, in ADU, drawn uniformly with ``--noise grid``.
    default_noise : float
        Noise sigma used when none is given, in ADU.
    folding_threshold : float
        GalSim GSParams folding_threshold (accuracy of FFT drawing). [default: 0.005]
    psf, galaxy, blend, field
        See :class:`PSFSpec`, :class:`GalaxySpec`, :class:`BlendSpec`, :class:`FieldSpec`.
    """

    name: str = "custom"
    description: str = ""
    pixel_scale: float = 0.187
    stamp_size: int = 51
    noise_grid: list[float] = field(default_factory=lambda: [5.0, 14.0, 18.0, 26.0, 35.0, 40.0])
    default_noise: float = 14.0
    folding_threshold: float = 5e-3
    psf: PSFSpec = field(default_factory=PSFSpec)
    galaxy: GalaxySpec = field(default_factory=GalaxySpec)
    blend: BlendSpec = field(default_factory=BlendSpec)
    field: FieldSpec = field(default_factory=FieldSpec)

    def validate(self, where: str) -> None:
        # Top-level keys are named bare ("pixel_scale"), as in the YAML file.
        where = "" if where == "datasetconfig" else f"{where}."
        _check(
            0.01 <= self.pixel_scale <= 2.0,
            f"{where}pixel_scale",
            "must be in [0.01, 2] arcsec per pixel",
        )
        _check(
            self.stamp_size >= 15 and self.stamp_size % 2 == 1,
            f"{where}stamp_size",
            "must be an odd number of pixels >= 15",
        )
        _check(
            len(self.noise_grid) > 0 and all(s > 0 for s in self.noise_grid),
            f"{where}noise_grid",
            "give one or more positive sigmas (ADU)",
        )
        _check(self.default_noise > 0, f"{where}default_noise", "must be positive (ADU)")
        _check(
            1e-4 <= self.folding_threshold <= 0.05,
            f"{where}folding_threshold",
            "must be in [1e-4, 0.05]",
        )
        _check(
            2 * self.blend.edge_margin < self.stamp_size - 2,
            f"{where}blend.edge_margin",
            "leaves no room in the stamp",
        )


def dataset_preset_names() -> list[str]:
    """Names of the packaged dataset presets (YAML files in ``configs/`` with a ``pixel_scale``)."""
    names = []
    for name in dataset_names():
        try:
            data = load_yaml(packaged_config(name))
        except ConfigError:
            continue
        if "pixel_scale" in data:
            names.append(name)
    return names


def load_dataset_config(dataset) -> DatasetConfig:
    """A dataset preset by name (``"great3"``, ``"euclid"``, ``"cfis"``) or YAML path.

    Parameters
    ----------
    dataset : str, path-like or DatasetConfig
        A packaged preset name, a path to a YAML file with the same keys as
        ``configs/cfis.yaml``, or an already loaded config (returned as is).

    Raises
    ------
    ConfigError
        Unknown name, missing or invalid file, or invalid values.
    """
    if isinstance(dataset, DatasetConfig):
        return dataset
    text = str(dataset)
    names = dataset_preset_names()
    if text in names:
        path = packaged_config(text)
    elif text.endswith((".yaml", ".yml")) or Path(text).is_file():
        path = Path(text)
    else:
        raise ConfigError(
            f"unknown dataset {text!r} (choose from {', '.join(names)}, or give a YAML file)"
        )
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    try:
        return from_mapping(DatasetConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"config error in {path.name}: {exc}") from None
