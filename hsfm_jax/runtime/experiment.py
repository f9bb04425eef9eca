"""One experiment: check every method, run them, evaluate them alike, return `Results`.

From Python, with features in arrays (`features.FeatureSet.from_arrays`) or a feature directory::

    data = hsfm_jax.FeatureSet.from_arrays(train=(X, y, g), val=(Xv, yv, gv), test=(Xt, yt, gt))
    results = hsfm_jax.run(data, methods="erm,dfr,hsfm", num_seeds=3)
    print(results.table())

`run` is a loop over the method registry (`hsfm_jax.methods`): every method is checked before any
runs, each runs on the same data and seeds, and every row of heads is evaluated by the one
evaluator (`hsfm_jax.reporting.results`). With a `workdir` it writes, as one atomic set
(`hsfm_jax.runtime.workdir`: staged, then swapped in; a failed or killed run leaves the previous set as
it was):
  config.json     the full config of the run, "auto" choices resolved (``resolved``)
  results.json    per method and split: every metric, mean/std/per-seed, plus timings
  results.md      the method x metric table (and per-group accuracies)
  support.npz     HSFM: final support embeddings and train indices of S, per seed
  history.json    HSFM: per-epoch diagnostics, per seed
  tensorboard/, results.png, results.svg, report.html   training curves, the comparison figure
                  and one page (`hsfm_jax.reporting.run_report`; docs/outputs.md)
Each file carries the run's ``run_id``.

Methods with an epoch loop (HSFM, NeuronTune: `hsfm_jax.methods.contract`) run it in chunks with a
progress bar (``progress``) and, with a workdir, checkpoints beside it
(`hsfm_jax.runtime.workdir.loop_checkpoints`, every ``config.checkpoint_seconds``): rerunning the same
call after a kill resumes each loop from its last checkpoint, with the results of an
uninterrupted run.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from absl import logging

from hsfm_jax import apps, methods
from hsfm_jax.core import checks, heads
from hsfm_jax.data import features as features_lib
from hsfm_jax.data import inputs, synthetic
from hsfm_jax.methods.contract import MethodResult
from hsfm_jax.reporting import results, run_report, tables
from hsfm_jax.runtime import divergence, epoch_loop
from hsfm_jax.runtime import workdir as workdir_lib

GROUP_LABELS = ("all", "none")
methods_lib = methods  # `run`'s argument `methods` shadows the module inside it


def default_config() -> ml_collections.ConfigDict:
    """Every field an experiment reads, with defaults; each method's fields (``config.<method>``)
    are its module's `default_config()` (the paper's values, for ResNet-50-scale features)."""
    config = ml_collections.ConfigDict()
    config.features_dir = inputs.PLACEHOLDER_PREFIX + "/features"
    # How to make features_dir when it has no meta.json: "" (error), "synthetic", "export".
    config.prepare = ""
    # A prepared features_dir made with other arguments than these: "regenerate" or "refuse".
    config.stale_features = "regenerate"
    # Arguments of hsfm_jax.data.synthetic.generate, used when prepare == "synthetic".
    config.synthetic = ml_collections.ConfigDict(synthetic.default_arguments())
    # Flags of `python -m feature_export.pipeline` (build, fine-tune, export), used when
    # prepare == "export"; build_args / finetune_* are empty unless the dataset is built here or
    # the backbone fine-tuned first.
    config.export = ml_collections.ConfigDict(
        dict(
            dataset="",
            backbone="",
            data_dir="",
            weights="",
            num_threads=0,
            dataset_args={},
            backbone_args={},
            build_args={},
            finetune_workdir="",
            finetune_args={},
        )
    )
    # fraction > 0: val is split (class-stratified, seeded) into a part for fitting (HSFM's hard
    # set, DFR) and a part for model selection, as the paper's fine-grained protocol (Sec. 8.2).
    config.val_split = ml_collections.ConfigDict(dict(fraction=0.0, seed=0))
    # More splits to evaluate beside val and test (e.g. Hard-Spurious-ImageNet's "test_ar").
    config.extra_test_splits = ""
    config.methods = ",".join(methods.REGISTRY)
    # "none": the label-free track (SubpopBench's ValWorstAccAttributeNo). No method receives a
    # group label of any split: "auto" selection is worst-class val accuracy, DFR balances classes,
    # group_dro is an error (drop it from `methods`); test groups only report test metrics.
    config.group_labels = "all"
    # Resamples of the test examples for a 95% bootstrap interval of test WGA (0: off; e.g. 1000).
    config.bootstrap = 0
    config.num_seeds = 5
    config.seed = 0
    config.float64 = False
    # Pad every split's rows to a bucket (`hsfm_jax.data.buckets`): a dataset of other split sizes
    # in the same buckets reuses every compiled program; results change only by float32 rounding.
    config.row_buckets = True
    # Least seconds between two checkpoints of a method's epoch loop (HSFM, NeuronTune), which a
    # rerun of the same command resumes from; 0: after every chunk.
    config.checkpoint_seconds = 60.0
    # Training curves as TensorBoard event files under <workdir>/tensorboard (docs/outputs.md).
    config.tensorboard = True
    for name, method_config in methods.default_configs().items():
        config[name] = method_config
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
    """Sets ``{"hsfm.meta_lr": 0.1, "erm": {"steps": 200}, ...}`` in `config` (dotted paths or
    nested dicts); an unknown field or a value of the wrong type is a ValueError naming it."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and not isinstance(value, ml_collections.ConfigDict):
            apply_overrides(config, {f"{key}.{k}": v for k, v in value.items()})
            continue
        *parents, leaf = str(key).split(".")
        node = config
        for depth, part in enumerate(parents):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise ValueError(f"overrides: unknown field {'.'.join(parents[: depth + 1])!r}")
            node = node[part]
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            raise ValueError(f"overrides: unknown field {key!r}")
        try:
            node[leaf] = value
        except TypeError as e:
            raise ValueError(f"overrides: {key}={value!r}: {e}") from None


