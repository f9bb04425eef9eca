r"""See what an HSFM run did: curves, edit geometry, PCA, nearest neighbours, a one-page report.

  python -m experiments.analyze --workdir=runs/synthetic [--out=DIR] [--seed_index=0] \
      [--points_per_class=2] [--neighbours=5] [--metric=euclidean] [--features_dir=DIR] \
      [--images_root=DIR]

Reads only the run's files (config.json, results.json, history.json, support.npz) and its feature
directory (train and val). Writes to --out (default <workdir>/analysis):

  curves.png            val/test WGA and mean accuracy, outer loss before/after the meta-steps,
                        edit norm and hard-set group composition per epoch, mean ± std over seeds
  edit_geometry.png     per class: cosine and energy fraction of the mean edit along the
                        within-class spurious and the class-discriminative direction (paper
                        Sec. 5.3 in numbers); for synthetic data, energy per block of dimensions
  pca.png               PCA (fitted on H_0 ∪ val) of val, the last epoch's hard set coloured by
                        group, and the support points before -> after the edit
  neighbours.md         for the most-edited support points, the k nearest val examples before and
                        after the edit, with their groups
  contact_sheet.png     the same as images, when ids.txt holds image paths that exist (or the
                        dataset is digit_dominoes, rebuilt from the config meta.json records)
  analysis.json         every number above
  report.md             one page linking the plots and stating the numbers (and clip_probe.md /
                        unclip_grid.png from `feature_export.clip_probe` / `.unclip` if present)

When the run split val (`config.val_split.fraction` > 0), "val" here is the part HSFM's hard set
came from, rebuilt with the run's own split, so the history's hard-set indices point into it.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import ml_collections
import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

from experiments import train
from hsfm_jax import analysis
from hsfm_jax import features as features_lib

RUN_FILES = ("config.json", "results.json", "history.json", "support.npz")


def define_flags() -> None:
    """The CLI flags, defined only when run as a script (importing this module defines none,
    so it can share a process with other absl entry points that also have --workdir)."""
    flags.DEFINE_string("workdir", None, "The run directory (experiments.main --workdir).")
    flags.DEFINE_string("out", "", "Output directory; default <workdir>/analysis.")
    flags.DEFINE_integer("seed_index", 0, "Which seed the PCA and neighbour views show.")
    flags.DEFINE_integer("points_per_class", 2, "Support points per class in the NN table.")
    flags.DEFINE_integer("neighbours", 5, "k nearest val examples per support point.")
    flags.DEFINE_enum("metric", "euclidean", ["euclidean", "cosine"], "NN distance.")
    flags.DEFINE_string("features_dir", "", "Override the run's features_dir.")
    flags.DEFINE_string("images_root", "", "Prefix for relative image paths in ids.txt.")
    flags.mark_flags_as_required(["workdir"])


# ----------------------------------------------------------------------------- loading


def load_run(workdir: str | Path, features_dir: str | Path | None = None) -> dict:
    """The run's files and its feature directory (train, val), checked for consistency."""
    workdir = Path(workdir)
    for name in RUN_FILES:
        if not (workdir / name).is_file():
            hint = " (was HSFM among config.methods?)" if name != "config.json" else ""
            raise FileNotFoundError(f"{workdir / name}: missing{hint}")
    config = json.loads((workdir / "config.json").read_text())
    results = json.loads((workdir / "results.json").read_text())
    history = analysis.history_arrays(json.loads((workdir / "history.json").read_text()))
    with np.load(workdir / "support.npz", allow_pickle=False) as npz:
        support, support_indices = npz["support"], npz["support_indices"]
    path = Path(features_dir or results.get("features_dir") or config["features_dir"])
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: the run's feature directory does not exist here; pass --features_dir"
        )
    data = features_lib.load(path, splits=("train", "val"))
    if config.get("val_split", {}).get("fraction"):
        # The run's "val" (hard set, history indices) was the first part of the stored val.
        data = train.split_validation(ml_collections.ConfigDict(config), data)
    seeds = support.shape[0]
    if support.shape != (seeds, support_indices.shape[1], data.feature_dim):
        raise ValueError(
            f"{workdir / 'support.npz'}: support {support.shape} does not match "
            f"support_indices {support_indices.shape} and feature_dim {data.feature_dim}"
        )
    if support_indices.max() >= data.train.num_examples:
        raise ValueError(f"{workdir / 'support.npz'}: support_indices beyond {path}/train")
    return dict(
        config=config,
        results=results,
        history=history,
        support=support,
        support_indices=support_indices,
        data=data,
    )


