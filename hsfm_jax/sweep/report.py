"""The sweep summary: one row per setting, rebuilt from the settings' result files; its table
(`tables.sweep_markdown`, `tables.sweep_csv`), plot and JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hsfm_jax.reporting import results, run_report, tables
from hsfm_jax.runtime import checkpointing


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
    """Writes `figure(report)` to `path` (PNG)."""
    figure(report).savefig(path, dpi=120)


def figure(report: dict):
    """The val selection metric (solid, what picks the setting) and the test metric (dashed),
    mean ± std over seeds, against each swept name, like the paper's Figs. 3-4; the chosen
    setting (best mean val selection metric) is starred.

    One panel per swept name; one colour per combination of the other swept values.
    """
    # The object-oriented API renders with Agg and skips importing pyplot (seconds on a busy CPU).
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    names = report["names"] or ["setting"]
    metric = next((r["selection_metric"] for r in report["rows"]), "wga")
    headers = {(c["split"], c["metric"]): c["header"] for c in report["columns"]}
    val_key, test_key = f"val_{metric}", f"test_{metric}"
    val_header = headers.get(("val", metric), val_key)
    test_header = headers.get(("test", metric), test_key)
    percent = lambda value: np.nan if value is None else 100 * value
    fig = Figure(figsize=(4.6 * len(names), 3.8), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        others = [n for n in report["names"] if n != name]
        values = list(dict.fromkeys(row.get(name, row["index"]) for row in report["rows"]))
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        lines: dict[tuple, list[dict]] = {}
        for row in report["rows"]:
            lines.setdefault(tuple(row[n] for n in others), []).append(row)
        handles = []
        for other_values, rows in lines.items():
            xs = [row.get(name, row["index"]) for row in rows]
            xs = xs if numeric else [values.index(x) for x in xs]
            label = ", ".join(f"{n}={v}" for n, v in zip(others, other_values, strict=True))
            val = ax.errorbar(
                xs,
                [percent(r[f"{val_key}_mean"]) for r in rows],
                yerr=[100 * (r[f"{val_key}_std"] or 0.0) for r in rows],
                marker="o",
                capsize=3,
            )
            colour = val.lines[0].get_color()
            ax.errorbar(
                xs,
                [percent(r[f"{test_key}_mean"]) for r in rows],
                yerr=[100 * (r[f"{test_key}_std"] or 0.0) for r in rows],
                marker=".",
                ls="--",
                capsize=2,
                color=colour,
                alpha=0.6,
            )
            if label:
                handles.append(Line2D([], [], color=colour, marker="o", label=label))
            for x, row in zip(xs, rows, strict=True):
                if row["index"] == report.get("selected"):
                    ax.scatter(
                        [x],
                        [percent(row[f"{val_key}_mean"])],
                        marker="*",
                        s=220,
                        color="gold",
                        edgecolor="k",
                        zorder=5,
                    )
        handles += [
            Line2D([], [], color="k", marker="o", label=f"{val_header} (selects)"),
            Line2D([], [], color="k", marker=".", ls="--", alpha=0.6, label=test_header),
            Line2D(
                [],
                [],
                color="gold",
                marker="*",
                markeredgecolor="k",
                ms=12,
                ls="",
                label="chosen setting",
            ),
        ]
        spread = numeric and min(values) > 0 and max(values) / min(values)
        if spread and (
            spread >= 100 or (spread >= 10 and any(isinstance(v, float) for v in values))
        ):
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(values if numeric else range(len(values)), [str(v) for v in values])
        ax.set_xlabel(name)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{val_header} vs {name}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=7)
    fig.suptitle(f"{report.get('dataset', '')} sweep: mean ± std over seeds", fontsize=10)
    return fig


def write_outputs(report: dict, workdir: str | Path) -> None:
    """sweep.md, sweep.csv, sweep.json, sweep.png and report.html (the figure and the table on
    one self-contained page) in `workdir`."""
    workdir = Path(workdir)
    markdown = tables.sweep_markdown(report)
    (workdir / "sweep.md").write_text(markdown)
    (workdir / "sweep.csv").write_text(tables.sweep_csv(report))
    checkpointing.write_json_atomic(workdir / "sweep.json", report)
    plot(report, workdir / "sweep.png")
    title = f"{report.get('dataset', '?')} / {report.get('backbone', '?')}: sweep"
    caption = "Val selection metric per setting, the chosen one starred (sweep.png)"
    run_report.write_page(
        workdir / "report.html",
        title,
        title,
        f"{len(report['rows'])} settings of {', '.join(report['names'])}, "
        f"{report['rows'][0]['num_seeds'] if report['rows'] else 0} seed(s) each",
        [
            f"<figure><figcaption>{caption}</figcaption>",
            run_report.png_inline((workdir / "sweep.png").read_bytes(), "sweep") + "</figure>",
            run_report.markdown_html(markdown),
        ],
    )
