"""The prose of an HSFM run's analysis: the neighbour table, the edit-geometry table, the findings
and report.md."""

from __future__ import annotations

import numpy as np

from hsfm_jax.reporting import analysis


def neighbour_markdown(data, table: list[dict], seed: int, metric: str) -> str:
    lines = [
        f"# Nearest val neighbours of the most-edited support points (seed {seed}, {metric})\n",
        "| train row | class | group | edit norm | before: val rows (groups) | after: val rows (groups) |",
        "|---|---|---|---|---|---|",
    ]
    for row in table:
        fmt = lambda idx, gs: ", ".join(
            f"{i} ({analysis.group_name(data, g)})" for i, g in zip(idx, gs, strict=True)
        )
        lines.append(
            f"| {row['train_index']} | {data.class_names[row['label']]} | "
            f"{analysis.group_name(data, row['group'])} | {row['edit_norm']:.3g} | "
            f"{fmt(row['before'], row['before_groups'])} | {fmt(row['after'], row['after_groups'])} |"
        )
    return "\n".join(lines) + "\n"


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
            f"{analysis.group_name(data, maj)} → {', '.join(analysis.group_name(data, g) for g in e['other_groups'])}"
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
    """Plain sentences about the numbers (what docs/analysis.md quotes)."""
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
