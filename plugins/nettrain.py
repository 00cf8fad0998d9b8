"""Training data and run state shared by the network flaggers' trainers.

Data are simulated once per configuration (equal parts of each dataset style,
shuffled), preprocessed, stored as float16 in the run's work directory and
reloaded on resume; ``state.json`` records the progress of a run.
:class:`TrainingRun` and :func:`gradient_step` are the scaffolding of the
trainers with their own loop (one-class, Siamese): open or resume a run,
train epoch by epoch with a checkpoint after each, stop at a time budget,
write the weights file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from blendflag.errors import BlendflagError
from blendflag_plugins.nettrain_config import NetTrainConfig  # also re-exported

# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def metacal_mixture(
    stamps, sigmas, dataset, fraction: float, seed: int, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Replace a fraction of stamps by one metacalibration image of each.

    ``compare`` flags the metacal images (see :mod:`blendflag.shear.metacal_images`),
    so a flagger used there must have seen such images. Each chosen stamp goes
    through the built-in GalSim engine with the settings ``compare`` uses (the
    packaged pipeline config's ``shear`` section, noise correction on) and is
    replaced by one of its five versions drawn at random.

    A dataset whose PSF metacalibration cannot reconvolve (undersampled, as
    the Euclid-like preset's 1.7-px Airy core; ``compare`` refuses such data
    too) keeps all its stamps, and a line says so.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, S, S)`` stamps of ``dataset`` (ADU).
    sigmas : numpy.ndarray
        Noise sigma of each stamp (ADU).
    dataset : str or DatasetConfig
        Gives the PSF and the pixel scale.
    fraction : float
        Share of stamps replaced, in [0, 1].
    seed : int
        Seed of the choice of stamps and versions and of the noise fields.
    workers : int or None
        Processes. [default: every core from 500 stamps on, else serial]

    Returns
    -------
    stamps : numpy.ndarray
        The stamps, a fraction of them replaced (float32, ADU).
    is_metacal : numpy.ndarray
        bool, True where a stamp was replaced (a stamp the engine could not
        render keeps the original).
    """
    from blendflag.config import load_pipeline_config
    from blendflag.shear.metacal_images import metacal_stamps
    from blendflag.simulate.galaxies import psf_image
    from blendflag.simulate.presets import load_dataset
    from blendflag_plugins.metacal_galsim import GalSimMetacal

    n = len(stamps)
    chosen = np.flatnonzero(np.random.default_rng([int(seed), 0x6D63]).random(n) < fraction)
    is_metacal = np.zeros(n, dtype=bool)
    if chosen.size == 0:
        return stamps, is_metacal
    config = load_dataset(dataset)
    try:
        images, rendered = metacal_stamps(
            GalSimMetacal,
            load_pipeline_config(None).shear,
            stamps[chosen],
            psf_image(config),
            config.pixel_scale,
            np.asarray(sigmas)[chosen],
            seed,
            version="random",
            workers=workers,
        )
    except (BlendflagError, ValueError) as exc:  # an undersampled PSF: metacal does not apply
        print(f"metacal_fraction: {config.name} stamps left as they are ({exc})")
        return stamps, is_metacal
    out = stamps.copy()
    out[chosen[rendered]] = images[rendered]
    is_metacal[chosen[rendered]] = True
    return out, is_metacal