# ----------------------------------------------------------------------------- numbers


def _mean_std(values) -> dict:
    values = np.asarray(values, np.float64)
    if np.isnan(values).all():  # e.g. no spurious direction without groups
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values))}


def geometry(run: dict) -> dict:
    """Edit geometry per seed and class, aggregated over seeds."""
    data = run["data"]
    val = data.val
    num_classes, num_groups = data.num_classes, data.num_groups
    spurious = np.full((num_classes, data.feature_dim), np.nan)
    info = [{"majority_group": None, "other_groups": []} for _ in range(num_classes)]
    if num_groups and val.has_groups:
        spurious, info = analysis.spurious_directions(
            val.features,
            val.labels,
            val.groups,
            num_classes=num_classes,
            num_groups=num_groups,
            majority_weights=data.train_group_counts(),
        )
    discriminative = analysis.class_directions(
        val.features, val.labels, val.groups, num_classes=num_classes, num_groups=num_groups
    )
    blocks = None
    synthetic = data.meta.get("synthetic")
    if isinstance(synthetic, dict) and "spurious_dims" in synthetic:
        blocks = {name: synthetic[f"{name}_dims"] for name in ("core", "spurious", "noise")}
    per_seed, dims = [], []
    for seed in range(run["support"].shape[0]):
        rows = run["support_indices"][seed]
        support0 = np.asarray(data.train.features[rows], np.float64)
        labels = data.train.labels[rows]
        per_seed.append(
            analysis.edit_geometry(
                support0,
                run["support"][seed],
                labels,
                spurious=spurious,
                discriminative=discriminative,
            )
        )
        if blocks:
            dims.append(analysis.energy_by_dims(run["support"][seed] - support0, blocks))
    keys = [k for k in per_seed[0][0] if k not in ("class",)]
    classes = []
    for c in range(num_classes):
        entry = {"class": c, "class_name": data.class_names[c], **info[c]}
        entry.update({k: _mean_std([s[c][k] for s in per_seed]) for k in keys})
        classes.append(entry)
    out = {"classes": classes, "per_seed": per_seed}
    if blocks:
        sizes = {name: len(v) for name, v in blocks.items()}
        out["energy_by_dims"] = {
            name: {**_mean_std([d[name] for d in dims]), "chance": sizes[name] / data.feature_dim}
            for name in blocks
        }
    return out


def neighbour_summary(run: dict, *, k: int, metric: str) -> dict:
    """Over all support points and seeds: group make-up of their k nearest val examples."""
    data = run["data"]
    val = data.val
    if not (data.num_groups and val.has_groups):
        return {}
    classes = analysis.group_classes(val.labels, val.groups, data.num_groups)
    majority = {}
    counts = data.train_group_counts()
    for c in range(data.num_classes):
        members = [g for g in range(data.num_groups) if classes[g] == c]
        if members:
            majority[c] = max(members, key=lambda g: (counts[g], -g))
    out = {"before": {}, "after": {}}
    for when in out:
        same_class, minority = [], []
        for seed in range(run["support"].shape[0]):
            rows = run["support_indices"][seed]
            points = data.train.features[rows] if when == "before" else run["support"][seed]
            labels = data.train.labels[rows]
            idx, _ = analysis.nearest_neighbours(points, val.features, k, metric=metric)
            g = val.groups[idx]
            same = classes[g] == labels[:, None]
            maj = np.asarray([majority.get(int(c), -1) for c in labels])[:, None]
            same_class.append(same.mean())
            minority.append((same & (g != maj)).mean())
        out[when] = {
            "same_class": _mean_std(same_class),
            "minority_same_class": _mean_std(minority),
        }
    return out


