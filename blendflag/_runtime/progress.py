"""Progress of long work: a bar on a terminal, a line every ~10 s in a batch log.

On a terminal :func:`progress` is a tqdm bar. When stderr is a file or a pipe
(a batch job's log) a bar would be one endless line of carriage returns, so
it is a :class:`LogProgress` instead: a line such as
``shear: 1200/6000 obj (20%), 45.1 obj/s, 27 s`` at most every
:data:`LOG_INTERVAL_S` seconds, and one line when the stage ends. Both accept
the same calls (iterate, ``update(n)``, ``close()``, ``with``).
"""

from __future__ import annotations

import sys
import time

#: Least time (seconds) between two progress lines off a terminal.
LOG_INTERVAL_S = 10.0


class LogProgress:
    """tqdm's interface, writing plain lines to stderr (see the module docstring).

    Parameters
    ----------
    iterable : iterable or None
    total : int or None
        Items expected (``len(iterable)`` when it has one).
    desc : str or None
        The stage's name, starting each line.
    unit : str
        What an item is ("obj", "stamp", "tile"). [default: "it"]
    interval : float
        Least seconds between lines. [default: :data:`LOG_INTERVAL_S`]
    """

    def __init__(self, iterable=None, total=None, desc=None, unit="it", interval=None):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc or "progress", unit
        self.interval = LOG_INTERVAL_S if interval is None else float(interval)
        self.n = 0
        self.printed = 0  # the count of the last line
        self.start = self.last = time.perf_counter()
        self.closed = False

    def _line(self, now: float) -> str:
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        return f"{self.desc}: {count} {self.unit}{share}, {rate:.1f} {self.unit}/s, {elapsed:.0f} s"

    def update(self, n=1) -> None:
        """Count ``n`` more items done; print a line when the interval has passed."""
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last, self.printed = now, self.n
            print(self._line(now), file=sys.stderr, flush=True)

    def close(self) -> None:
        """Print the stage's last line (once), unless nothing or nothing new was counted."""
        if self.closed:
            return
        self.closed = True
        if self.n and self.n != self.printed:
            print(self._line(time.perf_counter()), file=sys.stderr, flush=True)

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress(iterable=None, total=None, desc=None, quiet=False, unit="it"):
    """A progress display: tqdm on a terminal, :class:`LogProgress` lines off one.

    Parameters
    ----------
    iterable : iterable or None
    total : int or None
    desc : str or None
        The stage's name.
    quiet : bool
        Show nothing (a disabled tqdm). [default: False]
    unit : str
        What an item is. [default: "it"]
    """
    from tqdm.auto import tqdm

    if quiet:
        return tqdm(iterable, total=total, disable=True)
    if not sys.stderr.isatty():
        return LogProgress(iterable, total=total, desc=desc, unit=unit)
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False)
