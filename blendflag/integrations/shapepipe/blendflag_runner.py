"""BLENDFLAG RUNNER.

ShapePipe module runner for blendflag: add ``BLEND_<FLAGGER>`` (and
``P_BLEND_<FLAGGER>``) columns to the SExtractor catalogue of each image.

Install by copying or linking this file into ``shapepipe/modules/`` of a
ShapePipe checkout, in an environment where blendflag is installed; ShapePipe
then finds it as the module ``blendflag_runner`` and reads its options from the
section ``[BLENDFLAG_RUNNER]`` (``[BLENDFLAG_RUNNER_RUN_<N>]`` for a second
run). See ``README.md`` beside this file for the options and an example.

The file imports only blendflag's library (never its command layer) and uses
absolute imports, so it works from either place. Without ShapePipe (tests,
blendflag alone) the decorator is a stand-in that records its arguments on the
function, as ShapePipe's does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blendflag import __version__
from blendflag.errors import BlendflagError, ConfigError

try:
    from shapepipe.modules.module_decorator import module_runner

    USING_SHAPEPIPE = True
except ModuleNotFoundError as _missing:  # only ShapePipe itself may be missing
    if not (_missing.name or "").startswith("shapepipe"):
        raise
    USING_SHAPEPIPE = False

    def module_runner(**kwargs):
        """Stand-in for ShapePipe's decorator: keep the arguments on the function.

        Sets the attributes ShapePipe's ``module_runner`` sets (``version``,
        ``input_module``, ``file_pattern``, ...) and ``module_runner_args``,
        the keyword arguments as given.
        """

        def decorator(func):
            func.module_runner_args = dict(kwargs)
            for key, value in kwargs.items():
                setattr(func, key, value)
            return func

        return decorator


#: The roles an input file can play (``INPUT_ROLES``): ``ignore`` skips a file
#: the stage receives but blendflag does not read (a flag map, say).
ROLES = ("catalogue", "image", "weight", "ignore")
#: ``INPUT_ROLES`` when the option is absent, by number of input files.
DEFAULT_ROLES = {2: ("catalogue", "image"), 3: ("catalogue", "image", "weight")}
#: Output file name before ShapePipe's file number: ``<prefix><number>.fits``.
DEFAULT_OUTPUT_PREFIX = "blendflag_sexcat"


@dataclass
class RunnerOptions:
    """The runner's settings, read from its ShapePipe config section.

    Attributes
    ----------
    flaggers : list of str or None
        ``FLAGGERS``; None takes ``flag.flaggers`` of the blendflag config.
    config_path : str or None
        ``CONFIG_PATH``: a blendflag pipeline YAML; None: the packaged defaults.
    threshold : float or None
        ``THRESHOLD``: probability threshold of the flaggers that take one;
        None: their own (the weights file's).
    weights : str or None
        ``WEIGHTS``: a weights file, or ``name=path,name=path``; None: shipped.
    views : int or None
        ``VIEWS``: rotations/flips averaged by the network flaggers (1, 2, 4, 8).
    input_roles : list of str or None
        ``INPUT_ROLES``: the role of each input file, in order (see :data:`ROLES`);
        None: :data:`DEFAULT_ROLES`.
    output_prefix : str
        ``OUTPUT_PREFIX``: the output is ``<prefix><file_number_string>.fits``.
    """

    flaggers: list[str] | None = None
    config_path: str | None = None
    threshold: float | None = None
    weights: str | None = None
    views: int | None = None
    input_roles: list[str] | None = None
    output_prefix: str = DEFAULT_OUTPUT_PREFIX


def _given(config, section: str, option: str) -> bool:
    """Whether ``option`` has a value other than empty or ``none``."""
    if not config.has_option(section, option):
        return False
    return config.get(section, option).strip().lower() not in ("", "none")


def _number(config, section: str, option: str, kind: type):
    text = config.get(section, option).strip()
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{option} = {text!r} is not {what}") from None


def read_options(config, section: str) -> RunnerOptions:
    """Read the runner's options from ShapePipe's config section.

    Parameters
    ----------
    config : shapepipe.pipeline.config.CustomParser
        Anything with ``has_option``, ``get``, ``getexpanded`` and ``getlist``.
    section : str
        The module's section, e.g. ``BLENDFLAG_RUNNER``.

    Raises
    ------
    ConfigError
        A value of the wrong type, an unknown role, an empty prefix.
    """
    options = RunnerOptions()
    if _given(config, section, "FLAGGERS"):
        options.flaggers = [n for n in config.getlist(section, "FLAGGERS") if n]
    if _given(config, section, "CONFIG_PATH"):
        options.config_path = config.getexpanded(section, "CONFIG_PATH")
    if _given(config, section, "THRESHOLD"):
        options.threshold = _number(config, section, "THRESHOLD", float)
    if _given(config, section, "WEIGHTS"):
        options.weights = config.getexpanded(section, "WEIGHTS")
    if _given(config, section, "VIEWS"):
        options.views = _number(config, section, "VIEWS", int)
    if _given(config, section, "INPUT_ROLES"):
        roles = [r.lower() for r in config.getlist(section, "INPUT_ROLES")]
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ConfigError(
                f"INPUT_ROLES: unknown role(s) {', '.join(map(repr, unknown))} "
                f"(roles: {', '.join(ROLES)})"
            )
        options.input_roles = roles
    if config.has_option(section, "OUTPUT_PREFIX"):
        prefix = config.get(section, "OUTPUT_PREFIX").strip()
        if not prefix or "/" in prefix:
            raise ConfigError("OUTPUT_PREFIX must be a non-empty file name prefix")
        options.output_prefix = prefix
    return options


def assign_inputs(input_file_list, roles) -> dict[str, str]:
    """Which input file is the catalogue, the image and (optionally) the weight.

    Returns
    -------
    dict
        ``{"catalogue": path, "image": path, "weight": path or None}``.

    Raises
    ------
    ConfigError
        The roles do not match the files, or name a role twice or not at all.
    """
    files = [str(f) for f in input_file_list]
    if roles is None:
        if len(files) not in DEFAULT_ROLES:
            raise ConfigError(
                f"the stage has {len(files)} input files; say which is which "
                f"with INPUT_ROLES (a list of: {', '.join(ROLES)})"
            )
        roles = DEFAULT_ROLES[len(files)]
    if len(roles) != len(files):
        raise ConfigError(
            f"INPUT_ROLES names {len(roles)} roles for {len(files)} input files "
            f"({', '.join(Path(f).name for f in files)})"
        )
    chosen = {}
    for role, path in zip(roles, files, strict=True):
        if role == "ignore":
            continue
        if role in chosen:
            raise ConfigError(f"INPUT_ROLES names {role!r} twice")
        chosen[role] = path
    for role in ("catalogue", "image"):
        if role not in chosen:
            raise ConfigError(f"INPUT_ROLES must name the {role} file")
    chosen.setdefault("weight", None)
    return chosen


def flag_files(files: dict, out: Path, options: RunnerOptions) -> str:
    """Flag one catalogue with blendflag's library and write it to ``out`` atomically.

    The same steps as ``blendflag-shear flag CATALOGUE --image IMAGE --weight
    WEIGHT --out OUT``: the config, the flaggers with their option overrides,
    :func:`blendflag.pipeline.stages.flag_catalogue_file`, then
    :func:`blendflag.io.catalog.write_annotated`.

    Returns
    -------
    str
        One line: objects, flagged counts per column, output path.
    """
    from blendflag.config import load_pipeline_config
    from blendflag.flagging.flaggers import flagger_overrides, make_flaggers
    from blendflag.io.catalog import write_annotated
    from blendflag.pipeline.stages import flag_catalogue_file
    from blendflag.plugins import get_plugin_manager

    pm = get_plugin_manager()
    config = load_pipeline_config(options.config_path)
    names = options.flaggers or list(config.flag.flaggers)
    values = {"weights": options.weights, "threshold": options.threshold, "views": options.views}
    flaggers = make_flaggers(pm, names, config, flagger_overrides(pm, names, **values))
    context = flag_catalogue_file(
        pm, config, flaggers, files["catalogue"], files["image"], files["weight"]
    )
    write_annotated(context.catalogue, context.annotation, out)
    counts = ", ".join(
        f"{f.column}: {int(context.results['flags'][f.name].flag.sum())}" for f in flaggers
    )
    return f"{len(context.table)} objects ({counts}) -> {out}"


def output_path(run_dirs, prefix: str, file_number_string: str) -> Path:
    """``run_dirs['output']/<prefix><file_number_string>.fits``, ShapePipe's naming."""
    return Path(run_dirs["output"]) / f"{prefix}{file_number_string}.fits"


@module_runner(
    version=__version__,
    input_module=["sextractor_runner", "get_images_runner", "uncompress_fits_runner"],
    file_pattern=["sexcat", "CFIS_image", "CFIS_weight"],
    file_ext=[".fits", ".fits", ".fits"],
    depends=["numpy", "astropy", "blendflag"],
    executes=[],
    numbering_scheme="-000-000",
    run_method="parallel",
)
def blendflag_runner(
    input_file_list,
    run_dirs,
    file_number_string,
    config,
    module_config_sec,
    w_log,
):
    """Define The blendflag Runner: flag the blends of one catalogue.

    Parameters
    ----------
    input_file_list : list of str
        The stage's files for one image number, in ``FILE_PATTERN`` order
        (default: SExtractor catalogue, image, weight; see ``INPUT_ROLES``).
    run_dirs : dict
        ShapePipe's run directories; the output goes to ``run_dirs["output"]``.
    file_number_string : str
        The image's number, e.g. ``-000-000``.
    config : shapepipe.pipeline.config.CustomParser
    module_config_sec : str
        This module's section, e.g. ``BLENDFLAG_RUNNER``.
    w_log : logging.Logger
        The worker's log.

    Returns
    -------
    tuple
        ``(stdout, stderr)``: a one-line summary and None.

    Raises
    ------
    blendflag.errors.BlendflagError
        (a ``ValueError``) for a bad option or unreadable input, after writing
        the message to ``w_log``; ShapePipe's worker logs it and fails the job.
        No output file is left behind.
    """
    try:
        options = read_options(config, module_config_sec)
        files = assign_inputs(input_file_list, options.input_roles)
        out = output_path(run_dirs, options.output_prefix, file_number_string)
        w_log.info(
            f"blendflag {__version__}: catalogue {files['catalogue']}, image {files['image']}, "
            f"weight {files['weight']}, flaggers {options.flaggers or 'config default'}"
        )
        stdout = flag_files(files, out, options)
    except BlendflagError as exc:
        message = f"blendflag_runner [{module_config_sec}]: {exc}"
        w_log.error(message)
        raise type(exc)(message) from exc
    w_log.info(stdout)
    return stdout, None
