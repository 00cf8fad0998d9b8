"""Metacalibration of many stamps with one PSF as five matrix products.

For a fixed PSF, stamp shape and shear step, every metacal operation
(interpolate, deconvolve, shear, reconvolve, draw) is linear in the stamp's
pixels, and with a fixed Fourier grid (``MetacalOperators.images(...,
fixed_grid=True)``) GalSim's rendering does not depend on the image either.
So each version is a matrix ``M_v`` of ``(ny nx) x (ny nx)``: its column j is
the version drawn from a stamp that is 1 at pixel j and 0 elsewhere.
Building the five matrices costs one metacal rendering per pixel (2,601 for a
51 x 51 stamp, about 35 s on one core); after that every stamp, and every
noise-correction field, costs five matrix-vector products (1.8 ms per stamp
on one core, in batches of 2,800) instead of five FFT renderings (about 15 ms). The
results equal the direct rendering to rounding (relative 1e-15,
``tests/test_metacal_matrix.py``).

Operators are stored in a cache directory (``$BLENDFLAG_CACHE_DIR``, else
``$XDG_CACHE_HOME/blendflag`` or ``~/.cache/blendflag``; at most
:data:`KEEP_OPERATORS` files of ``5 P^2`` float64, 270 MB for 51 x 51
stamps; ``BLENDFLAG_CACHE_DIR=none`` stores nothing) and memory-mapped, so
the worker processes of a run share one copy and a later run with the same
PSF builds nothing. :func:`store_operator` builds one with its columns split
over a run's workers (the chunk driver calls it through the engine's
``before_measuring`` before the stamps go out); :func:`linear_metacal` finds
it in this process, on disk, or builds it here. :func:`worth_building` says
when building pays: when the run renders at least as many stamps (images and
noise fields) as a stamp has pixels.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import numpy as np

from blendflag.errors import BlendflagError
from blendflag.shear.results import METACAL_VERSIONS

#: Largest stamp (pixels) measured through matrices: five matrices of
#: (3,600)^2 float64 are 518 MB.
MAX_PIXELS = 3600

#: Operator files kept in the cache directory (the oldest go first).
KEEP_OPERATORS = 4

_CACHE: dict = {}


class LinearMetacal:
    """The five metacal versions of one PSF on one stamp shape, as matrices.

    Parameters
    ----------
    matrices : dict
        ``{version: (P, P) float64}`` with ``P = ny * nx``; ``images = M @ pixels``.
    shape : (int, int)
        ``(ny, nx)`` of the stamps.
    """

    def __init__(self, matrices: dict, shape: tuple[int, int]):
        self.matrices = matrices
        self.shape = tuple(shape)

    @classmethod
    def build(cls, ops, shape) -> LinearMetacal:
        """Render one unit-pixel stamp per pixel with ``ops`` (fixed grid) and stack the columns.

        Parameters
        ----------
        ops : blendflag.shear.metacal_ops.MetacalOperators
        shape : (int, int)
            ``(ny, nx)`` of the stamps.
        """
        ny, nx = shape
        stack = _render_columns(ops, shape, 0, ny * nx)
        matrices = dict(zip(METACAL_VERSIONS, stack, strict=True))
        return cls(matrices, (ny, nx))

    def images(self, stamps: np.ndarray) -> dict[str, np.ndarray]:
        """The five versions of ``(n, ny, nx)`` stamps: ``{version: (n, ny, nx) float64}``."""
        stamps = np.asarray(stamps, dtype=np.float64)
        n = len(stamps)
        flat = stamps.reshape(n, -1)
        return {v: (flat @ m.T).reshape(n, *self.shape) for v, m in self.matrices.items()}

    def add_noise_correction(self, images: dict, noise: np.ndarray) -> None:
        """Add the 90-degree rotated, processed ``(n, ny, nx)`` noise fields to ``images``.

        As :meth:`MetacalOperators.add_noise_correction`, for every stamp at once.
        """
        rotated = np.rot90(np.asarray(noise, dtype=np.float64), 1, axes=(1, 2))
        processed = self.images(np.ascontiguousarray(rotated))
        for version in METACAL_VERSIONS:
            images[version] += np.rot90(processed[version], -1, axes=(1, 2))


def worth_building(n_renderings: int, shape) -> bool:
    """Whether matrices pay for ``n_renderings`` stamps of ``shape`` (images plus noise fields).

    Building costs one rendering per pixel; stamps larger than
    :data:`MAX_PIXELS` are not worth the memory.
    """
    size = int(shape[0]) * int(shape[1])
    return size <= MAX_PIXELS and n_renderings >= size


def operator_key(psf: np.ndarray, pixel_scale: float, step: float, kernel: str, shape) -> str:
    """What identifies one operator: the PSF's pixels, the scale, step, kernel and stamp shape."""
    digest = hashlib.sha1(np.ascontiguousarray(psf, dtype=np.float64).tobytes())
    digest.update(repr((float(pixel_scale), float(step), kernel, tuple(shape))).encode())
    return digest.hexdigest()


def cache_dir() -> Path | None:
    """Where operators are stored (see the module docstring); None: nowhere."""
    env = os.environ.get("BLENDFLAG_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "none", "0") else Path(env)
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:  # no home directory: keep nothing on disk
        return None
    return Path(base) / "blendflag"


def _operator_path(key: str) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / f"metacal-{key}.npy"


def _load(key: str, shape) -> LinearMetacal | None:
    path = _operator_path(key)
    if path is None or not path.is_file():
        return None
    try:
        stack = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    size = int(shape[0]) * int(shape[1])
    if stack.shape != (len(METACAL_VERSIONS), size, size):
        return None
    return LinearMetacal(dict(zip(METACAL_VERSIONS, stack, strict=True)), shape)


def _save(key: str, stack: np.ndarray) -> None:
    """Write ``stack`` atomically to the cache, keeping the newest :data:`KEEP_OPERATORS`."""
    from blendflag.io.atomic import atomic_output

    path = _operator_path(key)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, stack)
        old = sorted(path.parent.glob("metacal-*.npy"), key=lambda p: p.stat().st_mtime)
        for stale in old[:-KEEP_OPERATORS]:
            stale.unlink(missing_ok=True)
    except (OSError, BlendflagError):  # a read-only or full cache: each process builds
        pass