def simulate_mixture(
    datasets,
    n,
    seed,
    noise,
    metacal_fraction: float = 0.0,
    fractions=None,
    field_blend_fraction: float | None = None,
    shares=None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Parts of each dataset style (equal, or in proportion to ``shares``), shuffled.

    A preset with number counts (``cfis_survey``, ``euclid_survey``,
    ``lsst_y10``, ``des_y5``) gives stamps centred on the detections of its
    simulated fields (:func:`blendflag.simulate.field_stamps.simulate_field_stamps`,
    at its own noise); the others give the study's stamps
    (:func:`blendflag.simulate.stamps.simulate_stamps`, at ``noise``).
    ``metacal_fraction`` of the stamps are replaced by a metacalibration image
    of themselves (see :func:`metacal_mixture`). ``fractions`` are the shares
    of (blend, single, separated) study stamps [default: the simulation's,
    0.5, 0.25, 0.25]; ``field_blend_fraction`` the share of blends among the
    field stamps (isolated ones left out at random) [default: None, the sky's
    own share].

    Returns
    -------
    stamps : numpy.ndarray
        ``(n, S, S)`` float32 (the preset stamp sizes must agree after cropping).
    labels : numpy.ndarray
        ``(n,)`` float32, 1 for blends.
    truth : dict
        ``separation``, ``noise_sigma``, ``dataset``, ``metacal`` arrays, for the
        record, ``count_class`` (0-3: 1, 2, 3, 4+ overlapping sources) and
        ``reference_sigma``: the noise sigma (ADU) at which each stamp's label
        is defined (its isophote over ``blend.isophote_nsigma``).
    """
    from blendflag.simulate.presets import load_dataset
    from blendflag_plugins.netcore import INPUT_SIZE, crop_center

    weights = np.ones(len(datasets)) if shares is None else np.asarray(shares, dtype=float)
    parts = np.floor(n * weights / weights.sum()).astype(int)
    parts[: n - parts.sum()] += 1
    stamps, cols = [], []
    for i, (name, k) in enumerate(zip(datasets, parts, strict=True)):
        part_seed = seed * 100 + i
        s, t = _part_stamps(name, int(k), part_seed, noise, fractions, field_blend_fraction)
        config = load_dataset(name)
        s, is_mcal = metacal_mixture(
            s, np.asarray(t["NOISE_SIGMA"]), name, metacal_fraction, part_seed
        )
        # keep at least the network input plus the border used for the noise estimate
        keep = max(INPUT_SIZE + 6, 0)
        stamps.append(crop_center(s, min(keep, s.shape[1])) if s.shape[1] > keep else s)
        cols.append(_part_columns(t, config, is_mcal, i))
    sizes = {s.shape[1] for s in stamps}
    if len(sizes) > 1:
        side = min(sizes)
        stamps = [crop_center(s, side) for s in stamps]
    order = np.random.default_rng(seed).permutation(n)
    x = np.concatenate(stamps)[order]
    truth = {key: np.concatenate([c[key] for c in cols])[order] for key in cols[0]}
    return x, truth.pop("label"), truth


def _part_stamps(name, k: int, seed: int, noise, fractions, field_blend_fraction):
    """One dataset's share of a mixture: field stamps for count presets, else the study's."""
    from blendflag.simulate.population import uses_counts
    from blendflag.simulate.presets import load_dataset
    from blendflag.simulate.stamps import DEFAULT_FRACTIONS, simulate_stamps

    if uses_counts(load_dataset(name)):
        return field_part(name, k, seed, field_blend_fraction)
    return simulate_stamps(
        name,
        k,
        seed=seed,
        noise=noise,
        progress=True,
        fractions=DEFAULT_FRACTIONS if fractions is None else fractions,
    )


def field_part(name, k: int, seed: int, blend_fraction: float | None):
    """``k`` field stamps of preset ``name``, a ``blend_fraction`` of them blends.

    See :func:`blendflag.simulate.field_stamps.simulate_field_stamps`; the
    pipeline's detector (the packaged detection settings) finds the objects.
    """
    from functools import partial

    from blendflag.flagging.detectors import detect_with_plugins
    from blendflag.simulate.field_stamps import simulate_field_stamps

    detect = partial(detect_with_plugins, config=None)
    return simulate_field_stamps(
        name, k, seed, detect, workers=os.cpu_count() or 1, blend_fraction=blend_fraction
    )


def _part_columns(t, config, is_mcal, index: int) -> dict:
    """The per-stamp arrays of one dataset's share (see :func:`simulate_mixture`)."""
    from blendflag.simulate.field_stamps import count_class

    label = np.asarray(t["LABEL"], dtype=np.float32)
    counts = (
        np.asarray(t["COUNT_CLASS"], dtype=np.int16)
        if "COUNT_CLASS" in t.colnames
        else count_class(1 + label.astype(int))  # the study's stamps: one or two sources
    )
    return {
        "label": label,
        "separation": np.asarray(t["SEPARATION"], dtype=np.float32),
        "noise_sigma": np.asarray(t["NOISE_SIGMA"], dtype=np.float32),
        "dataset": np.full(len(t), index, dtype=np.int16),
        "metacal": is_mcal,
        "count_class": counts,
        "reference_sigma": np.asarray(t["ISOPHOTE"], dtype=np.float32)
        / np.float32(config.blend.isophote_nsigma),
    }


def _config_hash(config) -> str:
    keys = ("datasets", "n_train", "n_val", "noise", "seed", "input_size")
    fields = {k: getattr(config, k) for k in keys}
    if getattr(config, "field_blend_fraction", None):  # older runs keep their cache name
        fields["field_blend_fraction"] = config.field_blend_fraction
    if getattr(config, "metacal_fraction", 0.0):  # older runs keep their cache name
        fields["metacal_fraction"] = config.metacal_fraction
    if getattr(config, "reference_channel", False):
        fields["reference_channel"] = True
    if getattr(config, "kind_fractions", None):
        fields["kind_fractions"] = list(config.kind_fractions)
    if getattr(config, "dataset_shares", None):
        fields["dataset_shares"] = list(config.dataset_shares)
    if getattr(config, "field_blend_fraction", None):  # validation at the sky's share
        fields["validation_blend_fraction"] = "sky"
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def prepare_data(config, workdir: Path, quiet=False) -> dict:
    """Simulate (or reload) the preprocessed training and validation sets.

    ``config`` needs ``datasets``, ``n_train``, ``n_val``, ``noise``, ``seed`` and
    ``input_size``; the cache file is keyed by their hash.
    """
    from blendflag.io.atomic import atomic_output
    from blendflag_plugins.netcore import preprocess

    path = workdir / f"data-{_config_hash(config)}.npz"
    if path.exists():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    if not quiet:
        print(f"simulating {config.n_train} training and {config.n_val} validation stamps")
    frac = getattr(config, "metacal_fraction", 0.0)
    # kind_fractions and field_blend_fraction shape the training set only:
    # validation (best epoch, threshold) keeps the simulation's own mix and the
    # sky's share of blends, the ones evaluations use
    shares = getattr(config, "dataset_shares", None)
    xt, yt, tt = simulate_mixture(
        config.datasets,
        config.n_train,
        config.seed,
        config.noise,
        frac,
        getattr(config, "kind_fractions", None),
        getattr(config, "field_blend_fraction", None),
        shares,
    )
    xv, yv, tv = simulate_mixture(
        config.datasets, config.n_val, config.seed + 1, config.noise, frac, shares=shares
    )
    # one plane (noise-scaled), or two (noise, reference) for reference_channel
    planes = 2 if getattr(config, "reference_channel", False) else 1

    def inputs(x, truth):
        ref = truth["reference_sigma"] if planes == 2 else None
        return preprocess(x, config.input_size, channels=planes, reference_sigma=ref).astype(
            np.float16
        )

    data = {
        "x_train": inputs(xt, tt),
        "y_train": yt,
        "x_val": inputs(xv, tv),
        "y_val": yv,
        "sep_val": tv["separation"],
        "metacal_val": tv["metacal"],
        "count_train": tt["count_class"],
        "count_val": tv["count_class"],
        "dataset_val": tv["dataset"],
    }
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **data)
    return data


