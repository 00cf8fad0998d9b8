"""Siamese blend flagger: a twin CNN embedding and class prototypes.

Method
    One convolutional network f embeds a stamp into a 32-d unit vector. It is
    trained on pairs of stamps with the contrastive loss (Hadsell et al. 2006):
    pairs of the same class (blend/blend or non-blend/non-blend) are pulled
    together, pairs of different classes pushed at least ``margin`` apart.
    Both members of a pair go through the same weights (the "twins").

Classification
    From a small labelled reference set (``n_reference`` stamps of each class,
    validation seeds) the class prototypes are the mean embeddings of blends
    ``p_b`` and of non-blends ``p_n``. A stamp's blend probability is
    ``sigmoid((|f(x) - p_n| - |f(x) - p_b|) / T)``: 0.5 where it is equally far
    from both. ``T`` and the threshold are set on validation data and stored in
    the weights file with the prototypes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blendflag import hookimpl
from blendflag.config import check as _check
from blendflag_plugins import netcore
from blendflag_plugins.nettrain import NetTrainConfig

FORMAT = "blendflag-siamese-weights"
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "siamese_blend.npz"
EMBEDDING = 32


def build_embedding(input_size: int = netcore.INPUT_SIZE, precision: str = "float32"):
    """The twin network f: stamp -> 32-d unit vector."""
    import keras

    with netcore.policy(precision):
        inp = keras.Input((input_size, input_size, 1), name="stamp")
        x = inp
        for i, width in enumerate((32, 64, 128)):
            x = keras.layers.Conv2D(
                width, 3, padding="same", activation="relu", name=f"conv{i + 1}a"
            )(x)
            x = keras.layers.Conv2D(
                width, 3, padding="same", activation="relu", name=f"conv{i + 1}b"
            )(x)
            x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        x = keras.layers.Dense(128, activation="relu", name="fc")(x)
        x = keras.layers.Dense(EMBEDDING, dtype="float32", name="embed")(x)
        out = keras.layers.UnitNormalization(name="unit", dtype="float32")(x)
        return keras.Model(inp, out, name="siamese_twin")


def prototype_probability(embeddings, proto_blend, proto_not, temperature) -> np.ndarray:
    """Blend probability from distances to the two class prototypes."""
    d_b = np.linalg.norm(embeddings - np.asarray(proto_blend, np.float32), axis=1)
    d_n = np.linalg.norm(embeddings - np.asarray(proto_not, np.float32), axis=1)
    return 1.0 / (1.0 + np.exp(-(d_n - d_b) / float(temperature)))


class SiameseFlagger(netcore.NetworkFlagger):
    """Siamese-network flagger (options as for every network flagger)."""

    name = "siamese"
    # Trained on ordinary stamps only: on noshear metacal images it found 0.148 of
    # the blends (GREAT3-like) and 0.141 (CFIS-like), `evaluate --metacal`, 4,000
    # stamps each; retrain it with metacal_fraction > 0 to use it in compare.
    metacal_safe = False
    FORMAT = FORMAT
    DEFAULT_WEIGHTS = DEFAULT_WEIGHTS
    CHANNELS = 1
    CARD = "SIA"
    trainable = True
    training_config = "configs/train_siamese.yaml"

    @classmethod
    def build(cls, metadata, precision):
        return build_embedding(int(metadata.get("input_size", netcore.INPUT_SIZE)), precision)

    def probability(self, outputs, metadata):
        return prototype_probability(
            outputs,
            metadata["prototype_blend"],
            metadata["prototype_not_blend"],
            metadata["temperature"],
        )

    @classmethod
    def train(cls, config_path, out, **kwargs):
        return train_siamese(config_path, out, **kwargs)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


@dataclass
class SiameseTrainConfig(NetTrainConfig):
    """Training settings (``configs/train_siamese.yaml``); shared keys in NetTrainConfig.

    Attributes
    ----------
    margin : float
        Contrastive margin between unit embeddings. [default: 1.0]
    temperature : float
        Of the prototype-distance sigmoid. [default: 0.1]
    n_reference : int
        Labelled validation stamps per class for the prototypes. [default: 200]
    """

    METHOD = "siamese"
    method: str = "siamese"
    seed: int = 4000
    epochs: int = 8
    margin: float = 1.0
    temperature: float = 0.1
    n_reference: int = 200

    def validate(self, where: str) -> None:
        super().validate(where)
        _check(0 < self.margin <= 2, f"{where}.margin", "must be in (0, 2] (unit embeddings)")
        _check(self.temperature > 0, f"{where}.temperature", "must be positive")
        _check(self.n_reference >= 1, f"{where}.n_reference", "must be at least 1")


def train_siamese(
    config_path, out, resume=False, max_minutes=None, quiet=False, workdir=None, overrides=None
) -> dict:
    """Train the twin embedding with the contrastive loss; write the weights file.

    Each epoch pairs every training stamp with a randomly chosen partner
    (balanced between same-class and different-class partners).
    """
    import keras

    from blendflag_plugins.nettrain import TrainingRun, gradient_step, load_config

    config = load_config(SiameseTrainConfig, config_path, overrides, "siamese")
    run = TrainingRun.start(config, out, workdir, resume, quiet, build_embedding)
    x = run.data["x_train"]
    y = run.data["y_train"] > 0.5
    step = gradient_step(
        run.net,
        keras.optimizers.Adam(config.learning_rate),
        contrastive_loss(run.net, config.margin),
        augment_pair if config.augment else None,
    )

    def train_epoch(epoch):
        batches = partner_batches(x, y, config.train_seed + epoch, config.batch_size)
        return [float(step(a, b, same)) for a, b, same in batches]

    progress = "siamese epoch {epoch}: contrastive loss {loss:.4f}"
    if not run.train_epochs(train_epoch, max_minutes, quiet, progress):
        return run.stopped()
    threshold, validation, prototypes = validate_prototypes(run.net, run.data, config)
    meta = run.metadata(
        threshold,
        validation,
        "Siamese twin CNN, contrastive loss, class prototypes",
        **prototypes,
        temperature=config.temperature,
    )
    return run.finish(run.net, meta, FORMAT)


def contrastive_loss(net, margin: float):
    """``loss(a, b, same)``: the contrastive loss of a batch of pairs (Hadsell et al. 2006).

    Parameters
    ----------
    net : keras.Model
        The twin network (both members of a pair go through it).
    margin : float
        Distance below which pairs of different classes are pushed apart
        (unit embeddings: in (0, 2]).

    Returns
    -------
    callable
        ``loss(a, b, same)``: mean of ``d^2`` over same-class pairs
        (``same`` 1) and ``max(margin - d, 0)^2`` over the others (``same`` 0).
    """
    import tensorflow as tf

    margin = tf.constant(margin, tf.float32)

    def loss(a, b, same):
        fa, fb = net(a, training=True), net(b, training=True)
        d = tf.sqrt(tf.reduce_sum((fa - fb) ** 2, axis=1) + 1e-9)
        return tf.reduce_mean(same * d**2 + (1 - same) * tf.nn.relu(margin - d) ** 2)

    return loss


def augment_pair(a, b, same):
    """Random flips and 90-degree turns of every stamp of both members of a batch of pairs."""
    import tensorflow as tf

    def augment(img):
        img = tf.image.random_flip_left_right(img)
        img = tf.image.random_flip_up_down(img)
        return tf.image.rot90(img, tf.random.uniform((), 0, 4, dtype=tf.int32))

    return tf.map_fn(augment, a), tf.map_fn(augment, b), same


def partner_batches(x, y, seed: int, batch_size: int):
    """One epoch of pairs: every stamp, shuffled, with a random partner of either class.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, S, S, 1)`` preprocessed training stamps.
    y : numpy.ndarray
        ``(n,)`` bool, True for blends.
    seed : int
        Seed of the epoch's order and partners.
    batch_size : int
        Pairs per batch.

    Yields
    ------
    a, b : numpy.ndarray
        ``(batch, S, S, 1)`` float32 first and second members.
    same : numpy.ndarray
        ``(batch,)`` float32, 1 where both are of one class (half of the pairs on average).
    """
    idx_b, idx_n = np.nonzero(y)[0], np.nonzero(~y)[0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    want_same = rng.random(len(x)) < 0.5
    from_blends = np.where(want_same, y[order], ~y[order])
    partner = np.where(from_blends, rng.choice(idx_b, len(x)), rng.choice(idx_n, len(x)))
    same = want_same.astype(np.float32)
    for s in range(0, len(x), batch_size):
        sl = slice(s, s + batch_size)
        yield x[order[sl]].astype(np.float32), x[partner[sl]].astype(np.float32), same[sl]


def validate_prototypes(net, data: dict, config: SiameseTrainConfig) -> tuple:
    """Class prototypes from a labelled reference set, the threshold and figures on the rest.

    The reference set is the first ``n_reference`` stamps of each class of
    the validation data; the threshold is chosen, and the figures measured,
    on the other validation stamps.

    Returns
    -------
    threshold : float
        Blend probability at or above which a stamp is flagged.
    validation : dict
        Recalls and AUC on the validation stamps outside the reference set.
    prototypes : dict
        ``prototype_blend`` and ``prototype_not_blend``: mean unit embeddings (lists).
    """
    from blendflag.flagging.metrics import choose_threshold, recalls, roc_auc

    predict = netcore.compiled_predict(net)
    emb_val = netcore.run_batches(predict, data["x_val"].astype(np.float32), 256)
    y_val = data["y_val"] > 0.5
    ref_b = np.nonzero(y_val)[0][: config.n_reference]
    ref_n = np.nonzero(~y_val)[0][: config.n_reference]
    proto_b, proto_n = emb_val[ref_b].mean(axis=0), emb_val[ref_n].mean(axis=0)
    rest = np.ones(len(y_val), bool)
    rest[ref_b] = rest[ref_n] = False
    p = prototype_probability(emb_val[rest], proto_b, proto_n, config.temperature)
    threshold = choose_threshold(p, y_val[rest])
    validation = recalls(p >= threshold, y_val[rest]) | {"auc": roc_auc(p, y_val[rest])}
    prototypes = {"prototype_blend": proto_b.tolist(), "prototype_not_blend": proto_n.tolist()}
    return threshold, validation, prototypes


@hookimpl
def blendflag_register_flaggers():
    return [SiameseFlagger]