def make_config(
    config: ml_collections.ConfigDict | str | os.PathLike | None = None,
    *,
    methods: str | Sequence[str] | None = None,
    num_seeds: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ml_collections.ConfigDict:
    """A copy of `config` (default `default_config()`; a config file's path, or the name of one
    in ``experiments/configs``, e.g. "own_features") with the given fields set."""
    if isinstance(config, str | os.PathLike):
        config = apps.load_config(config)
    config = ml_collections.ConfigDict((config or default_config()).to_dict())
    if methods is not None:
        config.methods = methods if isinstance(methods, str) else ",".join(methods)
    if num_seeds is not None:
        config.num_seeds = num_seeds
    apply_overrides(config, overrides or {})
    return config


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
    checks.bounded_int("num_seeds", config.num_seeds, 1, checks.MAX_SEEDS)
    checks.bounded_int("seed", config.seed, 0, checks.MAX_SEED)
    checks.bounded_int("bootstrap", bootstrap, 0, checks.MAX_BOOTSTRAP, note="0: off")
    if not isinstance(config.get("tensorboard", True), bool):
        raise ValueError(f"tensorboard must be True or False, got {config.tensorboard!r}")
    return names


@dataclasses.dataclass(frozen=True)
class Results:
    """What a run gives: ``report`` (the content of results.json), ``heads`` {row: LinearHead with
    a leading seed axis (S, C, d)}, the resolved ``config``, and the ``data`` it was evaluated on.

    A row is one method's heads (DFR and HSFM give more than one row, e.g. ``hsfm`` and
    ``hsfm_last``); ``metrics(row, split)`` gives its metrics, each {"mean", "std", "per_seed"}.
    """

    report: dict
    heads: dict[str, heads.LinearHead]
    config: ml_collections.ConfigDict
    data: features_lib.FeatureSet
    summaries: dict = dataclasses.field(repr=False)

    @property
    def rows(self) -> list[str]:
        return list(self.report["methods"])

    @property
    def splits(self) -> list[str]:
        return list(next(iter(self.summaries.values()), {}))

    def metrics(self, row: str, split: str = "test") -> dict:
        """{metric: {"mean", "std", "per_seed"}} of `row` on `split` (fractions, not percent)."""
        if row not in self.summaries:
            raise KeyError(f"no row {row!r}; rows: {self.rows}")
        if split not in self.summaries[row]:
            raise KeyError(f"no split {split!r}; splits: {self.splits}")
        return self.summaries[row][split]

    def table(self) -> str:
        """The markdown the command line prints (results.md)."""
        return tables.render_run(
            self.report, self.summaries, self.data, inputs.extra_splits(self.config)
        )

    def to_csv(self) -> str:
        """Tidy CSV: one line per row (``method``), seed, split and scalar metric (fractions);
        per-group and per-class accuracies as ``group_acc[<i>]`` / ``class_acc[<i>]``."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["method", "seed", "split", "metric", "value"])
        for row, by_split in self.summaries.items():
            for split, by_metric in by_split.items():
                for metric, value in _flat_metrics(by_metric):
                    for seed, x in enumerate(value):
                        writer.writerow([row, seed, split, metric, "" if x is None else x])
        return buffer.getvalue()


def _flat_metrics(by_metric: dict):
    """(metric name, per-seed values) of every scalar and per-index metric."""
    for metric, entry in by_metric.items():
        if "per_seed" not in entry:  # a dict of named sub-metrics (category_acc)
            for name, sub in entry.items():
                yield f"{metric}[{name}]", sub["per_seed"]
            continue
        values = np.asarray(entry["per_seed"], dtype=object)
        if values.ndim == 1:
            yield metric, list(values)
        else:
            for i in range(values.shape[1]):
                yield f"{metric}[{i}]", list(values[:, i])


def run(
    data: features_lib.FeatureSet | str | os.PathLike,
    *,
    methods: str | Sequence[str] | None = None,
    num_seeds: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    workdir: str | os.PathLike | None = None,
    config: ml_collections.ConfigDict | str | os.PathLike | None = None,
    progress: bool = False,
) -> Results:
    """Runs `methods` (default: every registered one) on `data` for `num_seeds` seeds.

    Args:
      data: a `FeatureSet` (e.g. `FeatureSet.from_arrays`) or a feature directory; a directory
        that does not exist yet is made when ``config.prepare`` says how (`hsfm_jax.data.inputs`).
      methods: "erm,dfr,hsfm" or a list of registered names.
      num_seeds: seeds per method (a vmapped leading axis).
      overrides: config fields to set, as dotted paths or nested dicts, e.g.
        ``{"hsfm.meta_lr": 0.1, "erm": {"steps": 200}}`` (`default_config` lists them).
      workdir: where to write config.json, results.json, results.md and the methods' own files
        (module docstring); None: nothing is written and no loop is checkpointed.
      config: the experiment config to start from (default `default_config()`): a ConfigDict, a
        config file, or the name of one in ``experiments/configs`` ("own_features": rates for
        unit-scale features).
      progress: a bar over the epochs of each method's loop on stderr.

    Raises:
      ValueError (or FileNotFoundError for a missing directory): bad data or config, one line
      naming the field; before any method runs.
    """
    config = make_config(config, methods=methods, num_seeds=num_seeds, overrides=overrides)
    names = check(config)
    if isinstance(data, str | os.PathLike):
        config.features_dir = str(data)
        inputs.check(config)
    if workdir is not None:
        workdir = Path(workdir)
        read_from = data
        if isinstance(data, features_lib.FeatureSet):  # arrays have no directory to protect
            read_from = data.path if Path(data.path).is_dir() else None
        workdir_lib.check_run_paths(workdir, read_from)
    jax.config.update("jax_enable_x64", bool(config.float64))
    if isinstance(data, features_lib.FeatureSet):
        data = inputs.prepare_loaded(config, data)
    else:
        data = inputs.load(config)
    # every method, before any runs, on the data it will receive
    resolved = methods_lib.check(config, names, inputs.method_data(config, data))
    if workdir is None:
        return _run_methods(config, names, resolved, data, None, workdir_lib.new_run_id(), None)
    fingerprint = _data_fingerprint(data)
    with workdir_lib.staged(workdir) as (stage, run_id):
        loops = lambda name, method_config: epoch_loop.Options(
            checkpoint_dir=workdir_lib.loop_checkpoints(
                workdir, name, _loop_fingerprint(config, name, method_config, fingerprint)
            ),
            checkpoint_seconds=float(config.checkpoint_seconds),
            progress=progress,
            name=name,
        )
        return _run_methods(config, names, resolved, data, stage, run_id, loops)


def _data_fingerprint(data: features_lib.FeatureSet) -> str:
    """The feature files' fingerprint (`features.fingerprint`) for a directory, else a hash of
    the arrays; with the splits' sizes (the val split changes them)."""
    if (Path(data.path) / features_lib.META_FILE).is_file():
        digest = hashlib.sha256(features_lib.fingerprint(data.path).encode())
    else:
        digest = hashlib.sha256()
        for name in sorted(data.splits):
            split = data.splits[name]
            for array in (split.features, split.labels, split.groups):
                digest.update(np.ascontiguousarray(array).data)
    digest.update(json.dumps(data.meta["splits"], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _features_fingerprint(data: features_lib.FeatureSet) -> str | None:
    """`features.fingerprint` of the feature directory the run read (None for arrays), which
    `experiments.analyze` compares with the directory it reads."""
    if (Path(data.path) / features_lib.META_FILE).is_file():
        return features_lib.fingerprint(data.path)
    return None


def _loop_fingerprint(config, name: str, method_config, data_fingerprint: str) -> str:
    """Identifies what a method's loop computes: its resolved config, the seeds, the dtype, the
    val split and the features (`_data_fingerprint`)."""
    record = {
        "method": name,
        "config": method_config.to_dict(),
        "seed": config.seed,
        "num_seeds": config.num_seeds,
        "float64": bool(config.float64),
        "val_split": config.val_split.to_dict(),
        "group_labels": config.group_labels,
        "features": data_fingerprint,
    }
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Fitted(NamedTuple):
    """What the methods of a run returned: ``rows`` {row: heads (S, C, d)}, ``owners`` {row:
    method}, ``results`` {method: its `MethodResult`}, ``timings`` {"<method>_s": seconds},
    ``resumed`` {method: the epoch its loop resumed from, when it did}."""

    rows: dict[str, heads.LinearHead]
    owners: dict[str, str]
    results: dict[str, MethodResult]
    timings: dict[str, float]
    resumed: dict[str, int]


def fit(config, names, resolved, data, loops=None) -> Fitted:
    """Runs every named method on `inputs.method_data(config, data)`, timing each (compile +
    run). `loops(name, method_config) -> epoch_loop.Options` for the resumable methods' loops
    (default: no checkpoints, no progress)."""
    given = inputs.method_data(config, data)
    dtype = given.dtype
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
    method_results: dict[str, MethodResult] = {}
    resumed: dict[str, int] = {}
    for name in names:
        start = time.perf_counter()
        method_config = methods.resolve(config, name, resolved[name])
        loop = epoch_loop.PLAIN if loops is None else loops(name, method_config)
        result = methods.run(name, given, method_config, keys, loop=loop)
        method_rows = jax.block_until_ready(result.rows)
        timings[f"{name}_s"] = time.perf_counter() - start
        choices = ", ".join(f"{k}={v}" for k, v in resolved[name].items())
        logging.info(
            "%s: %d row(s) in %.1f s%s",
            name,
            len(method_rows),
            timings[f"{name}_s"],
            f" (resolved {choices})" if choices else "",
        )
        if result.resumed_from:
            resumed[name] = result.resumed_from
        divergence.check_rows(name, method_rows, check_on, result.must_be_finite)
        rows.update(method_rows)
        owners.update(dict.fromkeys(method_rows, name))
        method_results[name] = result
    return Fitted(rows, owners, method_results, timings, resumed)


def _run_methods(config, names, resolved, data, stage: Path | None, run_id: str, loops) -> Results:
    record = ml_collections.ConfigDict(config.to_dict())
    record.run_id = run_id
    record.resolved = {name: choices for name, choices in resolved.items() if choices}
    if stage is not None:
        (stage / "config.json").write_text(record.to_json_best_effort(indent=2))

    rows, owners, method_results, timings, resumed = fit(config, names, resolved, data, loops)
    if stage is not None:
        for result in method_results.values():
            if result.write_files is not None:
                result.write_files(stage, run_id)
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
        reports[row].update(method_results[name].report)

    # Only here, after every method has returned its heads, are group labels read (when the
    # run removed them from the methods' data: to report metrics, never to fit or select).
    dtype = data.dtype
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
        # resamples of the test examples themselves: no padding row (`hsfm_jax.data.buckets`)
        test = dataclasses.replace(data.test, row_buckets=False).to_arrays(dtype)
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
        "features_fingerprint": _features_fingerprint(data),
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
    out = Results(report=report, heads=rows, config=record, data=data, summaries=summaries)
    if stage is not None:
        (stage / "results.json").write_text(json.dumps(report, indent=2, allow_nan=False))
        (stage / "results.md").write_text(out.table())
        curves = {name: result.curves for name, result in method_results.items()}
        run_report.write(stage, report, config=config, curves=curves)
    return out