def network_input(x, channels: int):
    """Stored planes ``(..., 1 or 2)`` as the network's ``channels`` planes.

    One plane is repeated; two (noise, reference) alternate as
    ``[noise, reference, noise]`` (see :func:`~blendflag_plugins.netcore.preprocess`).
    Works on NumPy arrays and TensorFlow tensors.
    """
    planes = x.shape[-1]
    if planes == channels:
        return x
    index = [k % planes for k in range(channels)]
    if isinstance(x, np.ndarray):
        return x[..., index]
    import tensorflow as tf

    return tf.gather(x, index, axis=-1)


def image_dataset(x, y, batch_size, augment, shuffle_seed, channels=3):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)

    def to_input(img, label):
        img = tf.cast(img, tf.float32)
        if augment:
            img = tf.image.random_flip_left_right(img)
            img = tf.image.random_flip_up_down(img)
            k = tf.random.uniform((), 0, 4, dtype=tf.int32)
            img = tf.image.rot90(img, k)
        return network_input(img, channels), label

    return ds.map(to_input, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)


def read_state(workdir: Path) -> dict | None:
    path = workdir / "state.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise BlendflagError(
            f"{path} is damaged; delete the work directory to start over"
        ) from None


def write_state(workdir: Path, state: dict) -> None:
    from blendflag.io.atomic import atomic_output

    with atomic_output(workdir / "state.json") as tmp:
        tmp.write_text(json.dumps(state, indent=2))


