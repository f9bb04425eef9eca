"""The comparison figure of a run (results.png / results.svg) and HSFM's training curves.

`results_figure(report)` draws, from results.json's report: per method row, test worst-group
accuracy (worst-class accuracy without test groups) and test mean accuracy as the seed mean with
every seed's value as a dot and the ± std as a bar, the bootstrap interval of the seed-mean when
the run computed one, and whether the row read train / val group labels (✓ / ✗, as the tables);
beside it, each row's test accuracy per group (per class without groups) as a heat map.
`curves_figure(history)` draws HSFM's per-epoch history (history.json).

Figures are built with `matplotlib.figure.Figure` (the Agg canvas), without importing pyplot.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# Colours of the two metrics (colour-blind safe pair of matplotlib's tab10).
_WORST, _MEAN = "#1f77b4", "#ff7f0e"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _mark(used: bool) -> str:
    return "✓" if used else "✗"


def worst_metric(report: dict) -> tuple[str, str]:
    """(metric key, label) of the worst-segment accuracy: WGA with test groups, else worst-class."""
    any_row = next(iter(report["methods"].values()))
    wga = any_row["test"].get("wga", {}).get("per_seed", [])
    if report.get("group_names") and wga and all(v is not None for v in wga):
        return "wga", "worst-group acc"
    return "worst_class_acc", "worst-class acc"


def _per_seed(row: dict, metric: str) -> np.ndarray:
    values = row["test"][metric]["per_seed"]
    return np.asarray([np.nan if v is None else v for v in values], np.float64) * 100


def results_figure(report: dict):
    """The comparison figure of results.json's `report` (a matplotlib `Figure`)."""
    rows = list(report["methods"])
    metric, metric_label = worst_metric(report)
    segments = "group" if report.get("group_names") else "class"
    names = report.get("group_names") or report.get("class_names") or []
    per_group_key = "group_acc" if segments == "group" else "class_acc"
    height = 2.0 + 0.45 * len(rows)
    fig = _figure(11.5, height)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.35, 1]})
    y = np.arange(len(rows))[::-1].astype(np.float64)
    offsets = {metric: 0.17, "mean_acc": -0.17}
    colours = {metric: _WORST, "mean_acc": _MEAN}
    labels = {metric: f"test {metric_label}", "mean_acc": "test mean acc"}
    for key in (metric, "mean_acc"):
        for i, row in enumerate(rows):
            values = _per_seed(report["methods"][row], key)
            mean, std = np.nanmean(values), np.nanstd(values)
            at = y[i] + offsets[key]
            left.barh(
                at,
                mean,
                height=0.32,
                color=colours[key],
                alpha=0.35,
                label=labels[key] if i == 0 else None,
            )
            left.errorbar(mean, at, xerr=std, fmt="none", ecolor=colours[key], capsize=3, lw=1.2)
            left.scatter(
                values,
                np.full(values.shape, at),
                s=10,
                color=colours[key],
                zorder=3,
                label="one seed" if (i == 0 and key == metric) else None,
            )
    bootstrap_shown = False
    for i, row in enumerate(rows):
        interval = report["methods"][row].get("bootstrap")
        if interval and interval.get("metric") == metric:
            low, high = (100 * v for v in interval["seed_mean"])
            left.plot(
                [low, high],
                [y[i] + 0.38] * 2,
                color="k",
                lw=2.5,
                solid_capstyle="butt",
                label=None if bootstrap_shown else "95% bootstrap CI (seed mean)",
                zorder=4,
            )
            bootstrap_shown = True
    tick_labels = []
    for row in rows:
        use = report["methods"][row].get("group_use", {})
        marks = f"{_mark(use.get('train', False))} / {_mark(use.get('val', False))}"
        tick_labels.append(f"{row}  [{marks}]")
    left.set_yticks(y, tick_labels, fontsize=8)
    lowest = min(
        np.nanmin(_per_seed(report["methods"][r], k)) for r in rows for k in (metric, "mean_acc")
    )
    left.set_xlim(max(0.0, np.floor(lowest / 5) * 5 - 5), 100.5)
    left.set_xlabel("test accuracy (%): bar = seed mean, line = ± std, dots = seeds")
    left.set_ylabel("method  [group labels read: train / val]")
    seeds = report.get("num_seeds", "?")
    left.set_title(f"test {metric_label} and mean accuracy, {seeds} seed(s)", fontsize=10)
    left.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower left", ncol=4, fontsize=8, frameon=False)

    matrix = np.full((len(rows), len(names)), np.nan)
    for i, row in enumerate(rows):
        values = report["methods"][row]["test"].get(per_group_key, {}).get("mean")
        if values is not None and len(values) == len(names):
            matrix[i] = [np.nan if v is None else 100 * v for v in values]
    image = right.imshow(
        matrix,
        cmap="viridis",
        vmin=np.nanmin(matrix) if np.isfinite(matrix).any() else 0,
        vmax=100,
        aspect="auto",
    )
    annotate = matrix.size <= 400  # the numbers stay readable; the colours show the rest
    for i in range(matrix.shape[0] if annotate else 0):
        for j in range(matrix.shape[1]):
            if np.isfinite(matrix[i, j]):
                dark = matrix[i, j] < np.nanmean(matrix)
                right.text(
                    j,
                    i,
                    f"{matrix[i, j]:.1f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    right.set_yticks(np.arange(len(rows)), rows, fontsize=8)
    if len(names) <= 40:
        right.set_xticks(np.arange(len(names)), names, fontsize=7, rotation=30, ha="right")
    right.set_xlabel(segments)
    right.set_title(f"test accuracy per {segments} (%), seed mean", fontsize=10)
    fig.colorbar(image, ax=right, label="accuracy (%)", fraction=0.05)
    fig.suptitle(f"{report.get('dataset', '?')} / {report.get('backbone', '?')}", fontsize=11)
    return fig


def _band(ax, values: np.ndarray, label: str, **kw) -> None:
    """Seed mean over epochs with a ± std band; `values` (S, E)."""
    mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    epochs = np.arange(1, len(mean) + 1)
    (line,) = ax.plot(epochs, mean, label=label, **kw)
    ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)


