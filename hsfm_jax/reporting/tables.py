"""The one renderer of result tables: markdown for runs (results.md) and sweeps (sweep.md), CSV for
sweeps. Cells are percent, mean ± std over seeds; '-' where a metric has no value.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence

from hsfm_jax.reporting import results


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table (no trailing newline)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def percent(mean: float | None, std: float | None) -> str:
    """'12.3 ± 0.4' from fractions; '-' when there is no value."""
    if mean is None:
        return "-"
    return f"{100 * mean:.1f} ± {100 * (std or 0.0):.1f}"


def _format_entry(entry: dict) -> str:
    return percent(entry["mean"], entry["std"])


def _cell(summary: dict, split: str, metric: str) -> str:
    entry = summary.get(split, {}).get(metric)
    if entry is None or entry["mean"] is None:
        return "-"
    if len(entry["per_seed"]) > 1:
        return _format_entry(entry)
    return f"{100 * entry['mean']:.1f}"


# ----------------------------------------------------------------------------- one run


def method_table(
    summaries: Mapping[str, dict],
    *,
    num_groups: int,
    split: str = "test",
    extra_columns: Sequence[tuple[str, Mapping[str, str]]] = (),
) -> str:
    """A method x metric table (percent, mean ± std over seeds); `split` replaces "test".

    `extra_columns`: (header, {row: cell}) appended in order ('-' for a row without a cell).
    """
    columns = results.GROUP_COLUMNS if num_groups else results.CLASS_COLUMNS
    columns = [
        (split if s == "test" else s, metric, title.replace("test", split))
        for s, metric, title in columns
    ]
    rows = [
        [name, str(len(summary[split]["mean_acc"]["per_seed"]))]
        + [_cell(summary, s, metric) for s, metric, _ in columns]
        + [cells.get(name, "-") for _, cells in extra_columns]
        for name, summary in summaries.items()
    ]
    header = ["method", "seeds", *(c[2] for c in columns), *(h for h, _ in extra_columns)]
    return markdown(header, rows)


def group_use_cell(use: Mapping[str, bool]) -> str:
    """'✗ / ✓': whether a row reads train / val group labels (the HSFM paper's Table 1)."""
    return " / ".join("✓" if use[split] else "✗" for split in ("train", "val"))


def interval(bounds: Sequence[float]) -> str:
    """'[81.2, 90.3]' from fractions."""
    return "[" + ", ".join(f"{100 * b:.1f}" for b in bounds) + "]"


def _run_columns(report: dict) -> tuple[list, list]:
    """The extra columns of a run's tables: (every split's, the test table's)."""
    rows = report["methods"]
    use = {name: group_use_cell(r["group_use"]) for name, r in rows.items() if "group_use" in r}
    every = [("group labels (train / val)", use)]
    ci = {
        name: interval(r["bootstrap"]["seed_mean"]) for name, r in rows.items() if "bootstrap" in r
    }
    if not ci:
        return every, every
    metric = next(r["bootstrap"]["metric"] for r in rows.values() if "bootstrap" in r)
    title = "test WGA" if metric == "wga" else "test worst-class acc"
    return every, [(f"{title} 95% CI", ci), *every]


def group_table(
    summaries: Mapping[str, dict], names: Sequence[str], *, split: str = "test", key="group_acc"
) -> str:
    """Per-group (or per-class with key='class_acc') accuracy of each method, mean over seeds."""
    rows = [
        [method] + ["-" if m is None else f"{100 * m:.1f}" for m in summary[split][key]["mean"]]
        for method, summary in summaries.items()
    ]
    return markdown(["method", *names], rows)


def category_table(
    summaries: Mapping[str, dict], names: Sequence[str], *, split: str = "test"
) -> str:
    """Per-category pooled accuracy (Hard-Spurious-ImageNet's Easy/Medium/Hard) and overall.

    `names` gives the column order (pytrees sort dict keys, so the summaries cannot).
    """
    rows = [
        [method]
        + [_format_entry(summary[split]["category_acc"][n]) for n in names]
        + [_format_entry(summary[split]["mean_acc"])]
        for method, summary in summaries.items()
    ]
    return markdown(["method", *names, "overall"], rows)


def render_run(report: dict, summaries: dict, data, extra_splits: Sequence[str] = ()) -> str:
    """results.md of one experiment: the method table, per-group and per-category tables."""
    num_groups = data.num_groups
    every, test_columns = _run_columns(report)
    text = f"# {report['dataset']} / {report['backbone']}: {report['num_seeds']} seed(s)"
    if report.get("group_labels") == "none":
        text += ", group labels off"
    text += "\n\n" + method_table(summaries, num_groups=num_groups, extra_columns=test_columns)
    text += "\n"
    if num_groups:
        text += "\n## Test accuracy per group\n\n"
        text += group_table(summaries, data.group_names) + "\n"
    for split in ("test", *extra_splits):
        if split != "test":
            text += f"\n## {split}\n\n"
            text += method_table(summaries, num_groups=num_groups, split=split, extra_columns=every)
            text += "\n"
        if num_groups and data.meta.get("group_categories"):
            text += f"\n## {split}: accuracy per category\n\n"
            names = list(data.meta["group_categories"])
            text += category_table(summaries, names, split=split) + "\n"
    if num_groups:
        text += (
            "\nPercent, mean ± std over seeds. WGA: worst-group accuracy. 'test mean acc': "
            "accuracy over the whole test split. 'avg (train-weighted)': group accuracies weighted "
            "by the train group proportions (DFR / HSFM 'Average')."
        )
    else:
        text += (
            "\nPercent, mean ± std over seeds. No group labels: accuracy, mean per-class and "
            "worst-class accuracy."
        )
    text += (
        f" Val metrics are on the {report['val_metrics_on']} split. hsfm: head with the best val "
        "selection score; hsfm_last: head after the last epoch. 'group labels (train / val)': "
        "whether the row's method reads train / val group labels (✓), val labels used only for "
        "model selection included (the HSFM paper's Table 1)."
    )
    if report.get("group_labels") == "none":
        text += (
            " group_labels='none': no method received a group label of any split; the evaluator "
            "read them afterwards, only to report these metrics."
        )
    if report.get("bootstrap_resamples"):
        text += (
            f" 95% CI: percentile interval of the seed-mean over {report['bootstrap_resamples']} "
            "bootstrap resamples of the test examples (the same resamples for every row)."
        )
    text += "\n"
    timing = ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in report["timings_s"].items())
    return text + f"\nWall time (compile + run): {timing}.\n"


