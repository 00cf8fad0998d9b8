"""Shared machinery of the network flaggers (VGG16, one-class, Siamese).

Input (see :func:`preprocess`)
    The central ``input_size`` pixels of each stamp (a weights file's own;
    48 by default, 32 for the shipped VGG16; 51x51 stamps in the presets), divided by
    the stamp's noise sigma (1.4826 x MAD of the 3-pixel border of the full
    stamp), compressed with ``arcsinh(x) / 3``. A weights file whose metadata
    lists ``input_channels: [noise, reference, noise]`` also takes the stamp
    divided by the *reference* noise sigma, the depth at which blends are
    defined (the flagger's ``reference_noise``).

Weights files
    See :mod:`blendflag_plugins.netweights` (float16 arrays and JSON metadata).

:class:`NetworkFlagger`
    Loads a weights file once per process (cached by checksum and precision),
    runs batches through a compiled ``tf.function`` and turns scores into
    probabilities and flags. Subclasses say how to build the model and how to
    turn its output into a blend probability.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blendflag._runtime.machine import cpu_supports_bf16
from blendflag.errors import BlendflagError
from blendflag.flagging.flaggers import Flagger, FlagResult
from blendflag.io.stamps import stamp_noise_sigma
from blendflag_plugins.netweights import (  # noqa: F401 - re-exported for the flaggers
    FORMAT_VERSION,
    compiled_predict,
    file_sha256,
    load_cached,
    read_weights,
    save_weights,
)

#: Default network input side in pixels (the central part of the 51-px stamps);
#: a weights file's own ``input_size`` wins (the shipped VGG16 uses 32).
INPUT_SIZE = 48
#: Pixels of the frame used for the noise estimate.
BORDER = 3


# ---------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------


def crop_center(stamps: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """The central ``size`` x ``size`` pixels (zero-padded when stamps are smaller)."""
    stamps = np.asarray(stamps, dtype=np.float32)
    _, ny, nx = stamps.shape
    if ny < size or nx < size:
        py, px = max(0, size - ny), max(0, size - nx)
        stamps = np.pad(stamps, ((0, 0), (py // 2, py - py // 2), (px // 2, px - px // 2)))
        _, ny, nx = stamps.shape
    y0 = (ny - size + 1) // 2
    x0 = (nx - size + 1) // 2
    return stamps[:, y0 : y0 + size, x0 : x0 + size]


def preprocess(
    stamps: np.ndarray, size: int = INPUT_SIZE, channels: int = 1, reference_sigma=None
) -> np.ndarray:
    """Network input for stamps: noise-normalised, arcsinh-compressed, cropped.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, S, S)`` background-subtracted stamps (ADU), S >= 7.
    size : int
        Output side in pixels. [default: 48]
    channels : int
        Planes along the last axis (3 for VGG16). [default: 1]
    reference_sigma : float, array_like or None
        Noise sigma (ADU) of the depth at which blends are defined, one value or
        one per stamp. None: every plane is ``arcsinh(x / sigma_stamp) / 3``.
        Given: the planes alternate between that and ``arcsinh(x /
        reference_sigma) / 3`` (``[noise, reference, noise]`` for 3 planes), so
        the network sees the stamp both in units of its own noise and at the
        fixed scale of the blend label.

    Returns
    -------
    numpy.ndarray
        ``(n, size, size, channels)`` float32.

    Raises
    ------
    BlendflagError
        Stamps are not a 3-d array or hold NaN; a reference sigma is not positive.
    """
    stamps = np.asarray(stamps, dtype=np.float32)
    if stamps.ndim != 3 or stamps.shape[1] < 2 * BORDER + 1:
        raise BlendflagError(f"stamps must be an (n, S, S) array with S >= 7, got {stamps.shape}")
    if not np.all(np.isfinite(stamps)):
        raise BlendflagError("stamps contain NaN or inf pixels")
    sigma = stamp_noise_sigma(stamps, BORDER)
    crop = crop_center(stamps, size)
    x = (np.arcsinh(crop / sigma[:, None, None]) / 3.0).astype(np.float32)[..., None]
    if reference_sigma is None:
        return np.repeat(x, channels, axis=-1) if channels > 1 else x
    ref = np.broadcast_to(np.asarray(reference_sigma, dtype=np.float32), (len(stamps),))
    if not np.all(np.isfinite(ref) & (ref > 0)):
        raise BlendflagError("reference noise sigma must be positive and finite")
    r = (np.arcsinh(crop / ref[:, None, None]) / 3.0).astype(np.float32)[..., None]
    planes = [x, r]
    return np.concatenate([planes[k % 2] for k in range(channels)], axis=-1)


#: ``input_channels`` of a weights file whose second plane is at the reference scale.
REFERENCE_LAYOUT = ["noise", "reference", "noise"]


def uses_reference(metadata: dict) -> bool:
    """Whether a weights file's network takes a plane at the reference scale."""
    return "reference" in metadata.get("input_channels", [])


# ---------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------