def curves_figure(
    history: Mapping[str, np.ndarray], group_names=(), title: str = "", best_epochs=()
):
    """HSFM's per-epoch history (history.json's "history", arrays (S, E, ...)) as four panels;
    `best_epochs` (per seed, 1-based: the epochs val selection chose) are marked."""
    h = {k: np.asarray(v, np.float64) for k, v in history.items()}
    fig = _figure(10, 6.4)
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    metric = "wga" if "val_wga" in h and np.isfinite(h["val_wga"]).any() else "worst_class_acc"
    name = "WGA" if metric == "wga" else "worst-class acc"
    for split, style in (("val", "-"), ("test", "--")):
        if f"{split}_{metric}" in h:
            _band(ax, 100 * h[f"{split}_{metric}"], f"{split} {name}", ls=style, color=_WORST)
        if f"{split}_mean_acc" in h:
            _band(ax, 100 * h[f"{split}_mean_acc"], f"{split} mean acc", ls=style, color=_MEAN)
    for i, epoch in enumerate(sorted(set(int(e) for e in best_epochs))):
        label = "epoch chosen by val (a seed)" if i == 0 else None
        ax.axvline(epoch, color="grey", ls=":", lw=1, label=label)
    ax.set(title="accuracy of each epoch's head", xlabel="epoch", ylabel="accuracy (%)")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    _band(ax, h["outer_loss_before"], "before the meta-steps")
    _band(ax, h["outer_loss_after"], "after the meta-steps")
    ax.set(title="outer (hard-set) loss", xlabel="epoch", ylabel="cross-entropy")
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    _band(ax, h["edit_norm"], "||H - H0|| (Frobenius)")
    ax.set(title="support edit norm", xlabel="epoch", ylabel="norm")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    counts = h.get("hard_set_group_counts")
    if counts is not None and counts.ndim == 3 and counts.shape[-1]:
        fractions = counts / np.maximum(counts.sum(-1, keepdims=True), 1)
        for g in range(counts.shape[-1]):
            label = group_names[g] if g < len(group_names) else f"group {g}"
            _band(ax, fractions[..., g], label)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no group labels", ha="center", va="center", transform=ax.transAxes)
    ax.set(title="hard-set composition", xlabel="epoch", ylabel="fraction per group", ylim=(0, 1))
    seeds = next(iter(h.values())).shape[0]
    fig.suptitle(f"{title}HSFM per epoch: mean ± std over {seeds} seed(s)", fontsize=11)
    return fig


def save(fig, path_stem: str | Path, formats=("png", "svg")) -> list[Path]:
    """Writes `fig` as <path_stem>.<format> for each format; returns the paths."""
    from hsfm_jax.runtime import atomic

    paths = []
    for fmt in formats:
        path = Path(f"{path_stem}.{fmt}")
        with atomic.atomic_write(path) as f:
            fig.savefig(f, format=fmt, metadata=_metadata(fmt))
        paths.append(path)
    return paths


def _metadata(fmt: str) -> dict | None:
    """No creation date or software version: the same figure gives the same file."""
    if fmt == "svg":
        return {"Date": None, "Creator": None}
    if fmt == "png":
        return {"Software": None}
    return None


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata=_metadata("png"))
    return buffer.getvalue()
