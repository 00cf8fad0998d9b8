"""Quiet start-up of TensorFlow: no absl, oneDNN or CPU-feature lines on stderr.

TensorFlow 2.21 writes its start-up notes (``oneDNN custom operations are
on...``, ``This TensorFlow binary is optimized...``, ``All log messages before
absl::InitializeLog()...``) from C++ while it is imported, before
``TF_CPP_MIN_LOG_LEVEL`` takes effect, so the variable alone does not silence
them. :func:`install` adds an import hook: the first import of ``tensorflow``
or ``keras`` (by blendflag or any plugin) runs with file descriptor 2 sent to a
temporary file; afterwards only real problems (fatal lines, and anything not
in the start-up notes' formats) are written back to stderr. Nothing changes
what TensorFlow computes (oneDNN stays on). ``--verbose`` or
``BLENDFLAG_DEBUG=1`` leaves stderr alone.

``blendflag-shear`` installs the hook itself; a script calls
:func:`install_for_script` at its start.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

#: Top-level packages whose first import is quietened.
QUIET_PACKAGES = ("tensorflow", "keras", "tf_keras")

#: Start-up lines that are dropped: absl's I/W/E-level lines (``I0000 00:00:...``), the
#: pre-InitializeLog banner and the CPU-feature note's continuation.
_CHATTER = re.compile(
    r"^([IWE]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions:|oneDNN custom operations are on"
    r"|This TensorFlow binary is optimized)"
)


def is_chatter(line: str) -> bool:
    """True for a TensorFlow/absl start-up note (dropped), False for anything else."""
    return bool(_CHATTER.match(line.strip())) or not line.strip()


@contextlib.contextmanager
def native_stderr_filtered():
    """Send file descriptor 2 to a temporary file; replay its non-chatter lines after."""
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all
            yield
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines() if not is_chatter(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader's ``exec_module`` with native stderr filtered."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with native_stderr_filtered():
            self._loader.exec_module(module)
        _quiet_python_logging()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class QuietImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the first import of each of :data:`QUIET_PACKAGES`."""

    def __init__(self):
        self._busy = False

    def find_spec(self, fullname, path=None, target=None):
        if self._busy or fullname not in QUIET_PACKAGES or fullname in sys.modules:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


def _quiet_python_logging() -> None:
    """absl's Python logger at ERROR (TensorFlow's Python-side notes)."""
    with contextlib.suppress(Exception):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)


def install(verbose: bool = False) -> None:
    """Quieten TensorFlow's start-up from now on (no-op with ``verbose`` or once imported).

    Parameters
    ----------
    verbose : bool
        Keep every line (``--verbose``, ``BLENDFLAG_DEBUG=1``). [default: False]
    """
    if verbose:  # and undo an earlier install (``main`` installs before parsing)
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, QuietImportFinder)]
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if any(isinstance(f, QuietImportFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, QuietImportFinder())


def debug_requested() -> bool:
    """True when ``BLENDFLAG_DEBUG`` is set to anything but empty or ``0``."""
    return os.environ.get("BLENDFLAG_DEBUG", "") not in ("", "0")


def install_for_script() -> None:
    """:func:`install` as ``blendflag-shear`` starts: quiet unless ``BLENDFLAG_DEBUG`` is set.

    For scripts, which have no ``--verbose``: call it at module level, so that
    worker processes started with ``spawn`` (which import the script's module
    again) are quiet too.
    """
    install(verbose=debug_requested())
    from blendflag._runtime.provenance import record_start

    record_start()  # the commit the script started from