def resolve_precision(precision: str) -> str:
    """Map ``auto``/``bfloat16``/``float32`` to a Keras dtype policy name."""
    if precision == "auto":
        precision = "bfloat16" if cpu_supports_bf16() else "float32"
    if precision not in ("bfloat16", "float32"):
        raise BlendflagError(f"unknown precision {precision!r} (auto, bfloat16, float32)")
    return "mixed_bfloat16" if precision == "bfloat16" else "float32"


class policy:
    """Context manager: build Keras layers under a dtype policy, then restore it."""

    def __init__(self, precision: str):
        self.name = resolve_precision(precision)

    def __enter__(self):
        import keras

        self.previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(self.name)
        return self

    def __exit__(self, *exc):
        import keras

        keras.mixed_precision.set_global_policy(self.previous)
        return False


#: Numbers of dihedral views a network flagger can average (option ``views``).
VIEW_COUNTS = (1, 2, 4, 8)


def dihedral_view(x: np.ndarray, k: int) -> np.ndarray:
    """View ``k`` (0-7) of a batch of square images ``(n, S, S)`` or ``(n, S, S, C)``.

    Views 0-3 rotate by ``k`` x 90 degrees; 4-7 do the same after a left-right
    flip. View 0 is the batch itself. ``views: 2`` averages the identity and
    the 180-degree rotation, ``4`` the four rotations, ``8`` all eight
    symmetries of the square (the augmentations used in training).
    """
    if k >= 4:
        x = x[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(x, k % 4, axes=(1, 2)))


def view_indices(views: int) -> tuple[int, ...]:
    """The dihedral views averaged for ``views`` (1, 2, 4 or 8)."""
    return {1: (0,), 2: (0, 2), 4: (0, 1, 2, 3), 8: tuple(range(8))}[views]


