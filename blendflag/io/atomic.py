"""Atomic writes: an output appears complete or not at all, never half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from blendflag.errors import CatalogueError


@contextlib.contextmanager
def atomic_output(out):
    """Yield a temporary path beside ``out``; rename it to ``out`` on success.

    On any exception the temporary file is removed and ``out`` is untouched.
    """
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise CatalogueError(f"output directory does not exist: {parent}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise CatalogueError(f"cannot write to {parent}: {exc.strerror}") from None
    os.close(fd)
    os.unlink(tmp)
    try:
        yield Path(tmp)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
