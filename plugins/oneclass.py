"""One-class blend flagger: Deep SVDD trained on non-blended stamps only.

Method (Ruff et al. 2018, "Deep One-Class Classification")
    A small convolutional network phi maps a stamp to a 32-d point; it is
    trained on singles and separated pairs only to pull phi(x) towards a fixed
    centre c (the mean of phi over the training stamps at initialisation).
    The anomaly score of a stamp is its squared distance d = |phi(x) - c|^2:
    stamps unlike any non-blend (blends) land far from c. As the method
    requires, the network has no bias terms and no bounded activations, so it
    cannot map everything onto c (hypersphere collapse).

Why this method
    It is a one-class classifier in the strict sense (it never sees a blend in
    training), it is a CNN like the study's other methods, it costs one forward
    pass at inference, and unlike an autoencoder's reconstruction error it does
    not reward reconstructing blends well.

Probability and threshold
    ``P_BLEND_ONECLASS = d / (d + d0)``, so ``P >= 0.5`` exactly when
    ``d >= d0``; ``d0`` is chosen on a labelled validation set (maximum
    balanced accuracy) and stored in the weights file with c.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from blendflag import hookimpl
from blendflag.config import _check
from blendflag_plugins import netcore

FORMAT = "blendflag-oneclass-weights"
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "oneclass_blend.npz"
EMBEDDING = 32


def build_network(input_size: int = netcore.INPUT_SIZE, precision: str = "float32"):
    """The bias-free Deep SVDD network phi: stamp -> 32-d point."""
    import keras

    with netcore.policy(precision):
        inp = keras.Input((input_size, input_size, 1), name="stamp")
        x = inp
        for i, width in enumerate((32, 64, 128)):
            x = keras.layers.Conv2D(width, 5 if i < 2 else 3, padding="same", use_bias=False,
                                    name=f"conv{i + 1}")(x)
            x = keras.layers.LeakyReLU(0.1, name=f"act{i + 1}")(x)
            x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        out = keras.layers.Dense(EMBEDDING, use_bias=False, dtype="float32", name="phi")(x)
        return keras.Model(inp, out, name="deep_svdd")


class OneClassFlagger(netcore.NetworkFlagger):
    """Deep SVDD one-class flagger (options as for every network flagger)."""

    name = "oneclass"
    FORMAT = FORMAT
    DEFAULT_WEIGHTS = DEFAULT_WEIGHTS
    CHANNELS = 1
    CARD = "OCL"

    @classmethod
    def build(cls, metadata, precision):
        return build_network(int(metadata.get("input_size", netcore.INPUT_SIZE)), precision)

    def probability(self, outputs, metadata):
        d = np.sum((outputs - np.asarray(metadata["centre"], np.float32)) ** 2, axis=1)
        return d / (d + float(metadata["d0"]))

    @classmethod
    def train(cls, config_path, out, **kwargs):
        return train_oneclass(config_path, out, **kwargs)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


@dataclass
class OneClassTrainConfig:
    """Training settings (``configs/train_oneclass.yaml``); data keys as for VGG16."""

    method: str = "oneclass"
    datasets: list[str] = field(default_factory=lambda: ["great3", "euclid"])
    n_train: int = 20000
    n_val: int = 4000
    noise: str | float = "grid"
    seed: int = 3000
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-4
    weight_decay: float = 1e-6
    input_size: int = 48
    precision: str = "float32"
    augment: bool = True
    train_seed: int = 0

    def validate(self, where: str) -> None:
        _check(self.method == "oneclass", f"{where}.method", "must be oneclass")
        _check(self.n_train >= 4 and self.n_val >= 4, f"{where}.n_train", "too small")
        _check(self.epochs >= 1, f"{where}.epochs", "must be at least 1")
        _check(0 < self.learning_rate < 1, f"{where}.learning_rate", "must be in (0, 1)")


def train_oneclass(config_path, out, resume=False, max_minutes=None, quiet=False, workdir=None,
                   overrides=None) -> dict:
    """Train Deep SVDD on the non-blends of simulated data; write the weights file.

    Checkpoints (weights, optimizer state and centre) are written after every
    epoch to the work directory; ``resume`` continues from them.
    """
    import keras
    import tensorflow as tf

    from blendflag.metrics import choose_threshold, recalls, roc_auc
    from blendflag_plugins.nettrain import (
        image_dataset,
        load_config,
        open_run,
        prepare_data,
        write_state,
    )

    config = load_config(OneClassTrainConfig, config_path, overrides, "oneclass")
    out, workdir, state = open_run(config, out, workdir, resume)
    data = prepare_data(config, workdir, quiet)
    normal = data["y_train"] < 0.5
    x_train = data["x_train"][normal]
    keras.utils.set_random_seed(config.train_seed)
    net = build_network(config.input_size, config.precision)
    ckpt = workdir / "checkpoint.weights.h5"
    if state is not None and ckpt.exists():
        net.load_weights(ckpt)
        centre = np.asarray(state["centre"], np.float32)
    else:
        phi0 = netcore.run_batches(netcore.compiled_predict(net), x_train[:4096].astype(np.float32),
                                   256)
        centre = phi0.mean(axis=0)
        centre[np.abs(centre) < 0.01] = 0.01  # as in Deep SVDD: keep c off the trivial 0
        state = {"config": asdict(config), "epoch": 0, "history": [], "centre": centre.tolist()}
    c = tf.constant(centre)
    opt = keras.optimizers.Adam(config.learning_rate, weight_decay=config.weight_decay)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.reduce_sum((net(x, training=True) - c) ** 2, axis=1))
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return loss

    start = time.time()
    while state["epoch"] < config.epochs:
        t0 = time.time()
        ds = image_dataset(x_train, np.zeros(len(x_train), np.float32), config.batch_size,
                           config.augment, config.train_seed + state["epoch"], channels=1)
        losses = [float(step(x)) for x, _ in ds]
        state["epoch"] += 1
        state["history"].append({"epoch": state["epoch"], "loss": float(np.mean(losses)),
                                 "seconds": time.time() - t0})
        net.save_weights(ckpt)
        write_state(workdir, state)
        if not quiet:
            print(f"oneclass epoch {state['epoch']}: loss {np.mean(losses):.5f}")
        if (max_minutes is not None and state["epoch"] < config.epochs
                and (time.time() - start) / 60 >= max_minutes):
            return {"finished": False, "epochs": state["epoch"]}
    phi = netcore.run_batches(netcore.compiled_predict(net), data["x_val"].astype(np.float32), 256)
    d = np.sum((phi - centre) ** 2, axis=1)
    y = data["y_val"] > 0.5
    # the threshold on d, through P = d / (d + d0) with d0 the median distance
    d_ref = float(np.median(d[~y]))
    t = choose_threshold(d / (d + d_ref), y)
    d0 = d_ref * t / (1 - t)  # P_new = d / (d + d0) crosses 0.5 where P_ref crosses t
    p = d / (d + d0)
    val = recalls(p >= 0.5, y) | {"auc": roc_auc(p, y)}
    meta = {"input_size": config.input_size, "threshold": 0.5, "centre": centre.tolist(),
            "d0": d0, "training": asdict(config), "epochs_trained": state["epoch"],
            "validation": val,
            "method": "Deep SVDD (one-class), trained on singles and separated pairs only"}
    netcore.save_weights(net, out, meta, FORMAT)
    state["finished"] = True
    write_state(workdir, state)
    return {"finished": True, "epochs": state["epoch"], "val": val, "threshold": 0.5,
            "out": str(out)}


@hookimpl
def blendflag_register_flaggers():
    return [OneClassFlagger]
