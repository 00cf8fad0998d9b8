"""What produced a result file: blendflag's version and commit, the command, the software, the CPU.

:func:`provenance` is cheap (no heavy import: package versions come from their
installed metadata, the commit from ``git``), so every command and script that
writes a JSON result adds it under ``"provenance"``::

    from blendflag._runtime.provenance import provenance

    result["provenance"] = provenance()
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

#: Seconds each ``git`` call may take before the commit is given up as unknown.
GIT_TIMEOUT = 5.0


def provenance(argv=None) -> dict:
    """The provenance block of a result file.

    Parameters
    ----------
    argv : list of str, optional
        The command line, program first (as ``sys.argv``). [default: ``sys.argv``]

    Returns
    -------
    dict
        JSON-serialisable, with the keys

        - ``blendflag_version`` (str): the installed package's version;
        - ``commit`` (str or None): the 40-hex commit of the git checkout blendflag
          is imported from, None when it is not imported from one (an installed
          wheel) or ``git`` is unavailable;
        - ``git_describe`` (str or None): ``git describe --tags --always --dirty``
          of that checkout;
        - ``dirty`` (bool or None): whether tracked files differ from the commit;
        - ``command`` (str): the command line, the program as its basename, quoted
          for a POSIX shell;
        - ``utc_time`` (str): ISO 8601 UTC to the second, e.g. ``2025-01-31T12:00:00Z``;
        - ``python`` (str): the interpreter's version;
        - ``packages`` (dict): version (str) of numpy, galsim, tensorflow (also
          as ``tensorflow-cpu``), keras, astropy, sep, ngmix and metadetect, None
          for those not installed;
        - ``cpu`` (str or None): the CPU model;
        - ``cores`` (int or None): ``os.cpu_count()``.
    """
    from blendflag._runtime.machine import cpu_description

    commit, describe = _git_state()
    return {
        "blendflag_version": blendflag_version(),
        "commit": commit,
        "git_describe": describe,
        "dirty": None if describe is None else describe.endswith("-dirty"),
        "command": command_line(sys.argv if argv is None else argv),
        "utc_time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "packages": package_versions(),
        "cpu": cpu_description()["model"],
        "cores": os.cpu_count(),
    }


def record_start() -> None:
    """Read the checkout's commit now: a long run's provenance then names the code it started
    from, not a commit made while it ran (the state is kept for the process)."""
    _git_state()


def blendflag_version() -> str:
    """The installed distribution's version (``unknown`` for a source tree never installed)."""
    try:
        return metadata.version("blendflag")
    except metadata.PackageNotFoundError:
        return "unknown"


def command_line(argv) -> str:
    """``argv`` joined for a POSIX shell, its program (first item) reduced to the basename."""
    words = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]
    if words:
        words[0] = os.path.basename(words[0]) or words[0]
    return shlex.join(words)


def package_versions() -> dict:
    """``{distribution: version or None}`` of everything blendflag requires, extras included.

    The names come from blendflag's own metadata (``pyproject.toml``'s
    dependencies and optional dependencies, such as the reference packages),
    so the list follows the project; versions are read from metadata, and
    nothing is imported. None: not installed.
    """
    try:
        requirements = metadata.requires("blendflag") or []
    except metadata.PackageNotFoundError:
        requirements = []
    out = {}
    for requirement in requirements:
        name = re.split(r"[\s;<>=!~\[(]", requirement.strip(), maxsplit=1)[0]
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return dict(sorted(out.items()))


def _git(directory: Path, *args: str) -> str | None:
    """``git -C directory args`` stdout, stripped; None on any failure or after the timeout."""
    try:
        run = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
            # describe --dirty refreshes the index: never take its lock from under
            # someone's git command in the same tree
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    out = run.stdout.strip()
    return out if run.returncode == 0 and out else None


@functools.cache
def _git_state() -> tuple[str | None, str | None]:
    """(commit, describe) of the git checkout blendflag is imported from, else (None, None).

    A package installed in a directory that merely lies inside some other
    repository (a virtualenv in a project's tree) is not from a checkout: the
    package's ``__init__.py`` must be tracked there.
    """
    package = Path(__file__).resolve().parents[1]  # blendflag/
    if _git(package, "ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return None, None
    commit = _git(package, "rev-parse", "--verify", "HEAD")
    if commit is None:
        return None, None
    return commit, _git(package, "describe", "--tags", "--always", "--dirty")
