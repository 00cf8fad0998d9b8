"""The VGG16 network: model, weights file, loading and prediction (no flagger here).

The flagger plugin (:mod:`blendflag_plugins.vgg16`) and its trainer
(:mod:`blendflag_plugins.vgg16_train`) both build on this module, so neither
imports the other for it. See :mod:`blendflag_plugins.vgg16` for the input,
model and weights-file formats.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from blendflag.errors import BlendflagError
from blendflag_plugins import netcore
from blendflag_plugins.netcore import (  # noqa: F401 - re-exported for users and the trainer
    INPUT_SIZE,
    NetworkFlagger,
    cpu_supports_bf16,
    crop_center,
    file_sha256,
    preprocess,
    resolve_precision,
)

FORMAT = "blendflag-vgg16-weights"
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "vgg16_blend.npz"
#: Keras' cache file of the ImageNet VGG16 convolution weights (no top).
IMAGENET_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


def find_imagenet_weights(path=None) -> Path | None:
    """The ImageNet VGG16 (no-top) weights, from ``path`` or Keras' cache; never downloads."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise BlendflagError(f"ImageNet weights not found: {p}")
        return p
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    candidate = keras_home / "models" / IMAGENET_FILE
    return candidate if candidate.is_file() else None


def build_model(
    input_size: int = INPUT_SIZE,
    precision: str = "float32",
    imagenet_weights=None,
    dropout: float = 0.5,
    count_classes: int = 0,
):
    """VGG16 convolutions and the study's classification head, and optionally a count head.

    Parameters
    ----------
    input_size : int
        Input side in pixels (>= 32). [default: 48]
    precision : str
        ``"float32"``, ``"bfloat16"`` (mixed) or ``"auto"``. [default: "float32"]
    imagenet_weights : path-like or None
        An ImageNet VGG16 no-top weights file (``.h5``) to initialise the
        convolutions; None starts from random weights.
    dropout : float
        Dropout rate after the first dense layer. [default: 0.5]
    count_classes : int
        0: one output. Else a second output from the same 1024-unit layer, a
        softmax over that many classes of the number of sources whose
        footprints overlap the central object's (1, 2, 3, 4+ for 4). [default: 0]

    Returns
    -------
    keras.Model
        Input ``(input_size, input_size, 3)``, output the blend probability
        (``p_blend``), and with ``count_classes`` the outputs
        ``[p_blend, n_sources]``.
    """
    import keras

    with netcore.policy(precision):
        base = keras.applications.VGG16(
            include_top=False, weights=None, input_shape=(input_size, input_size, 3)
        )
        if imagenet_weights is not None:
            base.load_weights(str(imagenet_weights))
        x = keras.layers.Flatten(name="flatten")(base.output)
        x = keras.layers.Dense(256, activation="relu", name="fc256")(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
        x = keras.layers.Dense(1024, activation="relu", name="fc1024")(x)
        out = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="p_blend")(x)
        if count_classes:
            counts = keras.layers.Dense(
                int(count_classes), activation="softmax", dtype="float32", name="n_sources"
            )(x)
            return keras.Model(base.input, [out, counts], name="vgg16_blend_count")
        return keras.Model(base.input, out, name="vgg16_blend")


def save_weights(model, path, metadata: dict) -> Path:
    """Write a VGG16 weights file (float16 arrays + metadata), atomically."""
    return netcore.save_weights(model, path, metadata, FORMAT)


def read_weights(path) -> tuple[list[np.ndarray], dict]:
    """Read and validate a VGG16 weights file (see :func:`netcore.read_weights`)."""
    return netcore.read_weights(path, FORMAT, "VGG16")


def _build_from_metadata(meta: dict, precision: str):
    return build_model(
        int(meta.get("input_size", INPUT_SIZE)),
        precision=precision,
        count_classes=int(meta.get("count_classes", 0)),
    )


def load_model(path=None, precision: str = "auto"):
    """(model, compiled predict, metadata), built once per process and weights file."""
    return netcore.load_cached(
        Path(path) if path else DEFAULT_WEIGHTS, FORMAT, "VGG16", _build_from_metadata, precision
    )


_compiled_predict = netcore.compiled_predict