# ----------------------------------------------------------------------------- sweeps


def sweep_markdown(report: dict) -> str:
    """The sweep table (percent, mean ± std over seeds), the selected row marked."""
    names, cols = report["names"], report["columns"]
    header = ["setting", *names, "seeds", *(c["header"] for c in cols), "selected by val"]
    rows = []
    for row in report["rows"]:
        cells = [str(row["index"]), *(str(row[n]) for n in names), str(row["num_seeds"])]
        for c in cols:
            key = f"{c['split']}_{c['metric']}"
            cells.append(percent(row[f"{key}_mean"], row[f"{key}_std"]))
        cells.append(
            "diverged" if row.get("diverged") else "✓" if row["index"] == report["selected"] else ""
        )
        rows.append(cells)
    text = markdown(header, rows) + "\n"
    chosen = next((r for r in report["rows"] if r["index"] == report["selected"]), None)
    if chosen is not None:
        test = next(c for c in cols if c["split"] == "test")
        key = f"test_{test['metric']}"
        text += (
            f"\nVal {chosen['selection_metric']} selects setting {chosen['index']} "
            f"({chosen['setting']}): {test['header']} "
            f"{percent(chosen[f'{key}_mean'], chosen[f'{key}_std'])}.\n"
        )
    return text


def sweep_csv(report: dict) -> str:
    """One row per setting; metric columns are fractions (mean and std over seeds)."""
    fields = ["index", "setting", *report["names"], "num_seeds"]
    for c in report["columns"]:
        fields += [f"{c['split']}_{c['metric']}_mean", f"{c['split']}_{c['metric']}_std"]
    fields += ["selection_metric", "diverged", "selected"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in report["rows"]:
        writer.writerow({**row, "selected": int(row["index"] == report["selected"])})
    return buffer.getvalue()


def report_table(report: dict) -> str:
    """The method table of a run's results.json content: the first table of its results.md."""
    _, test_columns = _run_columns(report)
    return method_table(
        report["methods"], num_groups=len(report["group_names"]), extra_columns=test_columns
    )
