"""Training settings every network flagger's trainer shares (:class:`NetTrainConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from blendflag.errors import BlendflagError


@dataclass
class NetTrainConfig:
    """Settings every network trainer shares (each method's YAML adds its own).

    Attributes
    ----------
    method : str
        The flagger being trained.
    datasets : list of str
        Dataset presets (or YAML paths) mixed in equal parts. [default: great3, euclid]
    n_train, n_val : int
        Simulated training and validation stamps (validation from ``seed + 1``).
    noise : str, float or list of float
        ``"grid"`` (each stamp draws a sigma from its preset's grid), a sigma
        (ADU), or a list of sigmas (ADU) each stamp draws from.
    metacal_fraction : float
        Share of training and validation stamps replaced by a metacalibration
        image of themselves (see :func:`metacal_mixture`), so that the flagger
        is valid on the images ``compare`` selects on. [default: 0]
    kind_fractions : list of float or None
        Shares of (blend, single, separated) stamps in the training set (the
        validation set keeps the simulation's 0.5, 0.25, 0.25, so the best
        epoch and the threshold are chosen on the mix evaluations use). For
        example ``[0.5, 0.1, 0.4]`` keeps the class balance and shows the
        network more separated pairs, among them the near misses.
        [default: None, the simulation's mix]
    field_blend_fraction : float or None
        Share of blends among the stamps of presets with number counts (cut
        around the detections of simulated survey fields, see
        :func:`blendflag_plugins.nettrain.field_part`); isolated stamps are
        left out at random to reach it, in the training set only (validation
        keeps the sky's share, the one evaluations use). [default: None, the
        sky's own share]
    dataset_shares : list of float or None
        Relative shares of ``datasets`` in both sets, e.g. ``[1.5, 1.5, 1, 1,
        1]``. [default: None, equal parts]
    seed : int
        Seed of the training data.
    epochs, batch_size : int
    learning_rate : float
        Adam learning rate.
    input_size : int
        Network input side in pixels.
    precision : str
        ``auto``, ``bfloat16`` or ``float32``.
    augment : bool
        Random flips and 90-degree rotations.
    train_seed : int
        Seed of weight initialisation and shuffling.
    """

    method: str = ""
    datasets: list[str] = field(default_factory=lambda: ["great3", "euclid"])
    n_train: int = 20000
    n_val: int = 4000
    noise: str | float | list[float] = "grid"
    metacal_fraction: float = 0.0
    kind_fractions: list[float] | None = None
    field_blend_fraction: float | None = None
    dataset_shares: list[float] | None = None
    seed: int = 1000
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    input_size: int = 48
    precision: str = "float32"
    augment: bool = True
    train_seed: int = 0

    #: The method this config trains (subclasses set it).
    METHOD = ""

    def validate(self, where: str) -> None:
        from blendflag.config import check as _check

        _check(self.method == self.METHOD, f"{where}.method", f"must be {self.METHOD}")
        _check(len(self.datasets) > 0, f"{where}.datasets", "name at least one dataset")
        _check(self.n_train >= 2 * len(self.datasets), f"{where}.n_train", "too small")
        _check(self.n_val >= 4, f"{where}.n_val", "must be at least 4")
        _check(self.epochs >= 1, f"{where}.epochs", "must be at least 1")
        _check(self.batch_size >= 1, f"{where}.batch_size", "must be at least 1")
        _check(0 < self.learning_rate < 1, f"{where}.learning_rate", "must be in (0, 1)")
        _check(self.input_size >= 32, f"{where}.input_size", "must be at least 32 px")
        if isinstance(self.noise, str):
            _check(self.noise == "grid", f"{where}.noise", "must be 'grid' or a number")
        elif isinstance(self.noise, list):
            _check(
                len(self.noise) > 0 and all(s > 0 for s in self.noise),
                f"{where}.noise",
                "give one or more positive sigmas (ADU)",
            )
        else:
            _check(self.noise > 0, f"{where}.noise", "must be positive (ADU)")
        _check(
            0.0 <= self.metacal_fraction <= 1.0, f"{where}.metacal_fraction", "must be in [0, 1]"
        )
        if self.field_blend_fraction is not None:
            _check(
                0.0 < self.field_blend_fraction < 1.0,
                f"{where}.field_blend_fraction",
                "must be in (0, 1)",
            )
        if self.dataset_shares is not None:
            _check(
                len(self.dataset_shares) == len(self.datasets)
                and all(w > 0 for w in self.dataset_shares),
                f"{where}.dataset_shares",
                "give one positive share per dataset",
            )
        if self.kind_fractions is not None:
            from blendflag.simulate.stamps import kind_counts

            try:
                kind_counts(1, self.kind_fractions)
            except (BlendflagError, TypeError, ValueError) as exc:
                _check(False, f"{where}.kind_fractions", str(exc))