# ----------------------------------------------------------------------------- plots


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
    ax.set(title="accuracy of the current head (%)", xlabel="epoch", ylim=(None, 100.5))
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    _band(ax, agg, "outer_loss_before", "before meta-steps")
    _band(ax, agg, "outer_loss_after", "after meta-steps")
    ax.set(title="outer (hard-set) loss", xlabel="epoch")
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    _band(ax, agg, "edit_norm", "||H - H0||")
    ax.set(title="support edit norm (Frobenius)", xlabel="epoch")
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
    ax.set(title="hard-set composition (fraction per group)", xlabel="epoch", ylim=(0, 1))
    fig.suptitle(
        f"{data.meta['dataset']} / {data.meta['backbone']}: {counts.shape[0]} seed(s), mean ± std",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_geometry(geo: dict, path: Path) -> None:
    plt = _plt()
    panels = 2 if "energy_by_dims" in geo else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.8 * panels, 3.6), dpi=80, squeeze=False)
    ax = axes[0, 0]
    keys = ["cos_spurious", "cos_class", "point_energy_spurious", "point_energy_class"]
    labels = [
        "cos(mean edit,\nspurious)",
        "cos(mean edit,\nclass)",
        "energy along\nspurious",
        "energy along\nclass",
    ]
    width = 0.8 / len(geo["classes"])
    x = np.arange(len(keys))
    for i, entry in enumerate(geo["classes"]):
        ax.bar(
            x + i * width,
            [entry[k]["mean"] for k in keys],
            width,
            yerr=[entry[k]["std"] for k in keys],
            label=entry["class_name"],
            capsize=2,
        )
    chance = geo["classes"][0]["chance_energy"]["mean"]
    ax.axhline(0, color="k", lw=0.5)
    ax.axhline(chance, color="grey", ls=":", lw=1, label="chance energy 1/d")
    ax.set_xticks(x + width * (len(geo["classes"]) - 1) / 2, labels, fontsize=7)
    ax.set(title="edit vs directions (mean ± std over seeds)", ylim=(-1, 1))
    ax.legend(fontsize=7)
    if panels == 2:
        ax = axes[0, 1]
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
        ax.legend(fontsize=7)
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
    mean, comps = analysis.pca_fit(np.concatenate([support0, np.asarray(val.features)]), 2)
    v2 = analysis.pca_project(val.features, mean, comps)
    p0, p1 = analysis.pca_project(support0, mean, comps), analysis.pca_project(support, mean, comps)
    hard = run["history"]["hard_set_indices"][seed, -1]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), dpi=80)
    cmap = plt.get_cmap("tab10")
    ax = axes[0]
    colour_by = val.groups if val.has_groups and data.num_groups else val.labels
    names = data.group_names if val.has_groups and data.num_groups else data.class_names
    ax.scatter(v2[:, 0], v2[:, 1], s=4, c=[cmap(i % 10) for i in colour_by], alpha=0.15, lw=0)
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
    ax.set(title=f"val (faint) and last hard set Q (outlined), seed {seed}")
    ax.legend(fontsize=7, title="group (in Q)", title_fontsize=7)
    ax = axes[1]
    ax.scatter(v2[:, 0], v2[:, 1], s=4, c="lightgrey", lw=0)
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
        ax.set_xlabel("PC 1 (H0 ∪ val)")
        ax.set_ylabel("PC 2")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    out_of_plane = np.linalg.norm(
        (support - support0) - ((support - support0) @ comps.T) @ comps, axis=1
    ) / np.maximum(np.linalg.norm(support - support0, axis=1), 1e-12)
    return {"seed": seed, "edit_fraction_out_of_pca_plane": float(np.mean(out_of_plane**2))}


# ----------------------------------------------------------------------------- neighbours


def neighbour_table(run: dict, seed: int, *, per_class: int, k: int, metric: str) -> list[dict]:
    """The k nearest val rows of the most-edited support points, before and after the edit."""
    data = run["data"]
    rows = run["support_indices"][seed]
    support0 = np.asarray(data.train.features[rows], np.float64)
    support = run["support"][seed]
    labels = data.train.labels[rows]
    chosen = analysis.select_support_points(support0, support, labels, per_class=per_class)
    before, d0 = analysis.nearest_neighbours(support0[chosen], data.val.features, k, metric=metric)
    after, d1 = analysis.nearest_neighbours(support[chosen], data.val.features, k, metric=metric)
    table = []
    for j, i in enumerate(chosen):
        table.append(
            {
                "support_row": int(i),
                "train_index": int(rows[i]),
                "label": int(labels[i]),
                "group": int(data.train.groups[rows[i]]),
                "edit_norm": float(np.linalg.norm(support[i] - support0[i])),
                "before": [int(v) for v in before[j]],
                "before_groups": [int(v) for v in data.val.groups[before[j]]],
                "before_dist": [float(v) for v in d0[j]],
                "after": [int(v) for v in after[j]],
                "after_groups": [int(v) for v in data.val.groups[after[j]]],
                "after_dist": [float(v) for v in d1[j]],
            }
        )
    return table


