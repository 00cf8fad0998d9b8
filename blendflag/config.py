"""YAML configuration files loaded into dataclasses and validated once, at the edge.

A config file is a mapping whose top-level keys are sections (``detect``,
``flag``, ``shear``, ...). Unknown keys, wrong types and out-of-range values
raise :class:`~blendflag.errors.ConfigError` naming the key, e.g.
``config error in pipeline.yaml: detect.thresh: expected a number, got 'high'``.
"""

from __future__ import annotations

import dataclasses
import functools
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


def _convert(value, tp, where: str):
    """Check ``value`` against the annotation ``tp``, converting int -> float."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, typing.get_args(tp), where)
    if dataclasses.is_dataclass(tp) or origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_mapping(tp, value, where) if dataclasses.is_dataclass(tp) else dict(value)
    if tp in (list, tuple):
        tp = tp[typing.Any]
        origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return _convert_sequence(value, origin, typing.get_args(tp), where)
    if tp is typing.Any:
        return value
    return _convert_scalar(value, tp, where)


def _convert_union(value, args: tuple, where: str):
    """``value`` converted by the first member of a union (``args``) that accepts it."""
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _convert(value, arg, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")


def _convert_sequence(value, origin, args: tuple, where: str):
    """``value`` checked item by item against ``list[...]`` or ``tuple[...]`` (``origin[args]``)."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
    item = args[0] if args else typing.Any
    out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    return tuple(out) if origin is tuple else out


#: Scalar annotations: what a value must be (in messages) and the test it must pass.
_SCALARS = {
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
}


def _convert_scalar(value, tp, where: str):
    """``value`` checked against ``float`` (an int becomes a float), ``int``, ``bool``, ``str``."""
    expected, accepts = next((s for t, s in _SCALARS.items() if t is tp), (None, None))
    if accepts is None:
        name = getattr(tp, "__name__", str(tp))
        raise ConfigError(f"{where}: unsupported type {name}")  # pragma: no cover
    if not accepts(value):
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")
    return float(value) if tp is float else value


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


def plain_data(value):
    """``value`` with every tuple made a list, recursively, so YAML dumps it plainly."""
    if isinstance(value, dict):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value


def to_yaml(obj) -> str:
    """A config dataclass as plain YAML text (``yaml.safe_load`` reads it back).

    Keys keep the dataclass's field order; this is the ``config.yaml`` saved
    beside outputs and the ``CONFIG`` HDU of stamp files.
    """
    return yaml.safe_dump(plain_data(to_mapping(obj)), sort_keys=False)


