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

import numpy as np

from blendflag import hookimpl
from blendflag_plugins.netcore import (  # noqa: F401 - re-exported for users and the trainer
    INPUT_SIZE,
    NetworkFlagger,
    cpu_supports_bf16,
    crop_center,
    file_sha256,
    preprocess,
    resolve_precision,
)
from blendflag_plugins.vgg16_model import (  # noqa: F401 - re-exported
    DEFAULT_WEIGHTS,
    FORMAT,
    IMAGENET_FILE,
    _build_from_metadata,
    build_model,
    find_imagenet_weights,
    load_model,
    read_weights,
    save_weights,
)


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


def predict_proba(
    stamps: np.ndarray, path=None, precision: str = "auto", batch_size: int = 256
) -> np.ndarray:
    """Blend probability of each stamp (float32 in [0, 1]) with the given weights."""
    options = {"precision": precision, "batch_size": batch_size}
    if path:
        options["weights"] = str(path)
    return VGG16Flagger(options).predict_proba(stamps)


@hookimpl
def blendflag_register_flaggers():
    return [VGG16Flagger]
