"""The ``blendflag-shear`` command: parser, dispatch, and one-line errors.

Every sub-command exits 0 on success and 2 on bad input, printing a single
``error: ...`` line on stderr. Set ``BLENDFLAG_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
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
        parser.add_argument(
            "--verbose",
            action="store_true",
            help="notes (PSF re-centred, normalised, ...) and TensorFlow's start-up lines",
        )
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


class _StderrHandler(logging.Handler):
    """``warning: ...`` / ``note: ...`` lines on the current ``sys.stderr``."""

    def emit(self, record):
        level = "note" if record.levelno < logging.WARNING else record.levelname.lower()
        print(f"{level}: {record.getMessage()}", file=sys.stderr)


def configure_logging(verbose: bool) -> None:
    """The library's log on stderr: warnings always, notes (INFO) with ``--verbose``."""
    for name in ("blendflag", "blendflag_plugins"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
            logger.removeHandler(handler)
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
        logger.propagate = False


#: A value argparse takes for an option: ``-0.02,0``, ``-1e-3``, ``-.5`` (a plain
#: ``-3`` or ``-0.5`` it already takes; these it would read as an unknown option).
_SIGNED_VALUE = re.compile(r"^-\.?\d[\d.eE+-]*(,[-+]?[\d.eE+-]*)*$")
_PLAIN_NEGATIVE = re.compile(r"^-\d+$|^-\d*\.\d+$")


def join_signed_values(argv: list[str]) -> list[str]:
    """``--shear -0.02,0`` as ``--shear=-0.02,0``: values that start with a minus.

    argparse reads a token that starts with ``-`` and is not a plain negative
    number as an option, so ``--true-shear -0.02,0`` would fail with "expected
    one argument". A long option followed by such a token (no option of any
    command looks like one) gets it joined with ``=``; nothing else changes,
    and what argparse already accepted parses as before.

    Parameters
    ----------
    argv : list of str

    Returns
    -------
    list of str
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token, value = argv[i], argv[i + 1] if i + 1 < len(argv) else ""
        option = token.startswith("--") and len(token) > 2 and "=" not in token
        if option and "--" not in out and _SIGNED_VALUE.match(value):
            if not _PLAIN_NEGATIVE.match(value):
                token, i = f"{token}={value}", i + 1
        out.append(token)
        i += 1
    return out


def main(argv=None) -> int:
    """Entry point of ``blendflag-shear``."""
    debug = os.environ.get("BLENDFLAG_DEBUG", "") not in ("", "0")
    try:
        from blendflag._runtime import quiet_imports
        from blendflag._runtime.provenance import record_start
        from blendflag.commands.validation import validate_args
        from blendflag.plugins import get_plugin_manager, unknown_blocked_names

        quiet_imports.install(verbose=debug)
        pm = get_plugin_manager()
        parser = build_parser(pm)
        args = parser.parse_args(join_signed_values(sys.argv[1:] if argv is None else list(argv)))
        # what produced a result file: its JSON's provenance records this, and
        # the commit as the run starts
        record_start()
        args.command_line = ["blendflag-shear", *(sys.argv[1:] if argv is None else argv)]
        verbose = debug or bool(getattr(args, "verbose", False))
        configure_logging(verbose)
        quiet_imports.install(verbose=verbose)
        for name in unknown_blocked_names(pm):
            logging.getLogger("blendflag").warning(
                "BLENDFLAG_DISABLE_PLUGINS names %r, which is no installed plugin "
                "('blendflag-shear plugins' lists them)",
                name,
            )
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 0
        validate_args(args)
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
