"""Weights files of the network flaggers, and the per-process model cache.

A weights file is a ``.npz`` holding every weight array in float16 (``w000``,
``w001``, ...) and a JSON ``metadata`` string naming the format (one per
method), the input size, the decision threshold and how the model was trained.
Keras' own files also hold optimizer state (3x the size), which is not shipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import zipfile
from pathlib import Path

import numpy as np

from blendflag.errors import BlendflagError, plain_reason

#: Version of the weights-file layout written by :func:`save_weights`.
FORMAT_VERSION = 1


def file_sha256(path) -> str:
    """Hex SHA-256 of a file (computed once per file version and process)."""
    path = Path(path)
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model, path, metadata: dict, fmt: str) -> Path:
    """Write ``model``'s weights as float16 plus JSON metadata, atomically."""
    from blendflag.io.atomic import atomic_output

    arrays = {
        f"w{i:03d}": np.asarray(w, dtype=np.float16) for i, w in enumerate(model.get_weights())
    }
    meta = dict(
        metadata,
        format=fmt,
        format_version=FORMAT_VERSION,
        shapes=[list(a.shape) for a in arrays.values()],
    )
    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, metadata=np.array(json.dumps(meta)), **arrays)
    return path


def read_weights(path, fmt: str, what: str) -> tuple[list[np.ndarray], dict]:
    """Read and validate a weights file of format ``fmt``.

    Raises
    ------
    BlendflagError
        The file is missing, unreadable, or not a ``what`` weights file.
    """
    path = Path(path)
    if not path.is_file():
        raise BlendflagError(f"{what} weights file not found: {path}")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as data:
            meta = json.loads(str(data["metadata"]))
            names = sorted(k for k in data.files if k.startswith("w"))
            arrays = [np.asarray(data[k], dtype=np.float32) for k in names]
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        json.JSONDecodeError,
        zipfile.BadZipFile,
    ) as exc:
        reason = plain_reason(exc)
        raise BlendflagError(
            f"{path.name} is not a blendflag {what} weights file ({type(exc).__name__}: {reason})"
        ) from None
    if meta.get("format") != fmt:
        raise BlendflagError(
            f"{path.name} is not a blendflag {what} weights file (format {meta.get('format')!r})"
        )
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise BlendflagError(
            f"{path.name} needs a newer blendflag (weights format {meta['format_version']})"
        )
    if [list(a.shape) for a in arrays] != meta.get("shapes"):
        raise BlendflagError(f"{path.name} is damaged: array shapes differ from its metadata")
    return arrays, meta


def compiled_predict(model):
    """``model`` called in inference mode inside a ``tf.function``.

    A model with several outputs (a blend probability and count-class
    probabilities) gives them side by side, float32, along the last axis.
    """
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def predict(x):
        out = model(x, training=False)
        if isinstance(out, (list, tuple)):
            out = tf.concat([tf.cast(o, tf.float32) for o in out], axis=-1)
        return out

    return predict


_MODEL_CACHE: dict = {}
_MODEL_LOCK = threading.Lock()


def load_cached(path, fmt: str, what: str, build, precision: str):
    """(model, compiled predict, metadata) for a weights file, built once per process.

    Parameters
    ----------
    build : callable
        ``build(metadata, precision) -> keras.Model`` with the file's architecture.
    """
    path = Path(path)
    arrays, meta = read_weights(path, fmt, what)
    sha = file_sha256(path)
    key = (fmt, sha, precision)
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            model = build(meta, precision)
            expected = [tuple(w.shape) for w in model.get_weights()]
            if expected != [a.shape for a in arrays]:
                raise BlendflagError(
                    f"{path.name} does not fit the {what} model "
                    f"({len(arrays)} arrays for {len(expected)} weights)"
                )
            model.set_weights(arrays)
            _MODEL_CACHE[key] = (model, compiled_predict(model), dict(meta, sha256=sha))
        return _MODEL_CACHE[key]