def load_config(cls, path, overrides: dict | None, method: str):
    """A training-config dataclass from YAML; ``overrides`` replace top-level keys.

    Raises
    ------
    ConfigError
        Unknown keys, wrong types or values, naming the file.
    """
    from blendflag.config import from_mapping, load_yaml
    from blendflag.errors import ConfigError

    data = dict(load_yaml(path), **(overrides or {}))
    data.setdefault("method", method)
    try:
        return from_mapping(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"config error in {Path(path).name}: {exc}") from None


def open_run(config, out, workdir=None, resume: bool = False) -> tuple[Path, Path, dict | None]:
    """The work directory of a training run and its state (None for a new run).

    Raises
    ------
    BlendflagError
        A run exists and ``resume`` is False; nothing to resume; the run
        finished already; or it was started with another config.
    """
    out = Path(out)
    workdir = Path(workdir) if workdir else out.with_name(out.name + ".run")
    state = read_state(workdir) if workdir.exists() else None
    if state is not None and state.get("finished") and resume:
        raise BlendflagError(f"the run in {workdir} has finished; delete it to train again")
    if state is not None and not resume:
        raise BlendflagError(
            f"{workdir} holds an unfinished run; pass --resume to continue it "
            "or delete the directory to start over"
        )
    if resume and state is None:
        raise BlendflagError(f"nothing to resume in {workdir}")
    if state is not None and state.get("config") != asdict(config):
        raise BlendflagError(f"{workdir} was started with another config; delete it to start over")
    workdir.mkdir(parents=True, exist_ok=True)
    return out, workdir, state


# ---------------------------------------------------------------------------
# Custom-loop training runs (the one-class and Siamese flaggers)
# ---------------------------------------------------------------------------

#: The network's weights after the last finished epoch, in the run's work directory.
CHECKPOINT = "checkpoint.weights.h5"


def gradient_step(net, optimizer, loss_of_batch, transform=None):
    """One optimizer step on a batch, as a ``tf.function``: ``step(*batch)`` -> loss.

    Parameters
    ----------
    net : keras.Model
        The network whose trainable variables are updated.
    optimizer : keras.optimizers.Optimizer
    loss_of_batch : callable
        ``loss_of_batch(*batch)`` -> scalar loss tensor (differentiated).
    transform : callable or None
        ``transform(*batch)`` -> batch, applied first and not differentiated
        (augmentation). [default: None]
    """
    import tensorflow as tf

    @tf.function
    def step(*batch):
        if transform is not None:
            batch = transform(*batch)
        with tf.GradientTape() as tape:
            loss = loss_of_batch(*batch)
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return loss

    return step


