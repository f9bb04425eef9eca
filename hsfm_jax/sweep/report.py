"""The sweep summary: one row per setting, rebuilt from the settings' result files; its table
(`tables.sweep_markdown`, `tables.sweep_csv`), plot and JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hsfm_jax import checkpointing, results, tables


def table_columns(num_groups: int) -> list[tuple[str, str, str]]:
    """(split, metric, header) of the table: the val selection metric first, then test."""
    base = results.GROUP_COLUMNS if num_groups else results.CLASS_COLUMNS
    return [c for c in base if c[0] == "val"] + [c for c in base if c[0] != "val"]


def build_report(records: Sequence[dict], names: Sequence[str], *, num_groups: int) -> dict:
    """The sweep report from per-setting records (as written to ``settings/<index>.json``).

    Returns a dict with ``names`` (swept names), ``columns``, ``rows`` (one per setting: the
    overrides, num_seeds, and mean/std of each column metric as fractions) and ``selected`` (the
    index of the row with the best mean val selection metric; ties go to the first; diverged
    settings are never selected).
    """
    cols = table_columns(num_groups)
    rows = []
    for record in sorted(records, key=lambda r: r["index"]):
        row = {
            "index": record["index"],
            "setting": record["name"],
            **{name: record["overrides"][name] for name in names},
            "num_seeds": record["num_seeds"],
        }
        for split, metric, _ in cols:
            entry = record["metrics"][split][metric]
            row[f"{split}_{metric}_mean"] = entry["mean"]
            row[f"{split}_{metric}_std"] = entry["std"]
        row["selection_metric"] = record["selection_metric"]
        row["diverged"] = bool(record.get("diverged"))
        rows.append(row)
    scores = [
        -np.inf
        if row["diverged"] or (s := row[f"val_{row['selection_metric']}_mean"]) is None
        else s
        for row in rows
    ]
    selectable = [s for s in scores if s > -np.inf]
    selected = rows[int(np.argmax(scores))]["index"] if selectable else None
    return {
        "names": list(names),
        "columns": [{"split": s, "metric": m, "header": h} for s, m, h in cols],
        "rows": rows,
        "selected": selected,
    }


def plot(report: dict, path: str | Path) -> None:
    """Test WGA (mean ± std over seeds) against each swept name, like the paper's Figs. 3-4.

    One panel per swept name; one line per combination of the other swept values.
    """
    # The object-oriented API renders with Agg and skips importing pyplot (seconds on a busy CPU).
    from matplotlib.figure import Figure

    names = report["names"] or ["setting"]
    test = next(c for c in report["columns"] if c["split"] == "test")
    key = f"test_{test['metric']}"
    fig = Figure(figsize=(4.2 * len(names), 3.4))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        others = [n for n in report["names"] if n != name]
        values = list(dict.fromkeys(row.get(name, row["index"]) for row in report["rows"]))
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        lines: dict[tuple, list[dict]] = {}
        for row in report["rows"]:
            lines.setdefault(tuple(row[n] for n in others), []).append(row)
        for other_values, rows in lines.items():
            xs = [row.get(name, row["index"]) for row in rows]
            xs = xs if numeric else [values.index(x) for x in xs]
            means = [np.nan if r[f"{key}_mean"] is None else 100 * r[f"{key}_mean"] for r in rows]
            stds = [100 * (r[f"{key}_std"] or 0.0) for r in rows]
            label = ", ".join(f"{n}={v}" for n, v in zip(others, other_values, strict=True)) or None
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
        spread = numeric and min(values) > 0 and max(values) / min(values)
        if spread and (
            spread >= 100 or (spread >= 10 and any(isinstance(v, float) for v in values))
        ):
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(values if numeric else range(len(values)), [str(v) for v in values])
        ax.set_xlabel(name)
        ax.set_ylabel(f"{test['header']} (%)")
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(f"{report.get('dataset', '')} sweep: mean ± std over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_outputs(report: dict, workdir: str | Path) -> None:
    """sweep.md, sweep.csv, sweep.json and sweep.png in `workdir`."""
    workdir = Path(workdir)
    (workdir / "sweep.md").write_text(tables.sweep_markdown(report))
    (workdir / "sweep.csv").write_text(tables.sweep_csv(report))
    checkpointing.write_json_atomic(workdir / "sweep.json", report)
    plot(report, workdir / "sweep.png")
