"""The flagger interface every blend flagger plugin implements."""

from __future__ import annotations

from dataclasses import dataclass

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
    """

    flag: np.ndarray
    probability: np.ndarray | None = None


class Flagger:
    """Base class of blend flaggers.

    Subclasses set ``name`` and implement :meth:`flag_stamps`; catalogue-level
    flaggers that read catalogue columns (like SExtractor's FLAGS) override
    :meth:`flag_catalogue` and set ``needs_stamps = False``.

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


def network_overrides(names, weights=None, threshold=None, backend=None, views=None) -> dict:
    """Per-flagger options from ``--weights``, ``--threshold``, ``--backend`` and ``--views``.

    ``--weights`` is either one path (for every flagger named) or
    ``name=path[,name=path...]``; ``--backend`` applies to the sextractor flagger.

    Raises
    ------
    BlendflagError
        ``name=path`` names a flagger that was not asked for.
    """
    overrides = {n: {} for n in names}
    if weights:
        if "=" in weights:
            for item in weights.split(","):
                name, _, path = item.partition("=")
                name = name.strip()
                if name not in overrides:
                    raise BlendflagError(
                        f"--weights names {name!r}, which is not among the "
                        f"flaggers asked for ({', '.join(names)})"
                    )
                overrides[name]["weights"] = path.strip()
        else:
            for n in names:
                if n != "sextractor":
                    overrides[n]["weights"] = weights
    for key, value in (("threshold", threshold), ("views", views)):
        if value is not None:
            for n in names:
                if n != "sextractor":
                    overrides[n][key] = value
    if backend:
        overrides.setdefault("sextractor", {})["backend"] = backend
    return overrides
