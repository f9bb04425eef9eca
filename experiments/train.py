"""One experiment: load features, check every method, run them, evaluate them alike, write results.

A loop over the method registry (`hsfm_jax.methods`); everything else is library code. Writes to
`workdir`, as one atomic set (`hsfm_jax.workdir`: staged, then swapped in; a failed or killed run
leaves the previous set as it was):
  config.json     the full config of the run, "auto" choices resolved (``resolved``)
  results.json    per method and split: every metric, mean/std/per-seed, plus timings
  results.md      the method x metric table (and per-group accuracies)
  support.npz     HSFM: final support embeddings and train indices of S, per seed
  history.json    HSFM: per-epoch diagnostics, per seed
  tensorboard/, results.png, results.svg, report.html   curves, figure and page for people
                  (`hsfm_jax.run_report`; docs/outputs.md)
Each file carries the run's ``run_id``.

Methods with an epoch loop (`methods` ``RESUMABLE``: HSFM, NeuronTune) run it in chunks with a
progress bar (``progress``) and checkpoints beside the workdir (`hsfm_jax.workdir.loop_checkpoints`,
every ``config.checkpoint_seconds``): rerunning the same command after a kill resumes each loop
from its last checkpoint, with the results of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import NamedTuple

import jax
import ml_collections
from absl import logging

from hsfm_jax import divergence, epoch_loop, heads, inputs, methods, results, run_report, tables
from hsfm_jax import features as features_lib
from hsfm_jax import workdir as workdir_lib

GROUP_LABELS = ("all", "none")


def check(config: ml_collections.ConfigDict) -> list[str]:
    """The top-level checks: method names, seeds, group labels, bootstrap. Returns the names."""
    names = methods.parse(config.methods)
    if not isinstance(config.num_seeds, int) or config.num_seeds < 1:
        raise ValueError(f"num_seeds must be an integer > 0, got {config.num_seeds!r}")
    seconds = config.checkpoint_seconds
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise ValueError(f"checkpoint_seconds must be a number >= 0, got {seconds!r}")
    if config.group_labels not in GROUP_LABELS:
        raise ValueError(f"group_labels must be one of {GROUP_LABELS}, got {config.group_labels!r}")
    bootstrap = config.bootstrap
    if not isinstance(bootstrap, int) or isinstance(bootstrap, bool) or bootstrap < 0:
        raise ValueError(f"bootstrap must be an integer >= 0 (0: off), got {bootstrap!r}")
    if not isinstance(config.get("tensorboard", True), bool):
        raise ValueError(f"tensorboard must be True or False, got {config.tensorboard!r}")
    inputs.check(config)
    return names


def run(config: ml_collections.ConfigDict, workdir: str | Path, *, progress: bool = False) -> dict:
    """Runs the experiment described by `config`, writing its files to `workdir`.

    `progress`: a bar over the epochs of each method's loop on stderr. A rerun after a kill
    resumes the loops from their checkpoints (module docstring).
    """
    workdir = Path(workdir)
    names = check(config)
    workdir_lib.check_usable(workdir)
    jax.config.update("jax_enable_x64", bool(config.float64))
    data = inputs.load(config)
    # every method, before any runs, on the data it will receive
    resolved = methods.check(config, names, inputs.method_data(config, data))
    for name, choices in resolved.items():
        if choices:
            logging.info("%s: resolved %s", name, choices)
    with workdir_lib.staged(workdir) as (stage, run_id):
        loops = lambda name, method_config: epoch_loop.Options(
            checkpoint_dir=workdir_lib.loop_checkpoints(
                workdir, name, _loop_fingerprint(config, name, method_config, data)
            ),
            checkpoint_seconds=float(config.checkpoint_seconds),
            progress=progress,
            name=name,
        )
        report = _run_methods(config, names, resolved, data, stage, run_id, loops)
    return report


def _loop_fingerprint(config, name: str, method_config, data) -> str:
    """Identifies what a method's loop computes: its resolved config, the seeds, the dtype, the
    val split and the feature files (`features.fingerprint`)."""
    record = {
        "method": name,
        "config": method_config.to_dict(),
        "seed": config.seed,
        "num_seeds": config.num_seeds,
        "float64": bool(config.float64),
        "val_split": config.val_split.to_dict(),
        "group_labels": config.group_labels,
        "features": features_lib.fingerprint(data.path),
    }
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Fitted(NamedTuple):
    """What the methods of a run returned: ``rows`` {row: heads (S, C, d)}, ``owners`` {row:
    method}, ``infos`` {method: info of `methods.run`}, ``timings`` {"<method>_s": seconds},
    ``resumed`` {method: the epoch its loop resumed from, when it did}."""

    rows: dict[str, heads.LinearHead]
    owners: dict[str, str]
    infos: dict[str, dict]
    timings: dict[str, float]
    resumed: dict[str, int]


def fit(config, names, resolved, data, loops=None) -> Fitted:
    """Runs every named method on `inputs.method_data(config, data)`, timing each (compile +
    run). `loops(name, method_config) -> epoch_loop.Options` for the resumable methods' loops
    (default: no checkpoints, no progress)."""
    given = inputs.method_data(config, data)
    dtype = features_lib.float_dtype()
    check_on = {
        "val": given.val.to_arrays(dtype).features,
        "test": given.test.to_arrays(dtype).features,
    }
    keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    rows: dict[str, heads.LinearHead] = {}
    owners: dict[str, str] = {}
    if given.has_head:
        head = heads.from_numpy(given.head_weight, given.head_bias, dtype)
        rows["backbone_head"] = jax.tree_util.tree_map(lambda x: x[None], head)
        owners["backbone_head"] = "backbone_head"
        divergence.check_rows("backbone head.npz", rows, check_on)
    timings: dict[str, float] = {}
    infos: dict[str, dict] = {}
    resumed: dict[str, int] = {}
    for name in names:
        start = time.perf_counter()
        method_config = methods.resolve(config, name, resolved[name])
        loop = epoch_loop.PLAIN if loops is None else loops(name, method_config)
        method_rows, infos[name] = methods.run(name, given, method_config, keys, loop=loop)
        method_rows = jax.block_until_ready(method_rows)
        timings[f"{name}_s"] = time.perf_counter() - start
        logging.info("%s: %d row(s) in %.1f s", name, len(method_rows), timings[f"{name}_s"])
        if infos[name].get("resumed_from"):
            resumed[name] = infos[name]["resumed_from"]
        divergence.check_rows(name, method_rows, check_on, infos[name].get("must_be_finite"))
        rows.update(method_rows)
        owners.update(dict.fromkeys(method_rows, name))
    return Fitted(rows, owners, infos, timings, resumed)


def _run_methods(config, names, resolved, data, stage: Path, run_id: str, loops) -> dict:
    record = ml_collections.ConfigDict(config.to_dict())
    record.run_id = run_id
    record.resolved = {name: choices for name, choices in resolved.items() if choices}
    (stage / "config.json").write_text(record.to_json_best_effort(indent=2))

    rows, owners, infos, timings, resumed = fit(config, names, resolved, data, loops)
    for name in names:
        if hasattr(methods.get(name), "save"):
            methods.get(name).save(infos[name], stage, run_id)
    use = {
        name: methods.group_use(name, methods.resolve(config, name, resolved[name]))
        for name in names
    }
    reports: dict[str, dict] = {}
    for row, name in owners.items():
        if name == "backbone_head":  # the backbone's own last layer: trained without groups
            reports[row] = {"group_use": {"train": False, "val": False}}
            continue
        if row not in use[name]:
            raise ValueError(f"{name}.group_use does not list its row {row!r}")
        reports[row] = {"resolved": resolved[name], "group_use": use[name][row]}
        reports[row].update(infos[name].get("report", {}))

    # Only here, after every method has returned its heads, are group labels read (when the
    # run removed them from the methods' data: to report metrics, never to fit or select).
    dtype = features_lib.float_dtype()
    test = data.test.to_arrays(dtype)
    evaluated = results.evaluate_rows(
        rows,
        {
            "val": data["select" if "select" in data.splits else "val"].to_arrays(dtype),
            "test": test,
            **{split: data[split].to_arrays(dtype) for split in inputs.extra_splits(config)},
        },
        num_classes=data.num_classes,
        num_groups=data.num_groups,
        train_group_counts=jax.numpy.asarray(data.train_group_counts(), dtype),
        group_categories=data.meta.get("group_categories"),
    )
    summaries = {name: results.summarize(m) for name, m in evaluated.items()}
    if config.bootstrap:
        intervals = results.bootstrap_rows(
            rows,
            test,
            segments=test.groups if data.num_groups else test.labels,
            num_segments=data.num_groups or data.num_classes,
            key=jax.random.fold_in(jax.random.key(config.seed), 1),
            num_resamples=config.bootstrap,
        )
        metric = "wga" if data.num_groups else "worst_class_acc"
        for name, interval in intervals.items():
            reports[name]["bootstrap"] = {"split": "test", "metric": metric, **interval}
    report = {
        "run_id": run_id,
        "dataset": data.meta["dataset"],
        "backbone": data.meta["backbone"],
        "features_dir": str(data.path),
        "num_seeds": config.num_seeds,
        "group_labels": config.group_labels,
        "bootstrap_resamples": config.bootstrap,
        "val_metrics_on": "select" if "select" in data.splits else "val",
        "split_sizes": data.meta["splits"],
        "class_names": data.class_names,
        "group_names": data.group_names,
        "metric_notes": results.METRIC_NOTES,
        "timings_s": timings,
        "resumed_from_epoch": resumed,  # method: the epoch its loop resumed from, when it did
        "methods": {name: {**summaries[name], **reports.get(name, {})} for name in summaries},
    }
    (stage / "results.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    (stage / "results.md").write_text(
        tables.render_run(report, summaries, data, inputs.extra_splits(config))
    )
    run_report.write(stage, report, config=config, infos=infos, resolved=resolved)
    return report
