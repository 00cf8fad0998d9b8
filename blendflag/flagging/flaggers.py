"""The flagger interface every blend flagger plugin implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blendflag.config import PipelineConfig
from blendflag.errors import BlendflagError


@dataclass
class FlagResult:
    """Per-source output of a flagger.

    Attributes
    ----------
    flag : numpy.ndarray
        bool, True where the source (or stamp) is a blend.
    probability : numpy.ndarray or None
        float32 blend probability in [0, 1], for flaggers that have one.
    n_sources : numpy.ndarray or None
        int16, the number of sources whose footprints overlap the central
        object's, itself included (1, 2, 3, or 4 for four or more), for
        flaggers that count them.
    """

    flag: np.ndarray
    probability: np.ndarray | None = None
    n_sources: np.ndarray | None = None


class Flagger:
    """Base class of blend flaggers.

    Subclasses set ``name`` and implement :meth:`flag_stamps`; catalogue-level
    flaggers that read catalogue columns (like SExtractor's FLAGS) override
    :meth:`flag_catalogue` and set ``needs_stamps = False``. A flagger declares
    what the core may ask of it: the generic command-line options it takes
    (``cli_options``) and whether ``blendflag-shear train`` can train it
    (``trainable``, :meth:`train`, ``training_config``).

    Parameters
    ----------
    options : dict or None
        Flagger-specific options (from ``flag.options.<name>`` in the config or
        command-line overrides).
    """

    #: Unique flagger name, used on the command line and in column names.
    name: str = ""
    #: Whether :meth:`flag_catalogue` needs stamps cut around the sources.
    needs_stamps: bool = True
    #: Whether the flagger's decisions stay valid on metacalibration images
    #: (PSF-dilated, correlated noise); `compare` leaves it out by default if not.
    metacal_safe: bool = True
    #: Generic command-line options it accepts, a subset of :data:`CLI_OPTIONS`
    #: (``--weights``, ``--threshold``, ``--views``, ``--backend``); a command
    #: passes each given value on as the option of that name to exactly the
    #: flaggers that declare it (see :func:`cli_overrides`).
    cli_options: tuple[str, ...] = ()
    #: Whether :meth:`train` is implemented (``blendflag-shear train``).
    trainable: bool = False
    #: The training config it ships: a path relative to the package that holds
    #: the flagger's module, read with :mod:`importlib.resources` (for example
    #: ``"configs/train_mine.yaml"``); None when it ships none.
    training_config: str | None = None

    def __init__(self, options: dict | None = None):
        self.options = dict(options or {})
        ref = self.options.get("reference_noise")
        #: Noise sigma (ADU) of the depth at which a blend is defined (the
        #: 1-sigma isophote of the simulation truth), for flaggers that use it;
        #: None means each stamp's own noise. ``evaluate`` and ``compare`` set it
        #: from the dataset preset unless the option ``reference_noise`` is given.
        self.reference_noise: float | None = None if ref is None else _positive(ref, self.name)

    def default_reference_noise(self, sigma: float | None) -> None:
        """Take ``sigma`` (ADU) as the reference depth unless one is set already."""
        if self.reference_noise is None and sigma is not None:
            self.reference_noise = float(sigma)

    @property
    def column(self) -> str:
        """Name of the boolean blend-flag column, e.g. ``BLEND_VGG16``."""
        return f"BLEND_{self.name.upper()}"

    @property
    def probability_column(self) -> str:
        """Name of the blend-probability column, e.g. ``P_BLEND_VGG16``."""
        return f"P_BLEND_{self.name.upper()}"

    @property
    def count_column(self) -> str:
        """Name of the source-count column, e.g. ``NSRC_VGG16``."""
        return f"NSRC_{self.name.upper()}"

    def flag_stamps(self, stamps: np.ndarray) -> FlagResult:
        """Classify postage stamps (source at the centre) as blend or not.

        Parameters
        ----------
        stamps : numpy.ndarray
            ``(n, size, size)`` float32, background subtracted, in ADU.
        """
        raise NotImplementedError

    def flag_catalogue(self, context) -> FlagResult:
        """Flag every source of ``context.table`` (default: from its stamps)."""
        return self.flag_stamps(context.stamps)

    def provenance(self) -> list[tuple[str, object, str]]:
        """Header cards ``(keyword, value, comment)`` describing this flagger's setup."""
        return []

    @classmethod
    def train(
        cls,
        config_path,
        out,
        *,
        resume: bool = False,
        max_minutes: float | None = None,
        quiet: bool = False,
        workdir=None,
        overrides: dict | None = None,
    ) -> dict:
        """Train the flagger from a YAML config and write its weights file.

        Implemented by flaggers with ``trainable = True``.

        Parameters
        ----------
        config_path : path-like
            Training config (YAML), e.g. :meth:`training_config_path`.
        out : path-like
            Weights file to write.
        resume : bool
            Continue an unfinished run from its checkpoints. [default: False]
        max_minutes : float or None
            Stop after the epoch that crosses this many minutes of training.
        quiet : bool
            No per-epoch lines. [default: False]
        workdir : path-like or None
            Data and checkpoints. [default: ``OUT.run``]
        overrides : dict or None
            Top-level config keys to replace (e.g. ``{"datasets": [...]}``).

        Returns
        -------
        dict
            ``{"finished": bool, "epochs": int}`` and, when finished, ``"val"``
            (validation recalls: ``blend_recall``, ``nonblend_recall``),
            ``"threshold"`` and ``"out"``.

        Raises
        ------
        NotImplementedError
            The flagger cannot be trained.
        """
        raise NotImplementedError(f"flagger {cls.name!r} cannot be trained")

    @classmethod
    def training_config_path(cls) -> Path | None:
        """Path of the shipped ``training_config``, or None when there is none.

        Resolved with :mod:`importlib.resources` inside the package that holds
        the flagger's module (beside a top-level module for a single-file plugin).
        """
        if not cls.training_config:
            return None
        import sys
        from importlib import resources

        module = sys.modules[cls.__module__]
        spec = getattr(module, "__spec__", None)
        package = spec.parent if spec is not None else module.__package__
        if package:
            root = resources.files(package)
        else:
            root = Path(module.__file__).parent
        return Path(str(root.joinpath(*cls.training_config.split("/"))))


def _positive(value, flagger: str) -> float:
    """``value`` as a positive finite float, else a one-line error naming the option."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number <= 0:
        raise BlendflagError(
            f"{flagger} option reference_noise must be a positive noise sigma in ADU, got {value!r}"
        )
    return number


def make_flaggers(pm, names, config: PipelineConfig, overrides: dict | None = None) -> list:
    """Instantiate the named flaggers with their options from the config.

    Parameters
    ----------
    names : str or list of str
        ``"sextractor,vgg16"`` or a list.
    overrides : dict or None
        ``{flagger name: {option: value}}`` from the command line.

    Raises
    ------
    PluginError
        A name is not a registered flagger.
    """
    from blendflag.plugins import get_flaggers, resolve_names

    available = get_flaggers(pm)
    chosen = resolve_names(names, available, "flagger")
    flaggers = []
    for name in chosen:
        options = dict(config.flag.options.get(name, {}) or {})
        options.update((overrides or {}).get(name, {}))
        flaggers.append(available[name](options))
    return flaggers


#: The generic command-line options a flagger may declare in ``cli_options``.
CLI_OPTIONS = ("weights", "threshold", "views", "backend")
#: Options whose value may instead name flaggers: ``name=value[,name=value...]``.
PER_FLAGGER_OPTIONS = ("weights",)


def cli_overrides(classes: dict[str, type], names, values: dict) -> dict:
    """Per-flagger options from generic command-line values.

    Each given value goes to exactly the named flaggers that declare the option
    in ``cli_options``; a flagger that does not declare it never sees it.

    Parameters
    ----------
    classes : dict of str to type
        Registered flagger classes by name (:func:`blendflag.plugins.get_flaggers`).
    names : list of str
        The flaggers asked for (registered names).
    values : dict
        ``{option: value}`` for options of :data:`CLI_OPTIONS`; None or ``""``
        means not given. A ``weights`` value is one path (for every flagger
        that takes weights) or ``name=path[,name=path...]``.

    Returns
    -------
    dict
        ``{flagger name: {option: value}}`` for every name.

    Raises
    ------
    BlendflagError
        ``name=path`` names a flagger that was not asked for, or one that does
        not take the option.
    """
    overrides = {n: {} for n in names}
    for option, value in values.items():
        if option not in CLI_OPTIONS:
            raise ValueError(f"{option!r} is not a generic flagger option ({CLI_OPTIONS})")
        if value is None or value == "":
            continue
        flag = f"--{option}"
        if option in PER_FLAGGER_OPTIONS and "=" in str(value):
            for item in str(value).split(","):
                name, _, text = item.partition("=")
                name = name.strip()
                if name not in overrides:
                    raise BlendflagError(
                        f"{flag} names {name!r}, which is not among the "
                        f"flaggers asked for ({', '.join(names)})"
                    )
                if option not in classes[name].cli_options:
                    takers = [n for n in sorted(classes) if option in classes[n].cli_options]
                    raise BlendflagError(
                        f"{flag} names {name!r}, which takes no {option} "
                        f"(flaggers that do: {', '.join(takers) or 'none'})"
                    )
                overrides[name][option] = text.strip()
            continue
        for n in names:
            if option in classes[n].cli_options:
                overrides[n][option] = value
    return overrides


def flagger_overrides(pm, names, **values) -> dict:
    """:func:`cli_overrides` for the flaggers registered with ``pm``.

    Parameters
    ----------
    pm : pluggy.PluginManager
    names : str or list of str
        ``"a,b"`` or a list of flagger names.
    **values
        ``weights=``, ``threshold=``, ``views=``, ``backend=`` (None: not given).

    Raises
    ------
    PluginError
        A name is not a registered flagger.
    BlendflagError
        See :func:`cli_overrides`.
    """
    from blendflag.plugins import get_flaggers, resolve_names

    classes = get_flaggers(pm)
    return cli_overrides(classes, resolve_names(names, classes, "flagger"), values)
