"""Exceptions raised for bad input; the CLI prints them as one ``error:`` line."""


class BlendflagError(ValueError):
    """Bad input to a command: a missing file, a wrong column, an unknown plugin.

    Parameters
    ----------
    message : str
        One line naming the problem and, where possible, the fix.
    """


def plain_reason(exc: BaseException) -> str:
    """The first line of a library's message, without its advice on its own options.

    ``No SIMPLE card found, ... If this is really a FITS file, try with
    ignore_missing_simple=True`` becomes ``No SIMPLE card found, ...``: the
    advice names options no blendflag command has.
    """
    import re

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.split(r"\s*(?:If this is really|try with \w+=|when \w+=\w+)", text)[0]
    return text.rstrip(" .,;:") or type(exc).__name__


class ConfigError(BlendflagError):
    """A configuration file or value is invalid."""


class CatalogueError(BlendflagError):
    """A catalogue or image cannot be read or does not fit the request."""


class PluginError(BlendflagError):
    """A plugin is unknown, misspelt or misbehaves."""
