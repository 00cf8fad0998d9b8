"""Figures astronomers would rather look at than read (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blendflag.catalog import atomic_output


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    plt = _pyplot()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_evaluation(results: dict, path, title: str | None = None) -> Path:
    """Confusion matrices side by side, then accuracy vs noise and blend recall vs separation.

    Parameters
    ----------
    results : dict
        The ``evaluate`` JSON (``{"n": ..., "methods": {...}}``).
    path : path-like
        PNG to write.
    """
    plt = _pyplot()
    methods = results["methods"]
    names = list(methods)
    ncols = max(len(names), 2)
    fig = plt.figure(figsize=(3.2 * ncols, 7.2))
    grid = fig.add_gridspec(2, ncols, height_ratios=[1, 1.1], hspace=0.45, wspace=0.35)
    for i, name in enumerate(names):
        ax = fig.add_subplot(grid[0, i])
        cm = np.array(methods[name]["confusion"], dtype=float)
        ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, f"{v:.3f}", ha="center", va="center",
                    color="white" if v > 0.6 else "black", fontsize=11)
        ax.set_xticks([0, 1], ["blend", "not blend"])
        ax.set_yticks([0, 1], ["blend", "not blend"])
        ax.set_xlabel("true class")
        if i == 0:
            ax.set_ylabel("predicted")
        ax.set_title(f"{name}\naccuracy {methods[name]['accuracy']:.3f}", fontsize=10)
    half = ncols // 2
    ax_noise = fig.add_subplot(grid[1, :half])
    ax_sep = fig.add_subplot(grid[1, half:])
    for name in names:
        m = methods[name]
        noise = [b["noise"] for b in m["by_noise"]]
        acc = [b["accuracy"] for b in m["by_noise"]]
        ax_noise.plot(noise, acc, "o-", label=name)
        centres, rec = [], []
        for b in m["by_separation"]:
            if b["blend_recall"] is None:
                continue
            hi = b["max"] if b["max"] is not None else b["min"] + 5
            centres.append(0.5 * (b["min"] + hi))
            rec.append(b["blend_recall"])
        ax_sep.plot(centres, rec, "o-", label=name)
    ax_noise.set_xlabel("noise sigma (ADU)")
    ax_noise.set_ylabel("accuracy")
    ax_noise.set_ylim(0, 1.02)
    ax_noise.grid(alpha=0.3)
    ax_noise.legend(fontsize=9)
    ax_sep.set_xlabel("separation of the blended pair (px, bins <5, 5-10, 10-15, >=15)")
    ax_sep.set_ylabel("blend recall")
    ax_sep.set_ylim(0, 1.02)
    ax_sep.grid(alpha=0.3)
    ax_sep.legend(fontsize=9)
    fig.suptitle(title or f"{results['n']} stamps", fontsize=12)
    return save_figure(fig, path)
