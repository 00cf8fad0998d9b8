"""Progress bars for long work (library-level: commands and library code share it)."""

from __future__ import annotations

import sys


def progress(iterable=None, total=None, desc=None, quiet=False, unit="it"):
    """A tqdm progress bar, off when stderr is not a terminal or ``quiet``."""
    from tqdm.auto import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=disable, unit=unit, leave=False)
