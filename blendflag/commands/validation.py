"""Every numeric and list argument of every command, checked once, in one place.

:func:`validate_args` runs in :func:`blendflag.cli.main` right after parsing,
before any command starts: a rule applies to an option of that name in any
command (``--bootstrap``, ``--pixel-scale``, ``--workers``, ...). A command's
own checks then only cover what depends on other options.
"""

from __future__ import annotations

import math
from numbers import Number

from blendflag.errors import BlendflagError


def _finite(v) -> bool:
    return isinstance(v, Number) and math.isfinite(v)


def _names(value) -> list[str]:
    return [n.strip() for n in str(value).split(",") if n.strip()]


#: ``{attribute: (test, what it must be)}``; a value of None (not given) is not checked.
RULES = {
    "bootstrap": (lambda v: v == 0 or v >= 10, "0 (no error bars) or at least 10 resamplings"),
    "pixel_scale": (lambda v: _finite(v) and v > 0, "a positive number of arcsec per pixel"),
    "workers": (lambda v: v >= 1, "at least 1"),
    "n": (lambda v: v >= 1, "a positive number of stamps"),
    "n_galaxies": (lambda v: v >= 1, "a positive number of galaxies"),
    "seed": (lambda v: v >= 0, ">= 0"),
    "size": (lambda v: v >= 1, "a positive number of pixels"),
    "margin": (lambda v: v >= 0, ">= 0 pixels"),
    "density": (lambda v: _finite(v) and v > 0, "a positive number of galaxies per arcmin^2"),
    "threshold": (lambda v: _finite(v) and 0 <= v <= 1, "a probability between 0 and 1"),
    "max_minutes": (lambda v: _finite(v) and v > 0, "a positive number of minutes"),
    "noise": (lambda v: not isinstance(v, Number) or (_finite(v) and v >= 0), ">= 0 ADU"),
}

#: Options that hold a comma-separated list of names: given, they must name one.
NAME_LISTS = ("flaggers", "methods", "only", "dataset")

#: Bytes of memory per pixel of a simulated image (image, weight, noise, truth maps; float64).
BYTES_PER_FIELD_PIXEL = 64
#: Bytes per stamp of ``simulate``/``evaluate`` (51x51 float32 stamps, a few copies).
BYTES_PER_STAMP = 51 * 51 * 4 * 4


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate_args(args) -> None:
    """Check every option of ``args`` that has a rule; raise on the first bad one.

    Raises
    ------
    BlendflagError
        One line naming the option, what it must be and what was given.
    """
    for name, (test, must) in RULES.items():
        value = getattr(args, name, None)
        if value is None or isinstance(value, bool):
            continue
        if not test(value):
            raise BlendflagError(f"{_option(name)} must be {must}, got {value!r}")
    for name in NAME_LISTS:
        value = getattr(args, name, None)
        if isinstance(value, str) and not _names(value):
            raise BlendflagError(f"{_option(name)} names nothing; give one or more names")
    check_memory(args)


def check_memory(args) -> None:
    """Refuse sizes whose arrays cannot fit in this machine's memory, before any work.

    Raises
    ------
    BlendflagError
        The estimate (bytes) exceeds the available memory.
    """
    from blendflag._runtime.machine import available_memory

    need = 0
    size = getattr(args, "size", None)
    if isinstance(size, int) and size > 0:
        halves = 2 if getattr(args, "rotated_pairs", False) else 1
        need = max(need, size * size * halves * BYTES_PER_FIELD_PIXEL)
    n = getattr(args, "n", None)
    if isinstance(n, int) and n > 0 and getattr(args, "data", None) is None:
        need = max(need, n * BYTES_PER_STAMP)
    free = available_memory()
    if need and free and need > free:
        raise BlendflagError(
            f"that run needs about {need / 2**30:.1f} GiB of memory and "
            f"{free / 2**30:.1f} GiB are available; choose a smaller size"
        )