@dataclass
class TrainingRun:
    """A training run with its own loop: its settings, data, network and progress.

    Attributes
    ----------
    config : NetTrainConfig
        The run's settings.
    out : pathlib.Path
        The weights file written when the run finishes.
    workdir : pathlib.Path
        Cached data, :data:`CHECKPOINT` and ``state.json``.
    state : dict
        Progress: ``config``, ``epoch`` (epochs done), ``history`` (per epoch,
        its mean loss and seconds), ``finished``.
    data : dict
        :func:`prepare_data`.
    net : keras.Model
        The network being trained.
    """

    config: NetTrainConfig
    out: Path
    workdir: Path
    state: dict
    data: dict
    net: object

    @classmethod
    def start(cls, config, out, workdir, resume: bool, quiet: bool, build) -> TrainingRun:
        """Open or resume a run: load its data, seed Keras, build the network.

        Parameters
        ----------
        config : NetTrainConfig
        out, workdir, resume
            See :func:`open_run`.
        quiet : bool
            No message about simulating the data.
        build : callable
            ``build(input_size, precision)`` -> the network; it takes the
            checkpoint's weights when a run is resumed.

        Raises
        ------
        BlendflagError
            See :func:`open_run`.
        """
        import keras

        out, workdir, state = open_run(config, out, workdir, resume)
        data = prepare_data(config, workdir, quiet)
        keras.utils.set_random_seed(config.train_seed)
        net = build(config.input_size, config.precision)
        checkpoint = workdir / CHECKPOINT
        if state is not None and checkpoint.exists():
            net.load_weights(checkpoint)
        else:
            state = {"config": asdict(config), "epoch": 0, "history": []}
        return cls(config, out, workdir, state, data, net)

    def train_epochs(self, train_epoch, max_minutes, quiet: bool, progress: str) -> bool:
        """Train the remaining epochs, checkpointing after each; stop at the time budget.

        Parameters
        ----------
        train_epoch : callable
            ``train_epoch(epoch)`` trains 0-based ``epoch`` and returns its batch losses.
        max_minutes : float or None
            Stop after the epoch that crosses this budget (minutes).
        quiet : bool
            No line per epoch.
        progress : str
            The line printed per epoch, formatted with ``epoch`` (1-based) and
            ``loss`` (the epoch's mean loss).

        Returns
        -------
        bool
            True when every epoch is done, False when stopped by the budget.
        """
        start = time.time()
        while self.state["epoch"] < self.config.epochs:
            t0 = time.time()
            losses = train_epoch(self.state["epoch"])
            self.state["epoch"] += 1
            self.state["history"].append(
                {
                    "epoch": self.state["epoch"],
                    "loss": float(np.mean(losses)),
                    "seconds": time.time() - t0,
                }
            )
            self.net.save_weights(self.workdir / CHECKPOINT)
            write_state(self.workdir, self.state)
            if not quiet:
                print(progress.format(epoch=self.state["epoch"], loss=np.mean(losses)))
            if (
                max_minutes is not None
                and self.state["epoch"] < self.config.epochs
                and (time.time() - start) / 60 >= max_minutes
            ):
                return False
        return True

    def stopped(self) -> dict:
        """What a trainer returns when the time budget stopped the run."""
        return {"finished": False, "epochs": self.state["epoch"]}

    def metadata(self, threshold: float, validation: dict, method: str, **specific) -> dict:
        """The weights file's metadata: what every trainer writes, ``specific`` after ``threshold``.

        Parameters
        ----------
        threshold : float
            Blend probability at or above which a stamp is flagged.
        validation : dict
            Figures on the validation set.
        method : str
            One line describing the method.
        **specific
            The method's own entries (what its flagger needs to score).
        """
        return {
            "input_size": self.config.input_size,
            "threshold": threshold,
            **specific,
            "training": asdict(self.config),
            "epochs_trained": self.state["epoch"],
            "validation": validation,
            "method": method,
        }

    def finish(self, model, metadata: dict, weights_format: str) -> dict:
        """Write the weights file of ``model``, mark the run finished, say what was done.

        Parameters
        ----------
        model : keras.Model
            The network the flagger loads (may differ from :attr:`net`).
        metadata : dict
            :meth:`metadata`.
        weights_format : str
            The flagger's weights-file format name.

        Returns
        -------
        dict
            ``finished``, ``epochs``, ``val``, ``threshold`` and ``out``.
        """
        from blendflag_plugins.netcore import save_weights

        save_weights(model, self.out, metadata, weights_format)
        self.state["finished"] = True
        write_state(self.workdir, self.state)
        return {
            "finished": True,
            "epochs": self.state["epoch"],
            "val": metadata["validation"],
            "threshold": metadata["threshold"],
            "out": str(self.out),
        }
