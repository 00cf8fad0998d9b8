"""The ``simulate --plot`` figure: example stamps per kind and noise level."""

from __future__ import annotations

from pathlib import Path

#: Stamps per kind and noise level in the ``--plot`` figure.
PLOT_PER_ROW = 4


def plot_examples(dataset, path, seed: int = 0, per_row: int = PLOT_PER_ROW) -> Path:
    """A PNG of example stamps: one row per kind, at the lowest and highest grid noise.

    Each panel is shown with an asinh stretch scaled to its noise sigma and
    annotated with the separation (pixels) and the central source's S/N.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from blendflag.io.atomic import atomic_output
    from blendflag.simulate.presets import load_dataset
    from blendflag.simulate.stamps import KINDS, simulate_stamps

    config = load_dataset(dataset)
    levels = [min(config.noise_grid), max(config.noise_grid)]
    if levels[0] == levels[1]:
        levels = levels[:1]
    per = per_row
    fig, axes = plt.subplots(
        len(KINDS),
        per * len(levels),
        figsize=(1.6 * per * len(levels) + 0.6, 1.75 * len(KINDS) + 0.5),
        squeeze=False,
    )
    for j, sigma in enumerate(levels):
        # Equal numbers of each kind, drawn for the figure only.
        stamps, truth = simulate_stamps(
            config, 3 * per, seed, noise=sigma, fractions=(1 / 3, 1 / 3, 1 / 3), workers=1
        )
        for i, kind in enumerate(KINDS):
            rows = np.nonzero(np.asarray(truth["KIND"]) == kind)[0][:per]
            for k in range(per):
                ax = axes[i, j * per + k]
                ax.set_xticks([])
                ax.set_yticks([])
                if k >= len(rows):
                    ax.axis("off")
                    continue
                r = rows[k]
                img = np.arcsinh(stamps[r] / (3.0 * sigma))
                ax.imshow(
                    img,
                    origin="lower",
                    cmap="gray_r",
                    vmin=-0.5,
                    vmax=max(float(np.percentile(img, 99.8)), 1.0),
                    interpolation="nearest",
                )
                label = f"S/N {truth['SNR'][r]:.0f}"
                if kind != "single":
                    label = f"d={truth['SEPARATION'][r]:.1f} px\n" + label
                    ax.plot(
                        [truth["X1"][r] - 1, truth["X2"][r] - 1],
                        [truth["Y1"][r] - 1, truth["Y2"][r] - 1],
                        "+",
                        color="tab:red",
                        ms=5,
                        mew=0.8,
                        alpha=0.7,
                    )
                ax.text(
                    0.03,
                    0.97,
                    label,
                    transform=ax.transAxes,
                    va="top",
                    ha="left",
                    fontsize=7,
                    color="tab:blue",
                    bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "lw": 0},
                )
                if k == 0 and j == 0:
                    ax.set_ylabel(kind, fontsize=10)
                if i == 0 and k == 0:
                    ax.set_title(f"noise sigma {sigma:g} ADU", fontsize=9, loc="left")
    fig.suptitle(
        f"{config.name}: blend = isophotes at {config.blend.isophote_nsigma:g} x "
        f"sigma_ref={config.default_noise:g} ADU overlap "
        f"(asinh stretch, + marks the sources)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# simulate-field
# ---------------------------------------------------------------------------