def check(condition: bool, where: str, message: str) -> None:
    """Raise ``ConfigError("{where}: {message}")`` unless ``condition`` holds (for ``validate``)."""
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
        A registered detector (``blendflag-shear plugins`` lists them).
        [default: ``detect.backend`` of the packaged pipeline.yaml]
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
    filter_fwhm : float
        FWHM (pixels) of a 7x7 Gaussian detection filter, as metadetect's
        detection uses (3); 0 keeps sep's default 3x3 kernel. Read by the sep
        detector. [default: 0]
    """

    backend: str = field(default_factory=lambda: packaged_default("detect", "backend"))
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
    filter_fwhm: float = 0.0

    def validate(self, where: str) -> None:
        check(self.thresh > 0, f"{where}.thresh", "must be positive")
        check(self.filter_fwhm >= 0, f"{where}.filter_fwhm", "must be >= 0 pixels")
        check(self.minarea >= 1, f"{where}.minarea", "must be at least 1")
        check(1 <= self.deblend_nthresh <= 64, f"{where}.deblend_nthresh", "must be in 1..64")
        check(0 <= self.deblend_cont <= 1, f"{where}.deblend_cont", "must be in 0..1")
        check(self.back_size >= 8, f"{where}.back_size", "must be at least 8 pixels")
        check(self.back_filtersize >= 1, f"{where}.back_filtersize", "must be at least 1")


@dataclass
class FlagConfig:
    """Blend flagging settings.

    Attributes
    ----------
    flaggers : list of str
        Flagger names to run, in order; ``compare`` runs those valid on
        metacal images. [default: ``flag.flaggers`` of the packaged pipeline.yaml]
    stamp_size : int
        Side of the postage stamps cut around sources, in pixels (odd). [default: 51]
    batch_size : int
        Stamps per batch sent to a network flagger. [default: 256]
    options : dict
        Per-flagger options, keyed by flagger name, e.g.
        ``{"vgg16": {"weights": "my.npz", "threshold": 0.5}}``.
    """

    flaggers: list[str] = field(default_factory=lambda: list(packaged_default("flag", "flaggers")))
    stamp_size: int = 51
    batch_size: int = 256
    options: dict = field(default_factory=dict)

    def validate(self, where: str) -> None:
        check(len(self.flaggers) > 0, f"{where}.flaggers", "name at least one flagger")
        check(
            self.stamp_size >= 9 and self.stamp_size % 2 == 1,
            f"{where}.stamp_size",
            "must be an odd number of pixels >= 9",
        )
        check(self.batch_size >= 1, f"{where}.batch_size", "must be at least 1")


NEIGHBOUR_CHOICES = ("keep", "mask")  # shear.neighbours, shear.neighbour_pixels
NEIGHBOUR_PIXEL_CHOICES = ("dominant", "model", "segment")


@dataclass
class ShearCuts:
    """The shear catalogue's cuts, as surveys make one (``shear.cuts``).

    An object is kept in a metacal version when that version's own S/N and
    size pass, so the selection response ``R_S`` covers the cuts (a cut on
    the noshear values alone would bias the shear by the cut's own response).

    Attributes
    ----------
    s2n_min : float
        Least S/N of the object's moments (dimensionless; 0: no cut). [default: 10.0]
    t_ratio_min : float
        Least ``T / T_PSF``: the object's size over the reconvolution PSF's,
        both measured with the same weight (0: no cut). [default: 1.2, with
        S/N > 10 the cuts of the metadetection paper, Sheldon et al. 2020]
    """

    s2n_min: float = 10.0
    t_ratio_min: float = 1.2

    def validate(self, where: str) -> None:
        check(self.s2n_min >= 0, f"{where}.s2n_min", "must be >= 0")
        check(self.t_ratio_min >= 0, f"{where}.t_ratio_min", "must be >= 0")

    @property
    def active(self) -> bool:
        """True when either cut removes something."""
        return self.s2n_min > 0 or self.t_ratio_min > 0


@dataclass
class ShearConfig:
    """Shear measurement settings.

    Attributes
    ----------
    engine : str
        An engine name, or ``"auto"`` (the available engine of highest
        priority: what measures then depends on what is installed).
        [default: the packaged config's, the built-in engine]
    step : float
        Metacalibration shear step. [default: 0.01]
    stamp_size : int
        Vignet side for shape measurement, in pixels. [default: 51]
    n_bootstrap : int
        Bootstrap resamplings for errors. [default: 200]
    max_version_spread : float
        Objects whose ellipticity differs by more than this between the five
        versions are flagged ``unstable`` (a jump to another solution: a step
        of 0.01 moves a shape by 0.01-0.02); 0: off. [default: 0.2]
    truth_depth : str
        Depth of the blend truth behind the ``no_true_blends`` selection of a
        simulated field: ``field`` (footprints at the image's own noise: the
        blends the image shows) or ``reference`` (the preset's depth, at which
        the flaggers' blend label is defined). [default: "field"]
    neighbours : str
        What a stamp engine does with the pixels of other detected sources in
        an object's stamp: ``"keep"`` measures the stamp as cut; ``"mask"``
        gives them zero weight and fills them with Gaussian noise of the
        object's noise sigma before metacalibration, so every metacal version
        sees the filled stamp (the uberseg / noise-fill approach of ShapePipe;
        the footprints come from the detection's segmentation map, see
        :mod:`blendflag.shear.masking`). [default: "keep"]
    neighbour_pixels : str
        How ``"mask"`` masks: fill a neighbour's segment with noise
        (``"segment"``) or only where its catalogue model outshines the
        object's (``"dominant"``); or lower the ``wmom`` weight there, the
        models sheared with each metacal version (``"model"``,
        :mod:`blendflag.shear.neighbour_weights`). [default: "model"]
    keep_stars : bool
        Keep the stars in the selections. By default the detections that are
        stars (by the truth of a simulated field, else by the catalogue's
        stellar locus, :mod:`blendflag.shear.star_cut`) are left out of every
        selection. [default: False]
    cuts : ShearCuts
        The shear catalogue's S/N and size cuts, applied to every stamp
        selection on each metacal version's own measurement.
    bootstrap_cell : int
        Side (pixels) of the square cells of the sky a stamp selection's
        bootstrap resamples, the +g and -g images' cells of one position
        together (:mod:`blendflag.shear.units`); 0: every detection is its
        own unit. [default: 100]
    options : dict
        Per-engine settings, keyed by engine name; each engine documents its
        own (e.g. a metadetection engine's cell size and cuts).
    """

    engine: str = field(default_factory=lambda: packaged_default("shear", "engine"))
    step: float = 0.01
    stamp_size: int = 51
    n_bootstrap: int = 200
    max_version_spread: float = 0.2
    truth_depth: str = "field"
    neighbours: str = "keep"
    neighbour_pixels: str = "model"
    keep_stars: bool = False
    cuts: ShearCuts = field(default_factory=ShearCuts)
    bootstrap_cell: int = 100
    options: dict = field(default_factory=dict)

    def validate(self, where: str) -> None:
        for name, choices in (
            ("truth_depth", ("field", "reference")),
            ("neighbours", NEIGHBOUR_CHOICES),
            ("neighbour_pixels", NEIGHBOUR_PIXEL_CHOICES),
        ):
            value = getattr(self, name)
            check(
                value in choices,
                f"{where}.{name}",
                f"must be {' or '.join(choices)}, got {value!r}",
            )
        check(0 < self.step < 0.1, f"{where}.step", "must be in (0, 0.1)")
        check(self.n_bootstrap >= 10, f"{where}.n_bootstrap", "must be at least 10")
        check(self.max_version_spread >= 0, f"{where}.max_version_spread", "must be >= 0")
        check(self.bootstrap_cell >= 0, f"{where}.bootstrap_cell", "must be >= 0 (pixels)")


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


@functools.cache
def _packaged_pipeline() -> dict:
    return load_yaml(packaged_config("pipeline"))


def packaged_default(section: str, key: str):
    """A default that names plugins, read from the packaged ``configs/pipeline.yaml``.

    The core names no plugin: the default detector backend and flagger list
    live in that file, and the dataclasses take them from it.
    """
    try:
        return _packaged_pipeline()[section][key]
    except (KeyError, TypeError):
        raise ConfigError(f"the packaged pipeline.yaml has no {section}.{key}") from None


def configs_dir() -> Path:
    """``configs/``: installed as ``blendflag.configs``, or beside the source tree."""
    try:
        return Path(str(resources.files("blendflag.configs")))
    except ModuleNotFoundError:  # running from a source checkout that shadows the install
        return Path(__file__).resolve().parent.parent / "configs"


def packaged_config(name: str) -> Path:
    """Path of a YAML file shipped in ``configs/`` (installed as ``blendflag.configs``)."""
    return configs_dir() / f"{name}.yaml"
