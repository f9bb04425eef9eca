"""The analysis plots of an HSFM run: history curves, edit geometry, PCA of the support."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hsfm_jax.reporting import analysis


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(ax, agg: dict, key: str, label: str, scale: float = 1.0, top: float = np.inf, **kw):
    """Mean line and a ± std band (clipped to [0, top]) of a history field over epochs."""
    mean, std = agg[key]["mean"] * scale, agg[key]["std"] * scale
    epochs = np.arange(1, len(mean) + 1)
    (line,) = ax.plot(epochs, mean, label=label, **kw)
    low, high = np.maximum(mean - std, 0.0), np.minimum(mean + std, top)
    ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, lw=0)


def plot_curves(run: dict, path: Path) -> None:
    plt = _plt()
    agg = analysis.aggregate_history(run["history"])
    data = run["data"]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), dpi=80)
    ax = axes[0, 0]
    metric = "wga" if "val_wga" in agg else "mean_acc"
    name = "WGA" if metric == "wga" else "acc"
    _band(ax, agg, f"val_{metric}", f"val {name}", 100, top=100)
    _band(ax, agg, f"test_{metric}", f"test {name}", 100, top=100)
    _band(ax, agg, "val_mean_acc", "val mean acc", 100, top=100, ls="--")
    _band(ax, agg, "test_mean_acc", "test mean acc", 100, top=100, ls="--")
    ax.set(title="accuracy of each epoch's head", xlabel="epoch", ylabel="accuracy (%)")
    ax.set_ylim(None, 100.5)
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    _band(ax, agg, "outer_loss_before", "before meta-steps")
    _band(ax, agg, "outer_loss_after", "after meta-steps")
    ax.set(title="outer (hard-set) loss", xlabel="epoch", ylabel="cross-entropy")
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    _band(ax, agg, "edit_norm", "||H - H0|| (Frobenius)")
    ax.set(title="support edit norm", xlabel="epoch", ylabel="norm")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    counts = run["history"]["hard_set_group_counts"]
    if counts.shape[-1]:
        frac = analysis.hard_set_group_fractions(counts)  # (S, E, G)
        mean, std = frac.mean(axis=0), frac.std(axis=0)
        epochs = np.arange(1, mean.shape[0] + 1)
        for g in range(mean.shape[1]):
            (line,) = ax.plot(epochs, mean[:, g], label=data.group_names[g])
            ax.fill_between(
                epochs,
                mean[:, g] - std[:, g],
                mean[:, g] + std[:, g],
                color=line.get_color(),
                alpha=0.2,
                lw=0,
            )
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no group labels", ha="center", va="center", transform=ax.transAxes)
    ax.set(title="hard-set composition", xlabel="epoch", ylabel="fraction per group", ylim=(0, 1))
    fig.suptitle(
        f"{data.meta['dataset']} / {data.meta['backbone']}: {counts.shape[0]} seed(s), mean ± std",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _class_bars(ax, geo: dict, keys: list[str], labels: list[str]) -> None:
    """Per class, bars (mean ± std over seeds) of the fields `keys` of each class entry."""
    width = 0.8 / len(geo["classes"])
    x = np.arange(len(keys))
    for i, entry in enumerate(geo["classes"]):
        ax.bar(
            x + i * width,
            [entry[k]["mean"] for k in keys],
            width,
            yerr=[entry[k]["std"] for k in keys],
            label=f"class {entry['class_name']}",
            capsize=2,
        )
    ax.set_xticks(x + width * (len(geo["classes"]) - 1) / 2, labels, fontsize=8)


def plot_geometry(geo: dict, path: Path) -> None:
    """Cosines (-1..1) and energy fractions (0..1, log scale: chance is 1/d) on their own axes."""
    plt = _plt()
    panels = 3 if "energy_by_dims" in geo else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.6 * panels, 3.9), dpi=80, squeeze=False)
    ax = axes[0, 0]
    _class_bars(
        ax,
        geo,
        ["cos_spurious", "cos_class"],
        ["spurious direction", "class direction"],
    )
    ax.axhline(0, color="k", lw=0.5)
    ax.set(title="cosine of the mean edit with", ylabel="cosine", ylim=(-1, 1))
    ax.set_xlabel("direction (within-class spurious / class-discriminative)", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax = axes[0, 1]
    _class_bars(
        ax,
        geo,
        ["point_energy_spurious", "point_energy_class"],
        ["spurious direction", "class direction"],
    )
    chance = geo["classes"][0]["chance_energy"]["mean"]
    ax.axhline(chance, color="grey", ls=":", lw=1.5, label=f"chance 1/d = {chance:.2g}")
    values = [
        entry[k]["mean"]
        for entry in geo["classes"]
        for k in ("point_energy_spurious", "point_energy_class")
    ]
    finite = [v for v in values + [chance] if np.isfinite(v) and v > 0]
    ax.set_yscale("log")
    ax.set_ylim(min(finite) / 3 if finite else 1e-4, 1)
    ax.set(title="energy fraction of the edits along", ylabel="fraction of squared edit (log)")
    ax.set_xlabel("direction (per support point, mean ± std over seeds)", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if panels == 3:
        ax = axes[0, 2]
        blocks = geo["energy_by_dims"]
        names = list(blocks)
        ax.bar(
            names,
            [blocks[n]["mean"] for n in names],
            yerr=[blocks[n]["std"] for n in names],
            capsize=3,
            label="edit energy",
        )
        ax.scatter(
            names,
            [blocks[n]["chance"] for n in names],
            color="k",
            marker="_",
            s=400,
            label="share of dims",
            zorder=3,
        )
        ax.set(title="synthetic: edit energy per block of dims", ylim=(0, 1))
        ax.set(xlabel="block of feature dimensions", ylabel="fraction of squared edit")
        ax.legend(fontsize=7)
    fig.suptitle("Where HSFM moves the support (paper Sec. 5.3)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_pca(run: dict, seed: int, path: Path) -> dict:
    plt = _plt()
    data = run["data"]
    val = data.val
    rows = run["support_indices"][seed]
    support0 = np.asarray(data.train.features[rows], np.float64)
    support = run["support"][seed]
    labels = data.train.labels[rows]
    fitted_on = np.concatenate([support0, np.asarray(val.features, np.float64)])
    mean, comps = analysis.pca_fit(fitted_on, 2)
    centred = fitted_on - mean
    explained = np.sum((centred @ comps.T) ** 2, axis=0) / max(np.sum(centred**2), 1e-300)
    v2 = analysis.pca_project(val.features, mean, comps)
    p0, p1 = analysis.pca_project(support0, mean, comps), analysis.pca_project(support, mean, comps)
    hard = run["history"]["hard_set_indices"][seed, -1]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), dpi=80)
    cmap = plt.get_cmap("tab10")
    ax = axes[0]
    colour_by = val.groups if val.has_groups and data.num_groups else val.labels
    names = data.group_names if val.has_groups and data.num_groups else data.class_names
    ax.scatter(v2[:, 0], v2[:, 1], s=9, c=[cmap(i % 10) for i in colour_by], alpha=0.45, lw=0)
    for i, name in enumerate(names):
        sel = hard[colour_by[hard] == i]
        ax.scatter(
            v2[sel, 0],
            v2[sel, 1],
            s=18,
            color=cmap(i % 10),
            edgecolor="k",
            lw=0.4,
            label=f"{name} ({len(sel)})",
        )
    ax.scatter([], [], s=9, color="grey", alpha=0.45, lw=0, label="val (colour: group)")
    ax.set(title=f"val and the last hard set Q (outlined), seed {seed}")
    ax.legend(fontsize=7, title="group (examples in Q)", title_fontsize=7)
    ax = axes[1]
    ax.scatter(v2[:, 0], v2[:, 1], s=9, c="darkgrey", alpha=0.6, lw=0, label="val")
    for c in range(data.num_classes):
        sel = labels == c
        colour = cmap((c + 5) % 10)
        ax.scatter(
            p0[sel, 0],
            p0[sel, 1],
            s=16,
            color=colour,
            marker="o",
            alpha=0.6,
            label=f"{data.class_names[c]}: H0",
        )
        ax.scatter(
            p1[sel, 0],
            p1[sel, 1],
            s=28,
            color=colour,
            marker="x",
            label=f"{data.class_names[c]}: edited",
        )
        for a, b in zip(p0[sel], p1[sel], strict=True):
            ax.annotate("", b, a, arrowprops=dict(arrowstyle="->", color=colour, lw=0.5, alpha=0.5))
    ax.set(title="support before -> after the edit")
    ax.legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel(f"PC 1 of H0 ∪ val ({100 * explained[0]:.1f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f}% of variance)")
    fig.suptitle("PCA of the features (fitted on the initial support H0 and val)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    out_of_plane = np.linalg.norm(
        (support - support0) - ((support - support0) @ comps.T) @ comps, axis=1
    ) / np.maximum(np.linalg.norm(support - support0, axis=1), 1e-12)
    return {
        "seed": seed,
        "edit_fraction_out_of_pca_plane": float(np.mean(out_of_plane**2)),
        "explained_variance": [float(v) for v in explained],
    }


# ----------------------------------------------------------------------------- neighbours