def on_disk(key: str) -> bool:
    """Whether the operator of ``key`` is in the cache directory."""
    path = _operator_path(key)
    return path is not None and path.is_file()


def _render_columns(ops, shape, start: int, stop: int) -> np.ndarray:
    """Columns ``start:stop`` of the five matrices of ``ops``: ``(5, P, stop - start)``."""
    ny, nx = shape
    out = np.empty((len(METACAL_VERSIONS), ny * nx, stop - start))
    unit = np.zeros(ny * nx)
    for j in range(start, stop):
        unit[j] = 1.0
        images = ops.images(unit.reshape(ny, nx), fixed_grid=True)
        unit[j] = 0.0
        for k, version in enumerate(METACAL_VERSIONS):
            out[k, :, j - start] = images[version].ravel()
    return out


def build_columns(make_ops, shape, start, stop) -> np.ndarray:
    """Columns ``start:stop`` of the five matrices of ``make_ops()`` (a picklable task)."""
    return _render_columns(make_ops(), shape, start, stop)


def store_operator(make_ops, key: str, shape, run_tasks, parts: int) -> bool:
    """Build the operator with its columns in ``parts`` tasks and store it; False if not stored.

    ``make_ops()`` (picklable, e.g. a ``functools.partial`` of
    :meth:`MetacalOperators.from_psf`) gives the operators, ``key`` names
    them (:func:`operator_key`). ``run_tasks(func, tasks)`` runs the tasks
    (e.g. on the run's worker processes) and returns their results in order.
    Nothing is built when the cache directory is switched off or the
    operator is there already.
    """
    if _operator_path(key) is None:
        return False
    if on_disk(key):
        return True
    size = int(shape[0]) * int(shape[1])
    edges = np.linspace(0, size, max(1, int(parts)) + 1).astype(int)
    tasks = [
        (make_ops, tuple(shape), int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a
    ]
    _save(key, np.concatenate(run_tasks(build_columns, tasks), axis=2))
    return on_disk(key)


def linear_metacal(ops, shape, key: str) -> LinearMetacal:
    """The operator of ``key`` (:func:`operator_key`): this process's, the cache's, or built here.

    One operator is kept per process (the next PSF replaces it); one built
    here is stored in the cache for the next process.
    """
    if key not in _CACHE:
        _CACHE.clear()
        linear = _load(key, shape)
        if linear is None:
            linear = LinearMetacal.build(ops, shape)
            _save(key, np.stack([linear.matrices[v] for v in METACAL_VERSIONS]))
        _CACHE[key] = linear
    return _CACHE[key]


def cached(key: str) -> bool:
    """Whether the operator of ``key`` is built already (in this process or on disk)."""
    return key in _CACHE or on_disk(key)


def when_worth(ops, key: str, shape, n_renderings: int) -> LinearMetacal | None:
    """The operator of ``key`` if built or worth building for ``n_renderings``; else None."""
    if cached(key) or worth_building(n_renderings, shape):
        return linear_metacal(ops, shape, key)
    return None


def matrix_images(ops, key, data, flags, rng, noise_fields, fixnoise, expected=0):
    """All stamps' metacal images at once through matrices, or None when they do not pay.

    The same images as the per-stamp rendering of ``ops`` (to rounding),
    with the noise-correction fields drawn from ``rng`` in the same order
    (or taken from ``noise_fields``). Used when this process renders at
    least as many stamps (this call's, or ``expected`` for the whole run) as
    a stamp has pixels, or when the operator of ``key`` is built already.

    Parameters
    ----------
    ops : MetacalOperators
    key : str
        :func:`operator_key` of ``ops``.
    data : blendflag.shear.engine.PreparedInput
    flags : numpy.ndarray
        Objects with flags are skipped.
    fixnoise : bool
        Add the noise correction to objects with noise sigma > 0.

    Returns
    -------
    dict or None
        ``{version: (n, ny, nx) float64}`` (zero for flagged objects).
    """
    n, ny, nx = data.stamps.shape
    good = np.flatnonzero(flags == 0)
    noisy = good[data.noise_sigma[good] > 0] if fixnoise else good[:0]
    renderings = max(len(good) + len(noisy), expected * (2 if len(noisy) else 1))
    linear = when_worth(ops, key, (ny, nx), renderings) if len(good) else None
    if linear is None:
        return None
    batch = {v: np.zeros((n, ny, nx)) for v in METACAL_VERSIONS}
    for version, arr in linear.images(data.stamps[good]).items():
        batch[version][good] = arr
    if len(noisy):
        fields = np.empty((len(noisy), ny, nx))
        for k, i in enumerate(noisy):  # the per-stamp path's draws, in its order
            fields[k] = (
                noise_fields[i]
                if noise_fields is not None
                else rng.normal(0.0, data.noise_sigma[i], size=(ny, nx))
            )
        part = {v: batch[v][noisy] for v in METACAL_VERSIONS}
        linear.add_noise_correction(part, fields)
        for version in METACAL_VERSIONS:
            batch[version][noisy] = part[version]
    return batch