def _group_name(data, g: int) -> str:
    return data.group_names[g] if 0 <= g < data.num_groups else "?"


def neighbour_markdown(data, table: list[dict], seed: int, metric: str) -> str:
    lines = [
        f"# Nearest val neighbours of the most-edited support points (seed {seed}, {metric})\n",
        "| train row | class | group | edit norm | before: val rows (groups) | after: val rows (groups) |",
        "|---|---|---|---|---|---|",
    ]
    for row in table:
        fmt = lambda idx, gs: ", ".join(
            f"{i} ({_group_name(data, g)})" for i, g in zip(idx, gs, strict=True)
        )
        lines.append(
            f"| {row['train_index']} | {data.class_names[row['label']]} | "
            f"{_group_name(data, row['group'])} | {row['edit_norm']:.3g} | "
            f"{fmt(row['before'], row['before_groups'])} | {fmt(row['after'], row['after_groups'])} |"
        )
    return "\n".join(lines) + "\n"


def image_paths(split: features_lib.Split, rows, root: Path | None) -> list[Path] | None:
    """Paths of the images of `rows` when ids.txt holds paths that exist, else None."""
    if split.ids is None:
        return None
    paths = []
    for r in rows:
        p = Path(split.ids[int(r)])
        if not p.is_absolute() and root is not None:
            p = root / p
        if not p.is_file():
            return None
        paths.append(p)
    return paths


@functools.lru_cache(maxsize=2)
def _digit_dominoes(config_json: str):
    from feature_export.datasets.digit_dominoes import DigitDominoes

    config = json.loads(config_json)
    return DigitDominoes(**{k: v for k, v in config.items() if k != "image_shape"})


def _rebuilt_images(data: features_lib.FeatureSet, split: str, rows) -> list | None:
    """digit_dominoes needs no files: rebuild the split from the config meta.json records.

    Rows are matched by id (ids.txt), and used only when the rebuilt labels and groups of those
    rows equal the feature directory's, so the images are the ones the features came from.
    """
    config = data.meta.get("digit_dominoes")
    stored = data[split]
    if data.meta.get("dataset") != "digit_dominoes" or not isinstance(config, dict):
        return None
    if stored.ids is None:
        return None
    try:
        arrays = _digit_dominoes(json.dumps(config, sort_keys=True)).split_arrays(split)
    except (TypeError, ValueError):
        return None
    where = {name: i for i, name in enumerate(arrays.ids)}
    images = []
    for r in rows:
        i = where.get(stored.ids[int(r)])
        if i is None or (arrays.labels[i], arrays.groups[i]) != (
            stored.labels[r],
            stored.groups[r],
        ):
            return None
        images.append(Image.fromarray(arrays.images[i]).convert("RGB"))
    return images


def load_images(data: features_lib.FeatureSet, split: str, rows, root: Path | None):
    """PIL images of `rows` of a split: from ids.txt paths that exist, or rebuilt for
    digit_dominoes; None when neither is possible."""
    paths = image_paths(data[split], rows, root)
    if paths is None:
        return _rebuilt_images(data, split, rows)
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(im.convert("RGB"))
    return out


