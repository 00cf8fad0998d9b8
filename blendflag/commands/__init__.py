"""Built-in sub-commands of ``blendflag-shear``, one module each.

This package is itself a plugin, registered under the ``blendflag`` entry-point
group as ``commands`` like a third party's: its
:func:`blendflag_register_commands` adds the built-in commands.
"""

from blendflag import hookimpl

#: Built-in command modules, in the order ``--help`` lists them.
MODULES = (
    "plugins_cmd",
    "detect",
    "flag",
    "simulate",
    "train",
    "evaluate",
    "compare",
    "bench",
)


@hookimpl(tryfirst=True)
def blendflag_register_commands(cli):
    """Add the built-in commands (before any other plugin's)."""
    import importlib

    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}").register(cli)
