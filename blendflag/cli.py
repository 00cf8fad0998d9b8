"""The ``blendflag-shear`` command: parser, dispatch, and one-line errors.

Every sub-command exits 0 on success and 2 on bad input, printing a single
``error: ...`` line on stderr. Set ``BLENDFLAG_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys

from blendflag import __version__
from blendflag.errors import BlendflagError


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line error format."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class CommandRegistry:
    """What ``blendflag_register_commands(cli)`` receives.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
    pm : pluggy.PluginManager or None
        The plugin manager, for commands that offer registered names (flaggers,
        detectors) as choices.
    """

    def __init__(self, subparsers, pm=None):
        self._subparsers = subparsers
        self.pm = pm
        self.names: list[str] = []

    def add_command(self, name: str, help: str, func, description: str | None = None):
        """Add a sub-command.

        Parameters
        ----------
        name : str
            The sub-command, e.g. ``"my-report"``.
        help : str
            One line for ``blendflag-shear --help``.
        func : callable
            ``func(args, pm) -> int`` runs it and returns the exit code.

        Returns
        -------
        argparse.ArgumentParser
            Add the command's options to it. ``--config`` is already there.
        """
        if name in self.names:
            raise BlendflagError(f"two plugins add the command {name!r}")
        parser = self._subparsers.add_parser(
            name,
            help=help,
            description=description or help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--config", metavar="YAML", help="pipeline config file (YAML)")
        parser.set_defaults(func=func)
        self.names.append(name)
        return parser


def build_parser(pm) -> argparse.ArgumentParser:
    """The full parser: every command registered through ``blendflag_register_commands``.

    The built-in commands are a plugin like any other (``blendflag.commands``);
    its implementation runs first, so ``--help`` lists them before a third
    party's.
    """
    parser = _Parser(
        prog="blendflag-shear",
        description="Find blended galaxies and measure what removing them does to the shear.",
    )
    parser.add_argument("--version", action="version", version=f"blendflag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    registry = CommandRegistry(sub, pm)
    pm.hook.blendflag_register_commands(cli=registry)
    return parser


def main(argv=None) -> int:
    """Entry point of ``blendflag-shear``."""
    debug = os.environ.get("BLENDFLAG_DEBUG", "") not in ("", "0")
    # TensorFlow's C++ start-up chatter is not for users (set it to 0 to see it)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from blendflag.plugins import get_plugin_manager

        pm = get_plugin_manager()
        parser = build_parser(pm)
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 0
        return int(args.func(args, pm) or 0)
    except BlendflagError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            raise
        line = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"error: internal error: {type(exc).__name__}: {line} "
            "(set BLENDFLAG_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