def image_grid(
    rows: list[list[tuple]], *, cell: int = 64, header: list[str] | None = None
) -> Image.Image:
    """A grid of captioned images: rows of (PIL image or None, caption) cells -> one PIL image.

    Images are scaled to fit `cell` x `cell` (nearest neighbour, so small digits stay crisp);
    captions may have one newline; None cells read "n/a".
    """
    caption_h, head_h = 24, (14 if header else 0)
    columns = max(len(r) for r in rows)
    out = Image.new("RGB", (columns * cell, head_h + len(rows) * (cell + caption_h)), "white")
    draw = ImageDraw.Draw(out)
    for j, name in enumerate(header or []):
        draw.text((j * cell + 2, 1), name, fill="black")
    for i, row in enumerate(rows):
        top = head_h + i * (cell + caption_h)
        for j, (image, caption) in enumerate(row):
            draw.multiline_text((j * cell + 2, top + 1), caption, fill="black", spacing=1)
            if image is None:
                draw.text((j * cell + cell // 3, top + caption_h + cell // 2), "n/a", fill="grey")
                continue
            image = image.convert("RGB")
            scale = cell / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.NEAREST)
            out.paste(image, (j * cell + (cell - size[0]) // 2, top + caption_h))
    return out


def contact_sheet(run: dict, table: list[dict], root: Path | None, path: Path) -> bool:
    """Support image | k before-neighbours | k after-neighbours per row. False if no images."""
    if not table:
        return False
    data = run["data"]
    sources = load_images(data, "train", [r["train_index"] for r in table], root)
    if sources is None:
        return False
    before = [load_images(data, "val", r["before"], root) for r in table]
    after = [load_images(data, "val", r["after"], root) for r in table]
    rows = []
    for i, row in enumerate(table):
        cells = [
            (sources[i], f"S {data.class_names[row['label']]}\n{_group_name(data, row['group'])}")
        ]
        cells += [
            (im, f"before\n{_group_name(data, g)}")
            for im, g in zip(before[i], row["before_groups"], strict=True)
        ]
        cells += [
            (im, f"after\n{_group_name(data, g)}")
            for im, g in zip(after[i], row["after_groups"], strict=True)
        ]
        rows.append(cells)
    image_grid(rows).save(path)
    return True


# ----------------------------------------------------------------------------- report


def _pm(entry: dict, scale: float = 1.0, digits: int = 2) -> str:
    return f"{entry['mean'] * scale:.{digits}f} ± {entry['std'] * scale:.{digits}f}"


def _result_cell(results: dict, method: str, split: str, metric: str) -> str:
    try:
        return _pm(results["methods"][method][split][metric], 100, 1)
    except (KeyError, TypeError):
        return "–"


def geometry_markdown(geo: dict, data) -> str:
    lines = [
        "| class | majority group → others | points | cos(mean edit, spurious) | "
        "cos(mean edit, class) | shift along spurious | shift along class | "
        "energy along spurious (mean edit / points) | energy along class (mean edit / points) | "
        "coherence | rms edit norm (/ rms ‖H0‖) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in geo["classes"]:
        maj = e["majority_group"]
        groups = (
            f"{_group_name(data, maj)} → {', '.join(_group_name(data, g) for g in e['other_groups'])}"
            if maj is not None
            else "–"
        )
        lines.append(
            f"| {e['class_name']} | {groups} | {e['num_points']['mean']:.0f} | {_pm(e['cos_spurious'])} | "
            f"{_pm(e['cos_class'])} | {_pm(e['shift_spurious'])} | {_pm(e['shift_class'])} | "
            f"{_pm(e['energy_spurious'])} / {_pm(e['point_energy_spurious'])} | "
            f"{_pm(e['energy_class'])} / {_pm(e['point_energy_class'])} | {_pm(e['coherence'])} | "
            f"{e['rms_edit_norm']['mean']:.3g} ({e['relative_edit_norm']['mean']:.2f}×) |"
        )
    chance = geo["classes"][0]["chance_energy"]["mean"]
    text = "\n".join(lines) + (
        f"\n\nMean ± std over seeds. Energy of a random direction: 1/d = {chance:.4f}. Coherence: "
        "||mean edit||² / mean ||edit||² (1 when every support point of the class moved the same "
        "way). Spurious direction: val mean of the class's other groups minus its majority "
        "(largest in train) group, so a positive cosine means 'toward the minority "
        "configuration' (paper Fig. 2). Class direction: centre of the class minus the centre of "
        "the others (negative: toward the other classes). Shift: mean edit projected on the "
        "unnormalised direction, in units of its length (1 = the whole majority → minority gap, "
        "or the whole gap between class centres).\n"
    )
    if "energy_by_dims" in geo:
        blocks = geo["energy_by_dims"]
        text += "\n| block of dims | share of edit energy | share of dims |\n|---|---|---|\n"
        text += "".join(f"| {n} | {_pm(b)} | {b['chance']:.2f} |\n" for n, b in blocks.items())
    return text


def findings(geo: dict, neighbours: dict) -> list[str]:
    """Plain sentences about the numbers (what the README quotes)."""
    out = []
    for e in geo["classes"]:
        cos, en, ch = (
            e["cos_spurious"]["mean"],
            e["point_energy_spurious"]["mean"],
            e["chance_energy"]["mean"],
        )
        if np.isnan(cos):
            continue
        toward = "toward" if cos > 0 else "away from"
        out.append(
            f"{e['class_name']}: the mean edit points {toward} the minority configuration "
            f"(cosine {cos:+.2f} ± {e['cos_spurious']['std']:.2f}, a shift of "
            f"{e['shift_spurious']['mean']:+.2f} majority → minority gaps; cosine with the class "
            f"direction {e['cos_class']['mean']:+.2f}); the individual edits put "
            f"{100 * en:.1f}% of their energy on the spurious direction ({en / ch:.1f}× chance) "
            f"and {100 * e['point_energy_class']['mean']:.1f}% on the class direction; "
            f"coherence {e['coherence']['mean']:.2f}; rms edit {e['relative_edit_norm']['mean']:.2f}× "
            "the rms norm of the embeddings it edits."
        )
    if "energy_by_dims" in geo:
        b = geo["energy_by_dims"]
        verdict = "mostly on" if b["spurious"]["mean"] > 0.5 else "not mostly on"
        out.append(
            "Synthetic dimensions: the edits load "
            + verdict
            + " the spurious dimensions: "
            + ", ".join(
                f"{n} {100 * v['mean']:.0f}% (share of dims {100 * v['chance']:.0f}%)"
                for n, v in b.items()
            )
            + "."
        )
    if neighbours:
        b, a = neighbours["before"], neighbours["after"]
        out.append(
            "Nearest val neighbours of the support points: same-class minority-group share "
            f"{100 * b['minority_same_class']['mean']:.0f}% before -> "
            f"{100 * a['minority_same_class']['mean']:.0f}% after the edit; same-class share "
            f"{100 * b['same_class']['mean']:.0f}% -> {100 * a['same_class']['mean']:.0f}%."
        )
    return out


def render_report(run: dict, summary: dict, files: dict) -> str:
    data, results = run["data"], run["results"]
    h = analysis.aggregate_history(run["history"])
    metric = "wga" if "val_wga" in h else "mean_acc"
    seeds, epochs = run["support"].shape[0], h["edit_norm"]["mean"].shape[0]
    hsfm = results.get("methods", {}).get("hsfm", {})
    lines = [
        f"# HSFM analysis: {data.meta['dataset']} / {data.meta['backbone']}\n",
        f"Run `{summary['workdir']}`: {seeds} seed(s), {epochs} epochs, support "
        f"{run['support'].shape[1]} points, d = {data.feature_dim}. Features `{data.path}`.\n",
        "| method | test WGA | test mean acc | val WGA |\n|---|---|---|---|",
    ]
    for method in ("erm", "backbone_head", "hsfm", "hsfm_last"):
        if method in results.get("methods", {}):
            lines.append(
                f"| {method} | {_result_cell(results, method, 'test', 'wga')} | "
                f"{_result_cell(results, method, 'test', 'mean_acc')} | "
                f"{_result_cell(results, method, 'val', 'wga')} |"
            )
    if "best_epoch" in hsfm:
        lines.append(f"\nBest epoch per seed: {hsfm['best_epoch']}.")
    last = {k: h[k]["mean"][-1] for k in h if h[k]["mean"].ndim == 1}
    lines += [
        "\n## Training curves\n",
        f"![curves]({files['curves']})\n",
        f"Epoch 1 → {epochs}: val {metric} {100 * h[f'val_{metric}']['mean'][0]:.1f} → "
        f"{100 * last[f'val_{metric}']:.1f}%, test {metric} "
        f"{100 * h[f'test_{metric}']['mean'][0]:.1f} → {100 * last[f'test_{metric}']:.1f}%, "
        f"outer loss {h['outer_loss_before']['mean'][0]:.3f} → {last['outer_loss_before']:.3f}, "
        f"edit norm {h['edit_norm']['mean'][0]:.3g} → {last['edit_norm']:.3g} (means over seeds).",
    ]
    counts = run["history"]["hard_set_group_counts"]
    if counts.shape[-1]:
        frac = analysis.hard_set_group_fractions(counts).mean(axis=0)
        lines.append(
            "Hard-set composition, epoch 1 → last: "
            + ", ".join(
                f"{data.group_names[g]} {100 * frac[0, g]:.0f}% → {100 * frac[-1, g]:.0f}%"
                for g in range(frac.shape[1])
            )
            + "."
        )
    lines += [
        "\n## Edit geometry\n",
        f"![edit geometry]({files['geometry']})\n",
        geometry_markdown(summary["geometry"], data),
        "\n## Findings\n",
        *[f"- {s}" for s in summary["findings"]],
        "\n## Support before/after the edit (PCA of H0 ∪ val)\n",
        f"![pca]({files['pca']})\n",
        f"Seed {summary['pca']['seed']}; "
        f"{100 * summary['pca']['edit_fraction_out_of_pca_plane']:.0f}% of the edit energy is "
        "outside the plotted plane, so the arrows show only part of each edit.",
        "\n## Nearest neighbours\n",
        f"[{files['neighbours']}]({files['neighbours']})"
        + (
            f"; images: ![contact sheet]({files['contact_sheet']})"
            if files.get("contact_sheet")
            else " (no contact sheet: ids.txt absent or not image paths that exist; see --images_root)."
        ),
    ]
    if files.get("clip_probe") or files.get("unclip_grid"):
        lines.append("\n## CLIP text probe and unCLIP decoding (feature_export)\n")
        if files.get("clip_probe"):
            lines.append(f"[{files['clip_probe']}]({files['clip_probe']})\n")
        if files.get("unclip_grid"):
            lines.append(f"![unCLIP]({files['unclip_grid']})")
    return "\n".join(lines) + "\n"


def analyze(
    workdir: str | Path,
    out: str | Path | None = None,
    *,
    seed_index: int = 0,
    points_per_class: int = 2,
    neighbours: int = 5,
    metric: str = "euclidean",
    features_dir: str | Path | None = None,
    images_root: str | Path | None = None,
) -> dict:
    """Writes every analysis file for the run in `workdir`; returns the summary (analysis.json)."""
    workdir = Path(workdir)
    out = Path(out) if out else workdir / "analysis"
    run = load_run(workdir, features_dir)
    seeds = run["support"].shape[0]
    if not 0 <= seed_index < seeds:
        raise ValueError(f"seed_index must be in [0, {seeds}), got {seed_index}")
    if not 1 <= neighbours <= run["data"].val.num_examples:
        raise ValueError(
            f"neighbours must be in [1, {run['data'].val.num_examples}], got {neighbours}"
        )
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "curves": "curves.png",
        "geometry": "edit_geometry.png",
        "pca": "pca.png",
        "neighbours": "neighbours.md",
    }
    plot_curves(run, out / files["curves"])
    geo = geometry(run)
    plot_geometry(geo, out / files["geometry"])
    pca = plot_pca(run, seed_index, out / files["pca"])
    table = neighbour_table(
        run, seed_index, per_class=points_per_class, k=neighbours, metric=metric
    )
    (out / files["neighbours"]).write_text(
        neighbour_markdown(run["data"], table, seed_index, metric)
    )
    root = Path(images_root) if images_root else None
    if contact_sheet(run, table, root, out / "contact_sheet.png"):
        files["contact_sheet"] = "contact_sheet.png"
    for key, name in (("clip_probe", "clip_probe.md"), ("unclip_grid", "unclip_grid.png")):
        if (out / name).is_file():  # written earlier by feature_export.clip_probe / .unclip
            files[key] = name
    nn = neighbour_summary(run, k=neighbours, metric=metric)
    summary = {
        "workdir": str(workdir),
        "features_dir": str(run["data"].path),
        "geometry": {
            "classes": geo["classes"],
            **({"energy_by_dims": geo["energy_by_dims"]} if "energy_by_dims" in geo else {}),
        },
        "neighbour_summary": nn,
        "neighbours": table,
        "pca": pca,
        "files": files,
    }
    summary["findings"] = findings(geo, nn)
    (out / "analysis.json").write_text(json.dumps(_plain(summary), indent=2, allow_nan=False))
    (out / "report.md").write_text(render_report(run, summary, files))
    return summary


def _plain(value):
    """JSON-safe copy: numpy scalars to Python, NaN to None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    try:
        summary = analyze(
            FLAGS.workdir,
            FLAGS.out or None,
            seed_index=FLAGS.seed_index,
            points_per_class=FLAGS.points_per_class,
            neighbours=FLAGS.neighbours,
            metric=FLAGS.metric,
            features_dir=FLAGS.features_dir or None,
            images_root=FLAGS.images_root or None,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    out = Path(FLAGS.out or Path(FLAGS.workdir) / "analysis")
    print(
        f"Wrote {', '.join(sorted(summary['files'].values()))}, analysis.json, report.md to {out}"
    )
    for line in summary["findings"]:
        print(f"- {line}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
