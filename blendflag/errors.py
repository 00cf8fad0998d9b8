"""Exceptions raised for bad input; the CLI prints them as one ``error:`` line."""


class BlendflagError(ValueError):
    """Bad input to a command: a missing file, a wrong column, an unknown plugin.

    Parameters
    ----------
    message : str
        One line naming the problem and, where possible, the fix.
    """


class ConfigError(BlendflagError):
    """A configuration file or value is invalid."""


class CatalogueError(BlendflagError):
    """A catalogue or image cannot be read or does not fit the request."""


class PluginError(BlendflagError):
    """A plugin is unknown, misspelt or misbehaves."""
