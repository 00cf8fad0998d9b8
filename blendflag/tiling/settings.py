"""The settings of a run of many tasks (tiles or sub-tiles): what defines a task's result.

A task is done when its stored hash equals the hash of its input files and of
these settings (:func:`blendflag.tiling.tile_list.files_hash`), so a rerun with
the same settings resumes and a run with other settings measures again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class RunSettings:
    """What every task of one run is given (and what its hash covers).

    Attributes
    ----------
    config : dict
        The pipeline config (:class:`blendflag.config.PipelineConfig` as a dict).
    flaggers : tuple of str
        Flagger names.
    engine : str
        Shear engine name (``none`` when nothing is measured: ``flag --tiles``).
    engine_settings : dict or None
        The engine's resolved settings (its defaults with ``shear.options``
        applied), so a task measured before an engine's default changed is
        measured again.
    seed : int
        Seed of the noise-correction fields and the bootstrap.
    version : str
        blendflag's version.
    weights : str or None
        Network weights given on the command line.
    pixel_scale : float or None
        arcsec per pixel when the header has no WCS.
    bootstrap : int or None
        Bootstrap resamplings (None: the config's).
    recentre_psf : bool
        Pad or shift an off-centre PSF instead of refusing it.
    threshold, views : float or None, int or None
        ``flag --tiles``: the network flaggers' threshold and views.
    true_shear : tuple or None
        The applied shear (g1, g2): a split image's, or ``--true-shear`` with
        ``--tiles`` (the +g image's of each pair; tiles whose headers give
        none take it times their sign).
    core : int or None
        A split image: the side of a sub-tile's core, pixels.
    field : str or None
        A split image: its identity (:func:`blendflag.io.images.image_identity`),
        the key of its units and the seed of its correction fields.
    inputs_hash : str or None
        A split image: the hash of its input files and the settings above.
    reference_noise : float or None
        A split image: the whole image's depth of the flaggers' blend label, ADU.
    """

    config: dict
    flaggers: tuple
    engine: str
    engine_settings: dict | None
    seed: int
    version: str
    weights: str | None = None
    pixel_scale: float | None = None
    bootstrap: int | None = None
    recentre_psf: bool = False
    threshold: float | None = None
    views: int | None = None
    true_shear: tuple | None = None
    core: int | None = None
    field: str | None = None
    inputs_hash: str | None = None
    reference_noise: float | None = None

    @classmethod
    def for_run(cls, pm, config, flaggers, engine: str, seed: int, **options) -> RunSettings:
        """The settings of a run of ``engine`` with ``config`` (options: see the attributes).

        Parameters
        ----------
        pm : pluggy.PluginManager
            The caller's plugin manager (it resolves the engine's settings).
        config : blendflag.config.PipelineConfig
        flaggers : list of str
        engine : str
        seed : int
        **options
            Any other attribute.
        """
        import blendflag

        return cls(
            config=asdict(config),
            flaggers=tuple(flaggers),
            engine=engine,
            engine_settings=_engine_settings(pm, config, engine),
            seed=int(seed),
            version=blendflag.__version__,
            **options,
        )

    def with_(self, **changes) -> RunSettings:
        """A copy with ``changes`` (the settings themselves never change)."""
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """The settings as plain data (what the hash covers)."""
        return asdict(self)


def _engine_settings(pm, config, engine: str) -> dict | None:
    """The named engine's resolved ``settings`` for ``config.shear`` (None: none known)."""
    from blendflag.plugins import get_shear_engines

    cls = get_shear_engines(pm).get(engine)
    return getattr(cls(config.shear), "settings", None) if cls is not None else None
