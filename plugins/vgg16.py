"""The VGG16 blend flagger: preprocessing, model, weights file, inference.

Input (see :func:`blendflag_plugins.netcore.preprocess`)
    The central ``input_size`` x ``input_size`` pixels of each stamp (the
    weights file's ``input_size``: 32 for the shipped file, 48 for its first
    four training stages; 51x51 stamps in the presets), divided by the stamp's
    noise sigma (1.4826 x MAD of the 3-pixel border of the full stamp),
    compressed with ``arcsinh(x) / 3`` and repeated into 3 channels; for
    weights trained with ``reference_channel`` the middle channel is the stamp
    divided by the reference noise sigma instead (option ``reference_noise``,
    ADU: the depth of the blend definition; None uses each stamp's own noise).
    Every side from 32 to 63 px leaves VGG16's five poolings a 1x1x512 map, so
    the same head (and the same weight arrays) fit all of them; the cost grows
    with the area: in bfloat16 on 2 cores with AVX512-BF16, 48 px runs at about
    350 stamps/s and 32 px at about 790 (the model alone, batches of 256). The
    central 32 px hold 99% of blend companions.

Model (see :func:`build_model`)
    ``keras.applications.VGG16`` (13 convolutions in 5 blocks, no top) and the
    original study's head: Flatten, Dense 256 relu, Dropout 0.5, Dense 1024 relu,
    Dense 1 sigmoid (float32 output).

Weights file
    A ``.npz`` of float16 arrays and JSON metadata (see
    :mod:`blendflag_plugins.netcore`). Keras' own files also hold optimizer
    state (3x the size), which is not shipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from blendflag import hookimpl
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
):
    """VGG16 convolutions and the study's classification head.

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

    Returns
    -------
    keras.Model
        Input ``(input_size, input_size, 3)``, output the blend probability.
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
        return keras.Model(base.input, out, name="vgg16_blend")


def save_weights(model, path, metadata: dict) -> Path:
    """Write a VGG16 weights file (float16 arrays + metadata), atomically."""
    return netcore.save_weights(model, path, metadata, FORMAT)


def read_weights(path) -> tuple[list[np.ndarray], dict]:
    """Read and validate a VGG16 weights file (see :func:`netcore.read_weights`)."""
    return netcore.read_weights(path, FORMAT, "VGG16")


def _build_from_metadata(meta: dict, precision: str):
    return build_model(int(meta.get("input_size", INPUT_SIZE)), precision=precision)


def load_model(path=None, precision: str = "auto"):
    """(model, compiled predict, metadata), built once per process and weights file."""
    return netcore.load_cached(
        Path(path) if path else DEFAULT_WEIGHTS, FORMAT, "VGG16", _build_from_metadata, precision
    )


_compiled_predict = netcore.compiled_predict


def predict_proba(
    stamps: np.ndarray, path=None, precision: str = "auto", batch_size: int = 256
) -> np.ndarray:
    """Blend probability of each stamp (float32 in [0, 1]) with the given weights."""
    options = {"precision": precision, "batch_size": batch_size}
    if path:
        options["weights"] = str(path)
    return VGG16Flagger(options).predict_proba(stamps)


class VGG16Flagger(NetworkFlagger):
    """Blend flag from the VGG16 classifier.

    Options: ``weights``, ``threshold``, ``precision``, ``batch_size``,
    ``reference_noise`` (see :class:`blendflag_plugins.netcore.NetworkFlagger`);
    the default weights are the shipped ``weights/vgg16_blend.npz``.
    """

    name = "vgg16"
    FORMAT = FORMAT
    DEFAULT_WEIGHTS = DEFAULT_WEIGHTS
    CHANNELS = 3
    CARD = "VGG"
    trainable = True
    training_config = "configs/train_vgg16_onerun.yaml"

    @classmethod
    def build(cls, metadata, precision):
        return _build_from_metadata(metadata, precision)

    @classmethod
    def train(cls, config_path, out, **kwargs):
        """Train from a YAML config; see :func:`blendflag_plugins.vgg16_train.train_from_config`."""
        from blendflag_plugins.vgg16_train import train_from_config

        return train_from_config(config_path, out, **kwargs)


@hookimpl
def blendflag_register_flaggers():
    return [VGG16Flagger]
