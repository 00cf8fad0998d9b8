"""Training the VGG16 blend flagger: simulated data, checkpoints, resume.

A run lives in a work directory (default ``<out>.run/``):

``data-<hash>.npz``
    The simulated, preprocessed training and validation stamps (cached, so a
    resumed run trains on the same data).
``checkpoint.keras``
    The full Keras model with optimizer state, written after every epoch.
``state.json``
    Epochs done, best validation loss, learning rate, history, elapsed time.

``--resume`` continues from the last checkpoint; ``max_minutes`` stops cleanly
after the epoch that crosses the time budget, so long trainings can run in
pieces. At the end the best weights are written as the compact shipped format
(float16 ``.npz``) with the decision threshold chosen on the validation set.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from blendflag.flagging.metrics import THRESHOLD_RULES
from blendflag_plugins.netcore import REFERENCE_LAYOUT
from blendflag_plugins.nettrain import (
    NetTrainConfig,
    image_dataset,
    load_config,
    network_input,
    open_run,
    prepare_data,
    write_state,
)


@dataclass
class VGG16TrainConfig(NetTrainConfig):
    """Training settings (``configs/train_vgg16_onerun.yaml``); shared keys in NetTrainConfig.

    Attributes
    ----------
    learning_rate : float
        Adam learning rate (1e-3 stalls without BatchNorm, measured). [default: 1e-4]
    lr_schedule : str
        ``plateau`` (multiply by ``lr_factor`` after ``lr_patience`` epochs
        without a better validation loss) or ``cosine`` (from
        ``learning_rate`` at the first epoch to ``lr_min`` at the last,
        whatever the validation loss does). [default: plateau]
    lr_factor, lr_patience : float, int
        ReduceLROnPlateau on validation loss. [default: 0.3, 1]
    lr_min : float
        Final learning rate of the cosine schedule. [default: 1e-6]
    patience : int
        Early-stopping patience in epochs (best weights kept). [default: 3]
    imagenet_weights : str or None
        Path to ImageNet VGG16 no-top weights to start from (never downloaded).
    init_weights : str or None
        A blendflag VGG16 weights file to start from (fine-tuning), or
        ``shipped`` for the packaged ``weights/vgg16_blend.npz``. Its input
        size may differ from ``input_size`` when the arrays still fit (the
        convolutions do not depend on it, and every size from 32 to 63 px
        leaves the head a 1x1x512 map), so a network can be fine-tuned to a
        smaller, faster input. [default: None, random initialisation]
    reference_channel : bool
        Give the network the stamp at the label's scale as well: input planes
        ``[noise, reference, noise]`` (see
        :func:`blendflag_plugins.netcore.preprocess`), with the reference sigma
        of each training stamp taken from its preset (``default_noise``).
        [default: False, three copies of the noise-scaled stamp]
    count_head : bool
        A second output, the number of sources whose footprints overlap the
        central object's (classes 1, 2, 3, 4+), trained with a categorical
        cross-entropy beside the blend label's. [default: False]
    threshold_rule : str
        How the decision threshold is chosen on the validation set:
        ``balanced`` (balanced accuracy) or ``accuracy`` (accuracy at the
        validation set's own share of blends: the sky's, for survey stamps).
        [default: balanced]
    """

    METHOD = "vgg16"
    method: str = "vgg16"
    n_train: int = 40000
    seed: int = 1000
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 1e-4
    precision: str = "auto"
    lr_schedule: str = "plateau"
    lr_factor: float = 0.3
    lr_patience: int = 1
    lr_min: float = 1e-6
    patience: int = 3
    imagenet_weights: str | None = None
    init_weights: str | None = None
    reference_channel: bool = False
    count_head: bool = False
    threshold_rule: str = "balanced"

    def validate(self, where: str) -> None:
        from blendflag.config import check as _check

        super().validate(where)
        _check(
            self.lr_schedule in ("plateau", "cosine"),
            f"{where}.lr_schedule",
            "must be 'plateau' or 'cosine'",
        )
        _check(
            self.threshold_rule in THRESHOLD_RULES,
            f"{where}.threshold_rule",
            f"must be one of {', '.join(THRESHOLD_RULES)}",
        )
        _check(0 < self.lr_factor < 1, f"{where}.lr_factor", "must be in (0, 1)")
        _check(self.lr_patience >= 1, f"{where}.lr_patience", "must be at least 1")
        _check(
            0 <= self.lr_min < self.learning_rate,
            f"{where}.lr_min",
            "must be in [0, learning_rate)",
        )
        _check(
            not (self.init_weights and self.imagenet_weights),
            f"{where}.init_weights",
            "give init_weights or imagenet_weights, not both",
        )


def initial_weights(config: VGG16TrainConfig) -> list | None:
    """The weight arrays a run starts from (``init_weights``), or None.

    A file with a count head starts a single-output network without it; a
    single-output file starts a count-head network beside a new head
    (:func:`with_new_count_head`).

    Raises
    ------
    BlendflagError
        The file is missing, not a VGG16 weights file, or its arrays do not
        fit a network of ``input_size`` (checked here, before any data are
        simulated).
    """
    from blendflag_plugins.vgg16_model import DEFAULT_WEIGHTS, build_model, read_weights

    if not config.init_weights:
        return None
    path = DEFAULT_WEIGHTS if config.init_weights == "shipped" else config.init_weights
    arrays, meta = read_weights(path)
    file_classes = int(meta.get("count_classes", 0))
    check_fits(
        build_model(config.input_size, count_classes=file_classes), arrays, f"init_weights {path}"
    )
    if file_classes and not config.count_head:
        return arrays[:-2]  # a single-output network: the file's count head is left out
    return arrays


def check_fits(model, arrays, what: str) -> None:
    """Refuse weight arrays whose shapes differ from ``model``'s, in one line."""
    from blendflag.errors import BlendflagError

    expected = [tuple(w.shape) for w in model.get_weights()]
    if expected != [tuple(a.shape) for a in arrays]:
        raise BlendflagError(
            f"{what} does not fit a VGG16 of this input size (array shapes differ)"
        )


