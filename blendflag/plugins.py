"""The plugin manager: built-ins and third-party plugins, found the same way."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pluggy

from blendflag import hookspecs
from blendflag.errors import PluginError

#: Environment variable holding a comma-separated list of plugin names to block.
DISABLE_ENV = "BLENDFLAG_DISABLE_PLUGINS"
#: Entry-point group every plugin (built-in or not) is registered under.
ENTRY_POINT_GROUP = "blendflag"
#: Distribution whose entry points count as built-in.
BUILTIN_DISTRIBUTION = "blendflag"


class _PluginManager(pluggy.PluginManager):
    """A manager that also treats undecorated ``blendflag_*`` functions as hooks.

    pytest does the same with ``pytest_*``: a misspelt hook name then fails in
    :meth:`check_pending` instead of being silently ignored.
    """

    def parse_hookimpl_opts(self, plugin, name):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("blendflag_"):
            method = getattr(plugin, name, None)
            if callable(method):
                return {}
        return opts


def get_plugin_manager(extra_plugins=(), load_entry_points=True) -> pluggy.PluginManager:
    """Build a fresh plugin manager.

    Parameters
    ----------
    extra_plugins : iterable of (name, plugin)
        Plugins to register by hand after the entry points (tests use this).
    load_entry_points : bool
        Load the ``blendflag`` entry-point group. [default: True]

    Returns
    -------
    pluggy.PluginManager

    Raises
    ------
    PluginError
        A plugin fails to import or implements a hook that does not exist.
    """
    pm = _PluginManager("blendflag")
    pm.add_hookspecs(hookspecs)
    for name in blocked_plugin_names():
        pm.set_blocked(name)
    try:
        if load_entry_points:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for name, plugin in extra_plugins:
            pm.register(plugin, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"invalid plugin {exc.plugin!r}: {exc}") from exc
    except ImportError as exc:
        raise PluginError(
            f"a blendflag plugin failed to import: {exc} (block it with {DISABLE_ENV}=<name>)"
        ) from exc
    return pm


def blocked_plugin_names() -> list[str]:
    """Names listed in ``$BLENDFLAG_DISABLE_PLUGINS`` (comma or space separated)."""
    raw = os.environ.get(DISABLE_ENV, "")
    return [n for n in raw.replace(",", " ").split() if n]


def unknown_blocked_names(pm: pluggy.PluginManager) -> list[str]:
    """Names in ``$BLENDFLAG_DISABLE_PLUGINS`` that match no entry point nor registered plugin."""
    from importlib.metadata import distributions

    known = {  # every distribution, as pluggy loads them (shadowed copies included)
        ep.name
        for dist in distributions()
        for ep in dist.entry_points
        if ep.group == ENTRY_POINT_GROUP
    }
    known |= {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    return [n for n in blocked_plugin_names() if n not in known]


@dataclass(frozen=True)
class PluginInfo:
    """What ``blendflag-shear plugins`` reports about one plugin."""

    name: str
    hooks: tuple[str, ...]
    origin: str  # "built-in", "entry point", or "registered"
    distribution: str | None
    version: str | None


def describe_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """List registered plugins with their hooks and origin, sorted by name."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        dist = dists.get(id(plugin))
        if dist is None:
            origin, dist_name, version = "registered", None, None
        else:
            dist_name = dist.metadata["name"]
            version = dist.version
            origin = "built-in" if dist_name == BUILTIN_DISTRIBUTION else "entry point"
        infos.append(PluginInfo(name, hooks, origin, dist_name, version))
    return sorted(infos, key=lambda i: i.name)


def registered_classes(results, kind: str) -> dict[str, type]:
    """Merge the lists returned by a ``register_*`` hook into ``{name: class}``.

    Raises
    ------
    PluginError
        Two plugins register the same name.
    """
    classes: dict[str, type] = {}
    for result in results:
        for cls in result or ():
            name = cls.name
            if name in classes and classes[name] is not cls:
                raise PluginError(f"two plugins register a {kind} named {name!r}")
            classes[name] = cls
    return classes


def get_flaggers(pm: pluggy.PluginManager) -> dict[str, type]:
    """All registered flagger classes by name."""
    return registered_classes(pm.hook.blendflag_register_flaggers(), "flagger")


def get_shear_engines(pm: pluggy.PluginManager) -> dict[str, type]:
    """All registered shear-engine classes by name."""
    return registered_classes(pm.hook.blendflag_register_shear_engines(), "shear engine")


def get_detectors(pm: pluggy.PluginManager) -> dict[str, type]:
    """All registered detector classes (:class:`blendflag.flagging.detectors.Detector`) by name."""
    return registered_classes(pm.hook.blendflag_register_detectors(), "detector")


def resolve_names(requested: str | list[str], available: dict[str, type], kind: str) -> list[str]:
    """Split ``"a,b"`` and check every name is registered.

    Raises
    ------
    PluginError
        A name is not registered; the message lists what is.
    """
    names = requested.split(",") if isinstance(requested, str) else list(requested)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise PluginError(f"no {kind} named")
    for n in names:
        if n not in available:
            known = ", ".join(sorted(available)) or "none"
            raise PluginError(f"unknown {kind} {n!r} (registered: {known})")
    return names


def select_engine(engines: dict[str, type], name: str = "auto", paired: bool = False) -> type:
    """Pick an engine class by name, or by priority for ``"auto"``.

    Parameters
    ----------
    engines : dict
        ``{name: class}`` from :func:`blendflag.plugins.get_shear_engines`.
    name : str
        ``"auto"`` (the available engine of highest :attr:`ShearEngine.priority`)
        or a registered engine name. [default: "auto"]
    paired : bool
        The run provides paired noise-correction fields (a simulation with
        rotated and ±g pairs): ``auto`` then prefers the engines that take them
        (:attr:`ShearEngine.takes_noise_fields`), so that whether an optional
        package imports never changes what is measured. [default: False]

    Raises
    ------
    PluginError
        The name is not registered, or the engine cannot run here.
    """
    if name == "auto":
        ranked = sorted(
            engines.values(),
            key=lambda cls: (paired and not cls.takes_noise_fields, -int(cls.priority), cls.name),
        )
        for cls in ranked:
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
