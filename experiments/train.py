"""One experiment: load features, check every method, run them, evaluate them alike, write results.

A loop over the method registry (`hsfm_jax.methods`); everything else is library code. Writes to
`workdir`, as one atomic set (`hsfm_jax.workdir`: staged, then swapped in; a failed or killed run
leaves the previous set as it was):
  config.json     the full config of the run, "auto" choices resolved (``resolved``)
  results.json    per method and split: every metric, mean/std/per-seed, plus timings
  results.md      the method x metric table (and per-group accuracies)
  support.npz     HSFM: final support embeddings and train indices of S, per seed
  history.json    HSFM: per-epoch diagnostics, per seed
Each file carries the run's ``run_id``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import ml_collections
from absl import logging

from hsfm_jax import divergence, heads, inputs, methods, results, tables
from hsfm_jax import features as features_lib
from hsfm_jax import workdir as workdir_lib


def check(config: ml_collections.ConfigDict) -> list[str]:
    """The top-level checks: method names and seeds. Returns the method names."""
    names = methods.parse(config.methods)
    if not isinstance(config.num_seeds, int) or config.num_seeds < 1:
        raise ValueError(f"num_seeds must be an integer > 0, got {config.num_seeds!r}")
    inputs.check(config)
    return names


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Runs the experiment described by `config`, writing its files to `workdir`."""
    workdir = Path(workdir)
    names = check(config)
    workdir_lib.check_usable(workdir)
    jax.config.update("jax_enable_x64", bool(config.float64))
    data = inputs.load(config)
    resolved = methods.check(config, names, data)  # every method, before any runs
    for name, choices in resolved.items():
        if choices:
            logging.info("%s: resolved %s", name, choices)
    with workdir_lib.staged(workdir) as (stage, run_id):
        report = _run_methods(config, names, resolved, data, stage, run_id)
    return report


def _run_methods(config, names, resolved, data, stage: Path, run_id: str) -> dict:
    record = ml_collections.ConfigDict(config.to_dict())
    record.run_id = run_id
    record.resolved = {name: choices for name, choices in resolved.items() if choices}
    (stage / "config.json").write_text(record.to_json_best_effort(indent=2))

    dtype = features_lib.float_dtype()
    check_on = {
        "val": data.val.to_arrays(dtype).features,
        "test": data.test.to_arrays(dtype).features,
    }
    keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    rows: dict[str, heads.LinearHead] = {}
    if data.has_head:
        head = heads.from_numpy(data.head_weight, data.head_bias, dtype)
        rows["backbone_head"] = jax.tree_util.tree_map(lambda x: x[None], head)
        divergence.check_rows("backbone head.npz", rows, check_on)
    timings: dict[str, float] = {}
    reports: dict[str, dict] = {}
    for name in names:
        start = time.perf_counter()
        method_rows, info = methods.run(
            name, data, methods.resolve(config, name, resolved[name]), keys
        )
        method_rows = jax.block_until_ready(method_rows)
        timings[f"{name}_s"] = time.perf_counter() - start
        logging.info("%s: %d row(s) in %.1f s", name, len(method_rows), timings[f"{name}_s"])
        divergence.check_rows(name, method_rows, check_on, info.get("must_be_finite"))
        rows.update(method_rows)
        module = methods.get(name)
        if hasattr(module, "save"):
            module.save(info, stage, run_id)
        for row in method_rows:
            reports[row] = {"resolved": resolved[name], **info.get("report", {})}

    evaluated = results.evaluate_rows(
        rows,
        {
            "val": data["select" if "select" in data.splits else "val"].to_arrays(dtype),
            "test": data.test.to_arrays(dtype),
            **{split: data[split].to_arrays(dtype) for split in inputs.extra_splits(config)},
        },
        num_classes=data.num_classes,
        num_groups=data.num_groups,
        train_group_counts=jax.numpy.asarray(data.train_group_counts(), dtype),
        group_categories=data.meta.get("group_categories"),
    )
    summaries = {name: results.summarize(m) for name, m in evaluated.items()}
    report = {
        "run_id": run_id,
        "dataset": data.meta["dataset"],
        "backbone": data.meta["backbone"],
        "features_dir": str(data.path),
        "num_seeds": config.num_seeds,
        "val_metrics_on": "select" if "select" in data.splits else "val",
        "split_sizes": data.meta["splits"],
        "class_names": data.class_names,
        "group_names": data.group_names,
        "metric_notes": results.METRIC_NOTES,
        "timings_s": timings,
        "methods": {name: {**summaries[name], **reports.get(name, {})} for name in summaries},
    }
    (stage / "results.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    (stage / "results.md").write_text(
        tables.render_run(report, summaries, data, inputs.extra_splits(config))
    )
    return report