def cosine_learning_rate(config: VGG16TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch`` under the cosine schedule.

    ``learning_rate`` at epoch 0, ``lr_min`` at the last epoch (``epochs - 1``).
    """
    span = max(config.epochs - 1, 1)
    frac = min(epoch, span) / span
    return config.lr_min + 0.5 * (config.learning_rate - config.lr_min) * (1 + np.cos(np.pi * frac))


def load_train_config(path, overrides: dict | None = None) -> VGG16TrainConfig:
    """Load and validate a training config; ``overrides`` replace top-level keys."""
    return load_config(VGG16TrainConfig, path, overrides, "vgg16")


def train_from_config(
    config_path, out, resume=False, max_minutes=None, quiet=False, workdir=None, overrides=None
) -> dict:
    """Train (or resume) and write the compact weights file ``out``.

    Parameters
    ----------
    config_path : path-like
        A YAML file of :class:`VGG16TrainConfig`.
    out : path-like
        The ``.npz`` weights file to write when training ends.
    resume : bool
        Continue from the work directory's checkpoint.
    max_minutes : float or None
        Stop after the epoch that crosses this budget (checkpoint kept;
        rerun with ``--resume``). The weights file is written only at the end.
    workdir : path-like or None
        Where data, checkpoints and state live. [default: ``<out>.run``]
    overrides : dict or None
        Config keys replaced from the command line (e.g. ``datasets``).

    Returns
    -------
    dict
        ``{"finished": bool, "epochs": int, "val": {...}, "threshold": t}``.
    """
    config = load_train_config(config_path, overrides)
    start_from = None if resume else initial_weights(config)  # a bad file fails first
    out, workdir, state = open_run(config, out, workdir, resume)
    return _train(config, out, workdir, state, max_minutes, quiet, start_from)


def _train(config, out, workdir, state, max_minutes, quiet, start_from=None) -> dict:
    """Train the remaining epochs of a run, then write the weights file (:func:`train_from_config`).

    Parameters
    ----------
    config : VGG16TrainConfig
    out : pathlib.Path
        The weights file written when the run finishes.
    workdir : pathlib.Path
        Cached data, ``checkpoint.keras``, ``best.weights.npz``, ``state.json``.
    state : dict or None
        The resumed run's state; None starts a new run.
    max_minutes : float or None
        Stop after the epoch that crosses this budget (minutes).
    quiet : bool
        No Keras progress lines, no message at the budget.
    start_from : list or None
        Weight arrays a new run starts from (``init_weights``).
    """
    import keras

    data = prepare_data(config, workdir, quiet)
    keras.utils.set_random_seed(config.train_seed)
    ckpt = workdir / "checkpoint.keras"
    model, state = _model_and_state(config, ckpt, state, start_from)
    train_ds = image_dataset(
        data["x_train"],
        _labels(config, data, "train"),
        config.batch_size,
        config.augment,
        shuffle_seed=config.train_seed + state["epoch"],
    )
    val_ds = image_dataset(data["x_val"], _labels(config, data, "val"), 256, False, None)
    best_path = workdir / "best.weights.npz"
    start = time.time()
    while state["epoch"] < config.epochs:
        _train_epoch(model, config, state, (train_ds, val_ds), best_path, quiet)
        model.save(ckpt)
        write_state(workdir, state)
        if state["bad_epochs"] >= config.patience:
            break
        if (
            max_minutes is not None
            and state["epoch"] < config.epochs
            and (time.time() - start) / 60 >= max_minutes
        ):
            if not quiet:
                print(f"stopping after epoch {state['epoch']} (time budget); rerun with --resume")
            return {"finished": False, "epochs": state["epoch"], "history": state["history"]}
    result = _finish(config, out, workdir, state, data, best_path)
    state["finished"] = True
    write_state(workdir, state)
    return result | {"finished": True}


def _labels(config, data: dict, part: str):
    """The targets of ``part`` (train or val): the blend label, and the count class."""
    if config.count_head:
        return data[f"y_{part}"], data[f"count_{part}"].astype(np.int32)
    return data[f"y_{part}"]


def with_new_count_head(model, arrays: list) -> list:
    """``arrays`` for ``model``; a count head missing from them keeps ``model``'s own weights.

    A single-output file (the one-run file of stage 1) can start a network
    with a count head: its layers are the first ones, and the head (kernel
    and bias of ``n_sources``, the model's last two arrays) starts from
    random weights.
    """
    own = model.get_weights()
    has_head = any(layer.name == "n_sources" for layer in model.layers)
    if has_head and len(arrays) == len(own) - 2:
        return list(arrays) + own[-2:]
    return list(arrays)


def _count_classes(config) -> int:
    from blendflag.simulate.field_stamps import COUNT_CLASSES

    return COUNT_CLASSES if config.count_head else 0


def _model_and_state(config, ckpt, state, start_from):
    """The model and run state to train on: the checkpoint's, or a new compiled model.

    Parameters
    ----------
    config : VGG16TrainConfig
    ckpt : pathlib.Path
        ``checkpoint.keras`` of the run (full model with optimizer state).
    state : dict or None
        The resumed run's state; None (or no checkpoint) starts a new run.
    start_from : list or None
        Weight arrays a new model starts from (``init_weights``).

    Returns
    -------
    model : keras.Model
    state : dict
        The resumed state, or a new one (no epoch done, ``learning_rate`` from the config).
    """
    import keras

    from blendflag_plugins.vgg16_model import build_model, find_imagenet_weights

    if state is not None and ckpt.exists():
        from blendflag_plugins.vgg16_model import resolve_precision

        keras.mixed_precision.set_global_policy(resolve_precision(config.precision))
        model = keras.models.load_model(ckpt)
        keras.mixed_precision.set_global_policy("float32")
        return model, state
    state = {
        "config": asdict(config),
        "epoch": 0,
        "best_val_loss": None,
        "best_epoch": None,
        "history": [],
        "elapsed_s": 0.0,
        "learning_rate": config.learning_rate,
        "bad_epochs": 0,
        "lr_wait": 0,
    }
    model = build_model(
        config.input_size,
        config.precision,
        imagenet_weights=find_imagenet_weights(config.imagenet_weights),
        count_classes=_count_classes(config),
    )
    if start_from is not None:
        model.set_weights(with_new_count_head(model, start_from))
    if config.count_head:
        loss = {"p_blend": "binary_crossentropy", "n_sources": "sparse_categorical_crossentropy"}
        metrics = {"p_blend": ["accuracy"], "n_sources": ["accuracy"]}
    else:
        loss, metrics = "binary_crossentropy", ["accuracy"]
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss, metrics=metrics)
    return model, state


def _train_epoch(model, config, state, datasets, best_path, quiet) -> None:
    """Fit one epoch at the scheduled learning rate and record it in ``state`` (in place).

    A better validation loss writes the weights to ``best_path`` and resets
    the counters; otherwise ``bad_epochs`` (early stopping) and ``lr_wait``
    (the plateau schedule, which then lowers the rate by ``lr_factor``) grow.

    Parameters
    ----------
    model : keras.Model
    config : VGG16TrainConfig
    state : dict
        The run's state: ``epoch``, ``learning_rate``, ``history``, the best
        epoch and the counters, ``elapsed_s`` (seconds).
    datasets : tuple
        ``(train, validation)`` ``tf.data`` datasets.
    best_path : pathlib.Path
        Where the best weights so far are kept.
    quiet : bool
        No Keras progress line.
    """
    from blendflag_plugins.vgg16_model import save_weights

    if config.lr_schedule == "cosine":
        state["learning_rate"] = float(cosine_learning_rate(config, state["epoch"]))
    model.optimizer.learning_rate.assign(state["learning_rate"])
    t0 = time.time()
    train_ds, val_ds = datasets
    hist = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=state["epoch"] + 1,
        initial_epoch=state["epoch"],
        shuffle=False,
        verbose=0 if quiet else 2,
    )
    record = {k: float(v[-1]) for k, v in hist.history.items()}
    record.update(
        epoch=state["epoch"] + 1, seconds=time.time() - t0, learning_rate=state["learning_rate"]
    )
    state["history"].append(record)
    state["epoch"] += 1
    val_loss = record["val_loss"]
    if state["best_val_loss"] is None or val_loss < state["best_val_loss"]:
        state.update(best_val_loss=val_loss, best_epoch=state["epoch"], bad_epochs=0, lr_wait=0)
        save_weights(
            model,
            best_path,
            {"input_size": config.input_size, "count_classes": _count_classes(config)},
        )
    else:
        state["bad_epochs"] += 1
        state["lr_wait"] += 1
        if config.lr_schedule == "plateau" and state["lr_wait"] >= config.lr_patience:
            state["learning_rate"] *= config.lr_factor
            state["lr_wait"] = 0
    state["elapsed_s"] += time.time() - t0


def _finish(config, out, workdir, state, data, best_path) -> dict:
    """Pick the threshold on validation data and write the shipped weights file."""
    from blendflag.flagging.metrics import choose_threshold, recalls, roc_auc
    from blendflag_plugins.vgg16_model import (
        _compiled_predict,
        build_model,
        read_weights,
        save_weights,
    )

    arrays, _ = read_weights(best_path)
    # Validation stamps are stored preprocessed; run the network on them directly.
    model = build_model(config.input_size, config.precision, count_classes=_count_classes(config))
    model.set_weights(arrays)
    predict = _compiled_predict(model)
    x_val = data["x_val"].astype(np.float32)
    outputs = np.concatenate(
        [
            np.asarray(predict(network_input(x_val[i : i + 256], 3))).reshape(
                -1, 1 + _count_classes(config)
            )
            for i in range(0, len(x_val), 256)
        ]
    )
    p = outputs[:, 0]
    y = data["y_val"]
    threshold = choose_threshold(p, y, config.threshold_rule)
    val = recalls(p >= threshold, y > 0.5)
    val["auc"] = roc_auc(p, y)
    is_mcal = np.asarray(data.get("metacal_val", np.zeros(len(y), bool)), dtype=bool)
    if is_mcal.any() and (~is_mcal).any():  # the figures of each kind of image
        for part, sel in (("original", ~is_mcal), ("metacal", is_mcal)):
            val[part] = recalls(p[sel] >= threshold, y[sel] > 0.5) | {"n": int(sel.sum())}
    if config.count_head:
        count = np.argmax(outputs[:, 1:], axis=1)
        val["count_accuracy"] = float(np.mean(count == data["count_val"]))
    meta = {
        "input_size": config.input_size,
        "count_classes": _count_classes(config),
        "threshold": threshold,
        "training": asdict(config),
        "epochs_trained": state["epoch"],
        "best_epoch": state["best_epoch"],
        "training_minutes": round(state["elapsed_s"] / 60, 1),
        "validation": val,
        "preprocessing": "crop centre input_size px; / (1.4826 MAD of 3-px border); arcsinh / 3",
    }
    if config.reference_channel:
        meta["input_channels"] = list(REFERENCE_LAYOUT)
        meta["preprocessing"] += (
            "; planes [noise, reference, noise], the reference plane "
            "arcsinh(x / reference sigma) / 3"
        )
    save_weights(model, out, meta)
    read_weights(out)
    return {"epochs": state["epoch"], "val": val, "threshold": threshold, "out": str(out)}
