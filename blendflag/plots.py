"""Figures astronomers would rather look at than read (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blendflag.io.atomic import atomic_output


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
    width = max(3.0 * len(names), 9.0)
    fig = plt.figure(figsize=(width, 7.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.05])
    axes = np.atleast_1d(top.subplots(1, len(names)))
    for ax, name in zip(axes, names, strict=True):
        cm = np.array(methods[name]["confusion"], dtype=float)
        ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            ax.text(
                c,
                r,
                f"{v:.3f}",
                ha="center",
                va="center",
                color="white" if v > 0.6 else "black",
                fontsize=11,
            )
        ax.set_xticks([0, 1], ["blend", "not blend"])
        ax.set_yticks([0, 1], ["blend", "not blend"])
        ax.set_xlabel("true class")
        ax.set_ylabel("predicted")
        ax.set_title(f"{name}: accuracy {methods[name]['accuracy']:.3f}", fontsize=10)
    ax_noise, ax_sep = bottom.subplots(1, 2)
    labels = ["<5", "5-10", "10-15", ">=15"]
    for name in names:
        m = methods[name]
        noise = [b["noise"] for b in m["by_noise"]]
        acc = [b["accuracy"] for b in m["by_noise"]]
        ax_noise.plot(noise, acc, "o-", label=name)
        rec = [
            b["blend_recall"] if b["blend_recall"] is not None else np.nan
            for b in m["by_separation"]
        ]
        ax_sep.plot(range(len(rec)), rec, "o-", label=name)
    ax_noise.set_xlabel("noise sigma (ADU)")
    ax_noise.set_ylabel("accuracy")
    ax_noise.set_title("accuracy versus noise", fontsize=10)
    ax_sep.set_xticks(range(len(labels)), labels)
    ax_sep.set_xlabel("separation of the blended pair (px)")
    ax_sep.set_ylabel("blend recall")
    ax_sep.set_title("blend recall versus separation", fontsize=10)
    for ax in (ax_noise, ax_sep):
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="lower right")
    fig.suptitle(title or f"{results['n']} stamps", fontsize=12)
    return save_figure(fig, path)


#: The requirement band on m drawn in the comparison plot (Stage-IV surveys).
M_REQUIREMENT = 2e-3


def _values(rows, key):
    vals = np.array([r.get(key) if r.get(key) is not None else np.nan for r in rows])
    errs = np.array([r.get(f"{key}_err") or 0.0 for r in rows])
    return vals, errs


def plot_compare(results: dict, path) -> Path:
    """m per selection, its differences to ``all`` and to the truth, c, and the fraction kept.

    Error bars are bootstrap standard deviations; the differences' error bars
    come from the same bootstrap draws (paired), so they are those of the
    difference. The grey band is the requirement |m| < 2e-3.
    """
    plt = _pyplot()
    rows = results["selections"]
    names = [r["name"] for r in rows]
    y = np.arange(len(rows))[::-1]
    fig, axes = plt.subplots(
        1, 4, figsize=(15, 1.6 + 0.7 * len(rows)), sharey=True, layout="constrained"
    )
    ax = axes[0]
    ax.axvspan(-M_REQUIREMENT, M_REQUIREMENT, color="0.85", label="|m| < 2e-3")
    vals, errs = _values(rows, "m")
    ax.errorbar(vals, y, xerr=errs, fmt="o", color="C0", capsize=3, label="with R_S")
    vals, errs = _values(rows, "m_noRS")
    ax.errorbar(
        vals, y - 0.15, xerr=errs, fmt="s", color="C1", capsize=3, mfc="none", label="without R_S"
    )
    ax.set_xlabel("multiplicative bias m")
    ax.legend(fontsize=8, loc="best")
    ax = axes[1]
    for k, (key, label) in enumerate(
        (("dm_vs_all", "vs all"), ("dm_vs_truth", "vs no_true_blends"))
    ):
        vals, errs = _values(rows, key)
        ax.errorbar(
            vals,
            y - 0.15 * k,
            xerr=errs,
            fmt="o" if k == 0 else "D",
            color=f"C{k + 2}",
            capsize=3,
            label=label,
        )
    ax.set_xlabel("difference in m (paired errors)")
    ax.legend(fontsize=8, loc="best")
    ax = axes[2]
    for k, key in enumerate(("c1", "c2")):
        vals, errs = _values(rows, key)
        ax.errorbar(
            vals,
            y - 0.15 * k,
            xerr=errs,
            fmt="o" if k == 0 else "s",
            color=f"C{k + 4}",
            capsize=3,
            label=key,
        )
    ax.set_xlabel("additive bias c")
    ax.legend(fontsize=8, loc="best")
    for ax in axes[:3]:
        ax.axvline(0, color="k", lw=0.8)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
        ax.grid(alpha=0.3)
    kept = [r.get("fraction_kept") or 0 for r in rows]
    axes[3].barh(y, kept, color="C2")
    for yi, k in zip(y, kept, strict=True):
        axes[3].text(min(k, 0.98), yi, f" {k:.3f}", va="center", ha="right" if k > 0.9 else "left")
    axes[3].set_xlim(0, 1)
    axes[3].set_xlabel("fraction of sources kept")
    axes[0].set_yticks(y, names)
    pairs = ", ±g pairs" if results.get("shear_pairs") else ""
    truth = results.get("true_shear")
    fig.suptitle(
        f"shear per selection ({results['engine']}; true shear {truth}{pairs}); "
        "error bars: bootstrap over rotated pairs x sign",
        fontsize=11,
    )
    return save_figure(fig, path)