def run_batches(predict, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``predict`` over ``x`` in batches of one traced shape; outputs concatenated."""
    n = len(x)
    outs = []
    for start in range(0, n, batch_size):
        xb = x[start : start + batch_size]
        if len(xb) < batch_size and n > batch_size:  # keep one traced shape
            pad = np.zeros((batch_size - len(xb), *xb.shape[1:]), dtype=np.float32)
            outs.append(np.asarray(predict(np.concatenate([xb, pad])))[: len(xb)])
        else:
            outs.append(np.asarray(predict(xb)))
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


# ---------------------------------------------------------------------------
# Flagger base
# ---------------------------------------------------------------------------


class NetworkFlagger(Flagger):
    """A flagger backed by a Keras model stored in a blendflag weights file.

    Subclasses set ``name``, ``FORMAT``, ``DEFAULT_WEIGHTS``, ``CHANNELS``,
    ``CARD`` (a 3-letter header-card stem) and implement :meth:`build` and
    :meth:`probability`.

    Options
    -------
    weights : str
        Weights file. [default: the shipped file of the method]
    threshold : float
        Probability at or above which a stamp is a blend. [default: the
        weights' threshold, chosen on validation data]
    precision : str
        ``auto``, ``bfloat16`` or ``float32``. [default: "auto"]
    batch_size : int
        Stamps per batch. [default: 256]
    reference_noise : float
        Noise sigma (ADU) at which blends are defined, for weights with a
        reference plane (``evaluate`` and ``compare`` take it from the dataset
        preset). [default: each stamp's own noise]
    views : int
        1, 2, 4 or 8: average the blend probability over that many of the
        square's symmetries of each stamp (see :func:`dihedral_view`; test-time
        augmentation), each turned *before* the central crop. A 51-px stamp's
        central 32 px are not centred on the stamp's centre pixel, so a
        turned stamp's crop is also shifted by a pixel: the views differ in
        position as well as orientation, and that is where the gain is
        (turning the crop itself, which training augmented with, gained
        nothing; measured on the shipped VGG16). Costs ``views`` times the
        inference time; the threshold stays the weights' (chosen on single
        views). [default: 1]
    count_rule : str
        How the count head's probabilities become ``n_sources`` (weights
        with a count head): ``gated``, 1 source where the blend flag is off
        and else the most probable of 2, 3 and 4+, so that ``NSRC > 1``
        exactly where ``BLEND`` is set and the count follows the threshold
        (chosen for the sky's share of blends); ``argmax``, the most probable
        class on its own, at the training set's share of blends (25%).
        [default: "gated"]
    """

    FORMAT = ""
    DEFAULT_WEIGHTS = Path()
    CHANNELS = 1
    CARD = "NN"
    needs_stamps = True
    cli_options = ("weights", "threshold", "views")
    #: The ``count_rule`` values (see the class docstring).
    COUNT_RULES = ("gated", "argmax")

    def __init__(self, options=None):
        super().__init__(options)
        self.weights = Path(self.options.get("weights") or self.DEFAULT_WEIGHTS)
        self.precision = str(self.options.get("precision", "auto"))
        resolve_precision(self.precision)
        self.batch_size = int(self.options.get("batch_size", 256))
        _, self.metadata = read_weights(self.weights, self.FORMAT, self.name)  # fail early
        threshold = self.options.get("threshold", self.metadata.get("threshold", 0.5))
        self.threshold = float(threshold)
        if not 0.0 < self.threshold < 1.0:
            raise BlendflagError(f"{self.name} threshold must be in (0, 1), got {self.threshold}")
        views = self.options.get("views", 1)
        if isinstance(views, bool) or views not in VIEW_COUNTS:
            raise BlendflagError(
                f"{self.name} views must be one of "
                f"{', '.join(map(str, VIEW_COUNTS))}, got {views!r}"
            )
        self.views = int(views)
        self.count_rule = str(self.options.get("count_rule", "gated"))
        if self.count_rule not in self.COUNT_RULES:
            raise BlendflagError(
                f"{self.name} count_rule must be one of {', '.join(self.COUNT_RULES)}, "
                f"got {self.count_rule!r}"
            )

    @classmethod
    def build(cls, metadata: dict, precision: str):
        """The Keras model described by a weights file's metadata."""
        raise NotImplementedError

    def probability(self, outputs: np.ndarray, metadata: dict) -> np.ndarray:
        """Blend probability from the model's outputs (default: the sigmoid output, column 0)."""
        return outputs.reshape(len(outputs), -1)[:, 0]

    def count_probabilities(self, outputs: np.ndarray, metadata: dict) -> np.ndarray | None:
        """Probabilities of 1, 2, 3, 4+ overlapping sources (the count head), or None."""
        k = int(metadata.get("count_classes", 0))
        return outputs.reshape(len(outputs), -1)[:, 1 : 1 + k] if k else None

    def predict_proba(self, stamps: np.ndarray, reference_sigma=None) -> np.ndarray:
        """Blend probability of each stamp, float32 in [0, 1].

        ``reference_sigma`` (ADU; one value or one per stamp) overrides
        ``reference_noise`` for networks with a reference-scale plane; with
        neither, each stamp's own noise is the reference.
        """
        return self.predict(stamps, reference_sigma)[0]

    def predict(self, stamps: np.ndarray, reference_sigma=None):
        """(blend probability, count-class probabilities or None) of each stamp.

        Both are averaged over the ``views``; see :meth:`predict_proba`.
        """
        _, predict, meta = load_cached(
            self.weights, self.FORMAT, self.name, self.build, self.precision
        )
        size = int(meta.get("input_size", INPUT_SIZE))
        ref = None
        if uses_reference(meta):
            ref = reference_sigma if reference_sigma is not None else self.reference_noise
        if ref is not None:  # None: the stamp's own noise, i.e. the noise plane again
            ref = np.broadcast_to(np.asarray(ref, dtype=np.float32), (len(stamps),))
        probs, counts = [], []
        for start in range(0, len(stamps), 4096):  # bound the preprocessed copy in memory
            part = None if ref is None else ref[start : start + 4096]
            chunk = stamps[start : start + 4096]
            views = []
            for k in view_indices(self.views):  # turn the stamp, then crop (see ``views``)
                x = preprocess(
                    dihedral_view(chunk, k), size, channels=self.CHANNELS, reference_sigma=part
                )
                views.append(run_batches(predict, x, self.batch_size))
            probs.append(np.mean([self.probability(v, meta) for v in views], axis=0))
            count_views = [self.count_probabilities(v, meta) for v in views]
            if count_views[0] is not None:
                counts.append(np.mean(count_views, axis=0))
        out = np.concatenate(probs) if probs else np.zeros((0,), np.float32)
        count = np.concatenate(counts) if counts else None
        return np.clip(out, 0.0, 1.0).astype(np.float32), count

    def flag_stamps(self, stamps, noise_sigma=None, reference_sigma=None) -> FlagResult:
        p, counts = self.predict(stamps, reference_sigma)
        flag = p >= self.threshold
        n_sources = None if counts is None else self.source_counts(counts, flag)
        return FlagResult(flag=flag, probability=p, n_sources=n_sources)

    def source_counts(self, counts: np.ndarray, flag: np.ndarray) -> np.ndarray:
        """Sources per stamp (int16, 1-4) from the count probabilities, by ``count_rule``."""
        if self.count_rule == "argmax":
            return (np.argmax(counts, axis=1) + 1).astype(np.int16)
        return np.where(flag, np.argmax(counts[:, 1:], axis=1) + 2, 1).astype(np.int16)

    def provenance(self):
        sha = file_sha256(self.weights)
        stem = self.CARD
        return [
            (f"BF_{stem}W", self.weights.name, f"{self.name} weights file"),
            (f"BF_{stem}SH", sha[:16], f"{self.name} weights SHA-256 (first 16 hex)"),
            (f"BF_{stem}TH", self.threshold, f"{self.column} = {self.probability_column} >= TH"),
            (f"BF_{stem}PR", self.precision, f"{self.name} inference precision"),
            (f"BF_{stem}NV", self.views, f"{self.name} symmetry views averaged per stamp"),
        ] + (
            [
                (
                    f"BF_{stem}RN",
                    "stamp" if self.reference_noise is None else self.reference_noise,
                    f"{self.name} blend reference noise sigma, ADU",
                )
            ]
            if uses_reference(self.metadata)
            else []
        )
