"""One experiment: load features, run the requested methods, evaluate them alike, write results.

Writes to `workdir`:
  config.json     the full config of the run
  results.json    per method and split: every metric, mean/std/per-seed, plus timings
  results.md      the method x metric table (and per-group accuracies)
  support.npz     HSFM: final support embeddings and train indices of S, per seed
  history.json    HSFM: per-epoch diagnostics, per seed
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from hsfm_jax import baselines, evaluate, heads, hsfm, results, synthetic
from hsfm_jax import features as features_lib
from hsfm_jax.baselines import erm

CORE_METHODS = ("erm", "hsfm")


def method_names(config: ml_collections.ConfigDict) -> list[str]:
    names = [m.strip() for m in config.methods.split(",") if m.strip()]
    known = CORE_METHODS + tuple(baselines.available())
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise ValueError(f"config.methods: unknown method(s) {unknown}; choose from {list(known)}")
    return names


def prepare_features(config: ml_collections.ConfigDict) -> Path:
    """Returns features_dir, creating it first when `config.prepare` says how."""
    path = Path(config.features_dir)
    if config.features_dir == "" or str(path).startswith("/path/to"):
        raise ValueError(
            f"config.features_dir is not set ({config.features_dir!r}): pass "
            "--config.features_dir=<feature directory>"
        )
    if (path / features_lib.META_FILE).is_file() or not config.prepare:
        return path
    if config.prepare == "synthetic":
        logging.info("Writing synthetic features to %s", path)
        synthetic.write(path, **config.synthetic.to_dict())
    elif config.prepare == "export":
        from feature_export import export  # PyTorch is only needed here

        logging.info("Exporting features to %s", path)
        export.run(export.build_parser().parse_args(export_argv(config.export, path)))
    else:
        raise ValueError(
            f"config.prepare must be '', 'synthetic' or 'export', got {config.prepare!r}"
        )
    return path


def export_argv(export_config: ml_collections.ConfigDict, path: Path) -> list[str]:
    """The `python -m feature_export.export` flags that `config.export` describes."""
    argv = [f"--dataset={export_config.dataset}", f"--backbone={export_config.backbone}"]
    argv.append(f"--out={path}")
    for flag in ("data_dir", "weights", "num_threads"):
        if export_config.get(flag):
            argv.append(f"--{flag}={export_config[flag]}")
    argv += [f"--dataset_arg={k}={v!r}" for k, v in export_config.get("dataset_args", {}).items()]
    argv += [f"--backbone_arg={k}={v!r}" for k, v in export_config.get("backbone_args", {}).items()]
    return argv + ["--quiet"]


def hsfm_settings(config, data: features_lib.FeatureSet) -> hsfm.Settings:
    c = config.hsfm
    return hsfm.Settings(
        num_classes=data.num_classes,
        num_groups=data.num_groups,
        support_per_class=c.support_per_class,
        hard_set_size=c.hard_set_size,
        inner_steps=c.inner_steps,
        meta_steps=c.meta_steps,
        epochs=c.epochs,
        meta_optimizer=c.meta_optimizer,
        head_optimizer=c.head_optimizer,
        remat=c.remat,
        meta_gradient=c.meta_gradient,
        selection_metric=evaluate.selection_metric_name(data.num_groups, c.selection_metric),
        hard_set_fill=c.hard_set_fill,
    )


def hsfm_rates(config, dtype) -> hsfm.Rates:
    c = config.hsfm
    return hsfm.make_rates(
        inner_lr=c.inner_lr,
        meta_lr=c.meta_lr,
        head_lr=c.head_lr if c.head_lr >= 0 else c.inner_lr,
        meta_grad_clip=c.meta_grad_clip,
        dtype=dtype,
    )


def fit_erm(config, data_arrays: hsfm.Data, num_classes: int, keys) -> heads.LinearHead:
    """ERM heads (S, C, d): one per key when minibatched, else one deterministic head (1, C, d).

    `erm.epochs` > 0 replaces `erm.steps` by epochs * ceil(N_train / batch_size) steps (one step
    per epoch in full batch), as the paper states head training in epochs (Sec. 8.2).
    """
    c = config.erm
    steps = c.steps
    if c.get("epochs", 0) > 0:
        num_train = data_arrays.train.labels.shape[0]
        steps = c.epochs * (-(-num_train // c.batch_size) if c.batch_size else 1)
    fit = lambda key: erm.fit(
        data_arrays.train.features,
        data_arrays.train.labels,
        key,
        num_classes=num_classes,
        optimizer=c.optimizer,
        learning_rate=c.learning_rate,
        steps=steps,
        l2=c.l2,
        batch_size=c.batch_size,
        class_balanced=c.class_balanced,
    )
    return jax.vmap(fit)(keys if c.batch_size else keys[:1])


def initial_head(
    config, data: features_lib.FeatureSet, erm_head, dtype
) -> tuple[heads.LinearHead, str]:
    """theta_0 of HSFM: the backbone's head.npz or the ERM row's head (first seed)."""
    choice = config.hsfm.init_head
    if choice not in ("auto", "backbone", "erm"):
        raise ValueError(f"hsfm.init_head must be 'auto', 'backbone' or 'erm', got {choice!r}")
    if choice == "backbone" and not data.has_head:
        raise ValueError(f"hsfm.init_head='backbone' but {data.path}/head.npz does not exist")
    if choice in ("auto", "backbone") and data.has_head:
        return heads.from_numpy(data.head_weight, data.head_bias, dtype), "backbone head.npz"
    return jax.tree_util.tree_map(lambda x: x[0], erm_head), "ERM head (erm row)"


def to_device(data: features_lib.FeatureSet, dtype) -> hsfm.Data:
    return hsfm.Data(
        train=data.train.to_arrays(dtype),
        val=data.val.to_arrays(dtype),
        test=data.test.to_arrays(dtype),
        train_group_counts=jnp.asarray(data.train_group_counts(), dtype),
        select=data["select"].to_arrays(dtype) if "select" in data.splits else None,
    )


def split_validation(config, data: features_lib.FeatureSet) -> features_lib.FeatureSet:
    """With `config.val_split.fraction` > 0, val becomes two class-stratified parts.

    `val` keeps the first part (HSFM's hard set, DFR's fitting data); the new `select` split holds
    the rest and is where every method's model selection and reported val metrics happen.
    """
    fraction = config.val_split.fraction
    if not fraction:
        return data
    fit, select = features_lib.split_by_class(data.val, fraction, config.val_split.seed)
    return features_lib.with_splits(data, val=fit, select=select)


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Runs the experiment described by `config`, writing its files to `workdir`."""
    workdir = Path(workdir)
    names = method_names(config)
    if config.num_seeds < 1:
        raise ValueError(f"config.num_seeds must be >= 1, got {config.num_seeds}")
    jax.config.update("jax_enable_x64", bool(config.float64))
    dtype = jnp.float64 if config.float64 else jnp.float32

    extra_splits = [s.strip() for s in config.extra_test_splits.split(",") if s.strip()]
    data = split_validation(
        config,
        features_lib.load(prepare_features(config), splits=(*features_lib.SPLITS, *extra_splits)),
    )
    if "hsfm" in names:  # fail before any method runs
        settings = hsfm_settings(config, data)
        hsfm.validate(data.train.labels, data.val.labels, settings)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    arrays = to_device(data, dtype)
    keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    rows: dict[str, heads.LinearHead] = {}
    timings: dict[str, float] = {}
    extra: dict[str, dict] = {}

    if data.has_head:
        rows["backbone_head"] = jax.tree_util.tree_map(
            lambda x: x[None], heads.from_numpy(data.head_weight, data.head_bias, dtype)
        )
    need_erm = "erm" in names or ("hsfm" in names and not data.has_head)
    if need_erm:
        start = time.perf_counter()
        erm_heads = jax.block_until_ready(fit_erm(config, arrays, data.num_classes, keys))
        timings["erm_s"] = time.perf_counter() - start
        if "erm" in names:
            rows["erm"] = erm_heads

    for name in names:
        if name in CORE_METHODS:
            continue
        start = time.perf_counter()
        rows.update(
            jax.block_until_ready(baselines.available()[name].run(data, config[name], keys))
        )
        timings[f"{name}_s"] = time.perf_counter() - start

    if "hsfm" in names:
        init, init_source = initial_head(config, data, erm_heads if need_erm else None, dtype)
        rates = hsfm_rates(config, dtype)
        logging.info(
            "HSFM: %d seeds vmapped, %s, init from %s", config.num_seeds, settings, init_source
        )
        start = time.perf_counter()
        out = jax.block_until_ready(hsfm.run_seeds(arrays, init, rates, keys, settings=settings))
        timings["hsfm_s"] = time.perf_counter() - start
        rows["hsfm"] = out.best_head
        rows["hsfm_last"] = out.last_head
        extra["hsfm"] = {
            "init_head": init_source,
            "best_epoch": np.asarray(out.best_epoch).tolist(),
            "selection_metric": settings.selection_metric,
        }
        np.savez(
            workdir / "support.npz",
            support=np.asarray(out.support),
            support_indices=np.asarray(out.support_indices),
        )
        history = {k: np.asarray(v).tolist() for k, v in out.history.items()}
        (workdir / "history.json").write_text(json.dumps(history))

    metrics = results.evaluate_rows(
        rows,
        {
            "val": arrays.selection_split,
            "test": arrays.test,
            **{name: data[name].to_arrays(dtype) for name in extra_splits},
        },
        num_classes=data.num_classes,
        num_groups=data.num_groups,
        train_group_counts=arrays.train_group_counts,
        group_categories=data.meta.get("group_categories"),
    )
    summaries = {name: results.summarize(m) for name, m in metrics.items()}
    report = {
        "dataset": data.meta["dataset"],
        "backbone": data.meta["backbone"],
        "features_dir": str(data.path),
        "num_seeds": config.num_seeds,
        "val_metrics_on": "select" if arrays.select is not None else "val",
        "split_sizes": data.meta["splits"],
        "class_names": data.class_names,
        "group_names": data.group_names,
        "metric_notes": results.METRIC_NOTES,
        "timings_s": timings,
        "methods": {name: {**summaries[name], **extra.get(name, {})} for name in summaries},
    }
    (workdir / "results.json").write_text(json.dumps(report, indent=2))
    (workdir / "results.md").write_text(render_markdown(report, summaries, data, extra_splits))
    return report


def render_markdown(
    report: dict, summaries: dict, data: features_lib.FeatureSet, extra_splits=()
) -> str:
    title = f"# {report['dataset']} / {report['backbone']}: {report['num_seeds']} seed(s)\n\n"
    text = title + results.markdown_table(summaries, num_groups=data.num_groups) + "\n"
    if data.num_groups:
        text += "\n## Test accuracy per group\n\n"
        text += results.group_table(summaries, data.group_names) + "\n"
    for split in ("test", *extra_splits):
        if split != "test":
            text += (
                f"\n## {split}\n\n"
                + results.markdown_table(summaries, num_groups=data.num_groups, split=split)
                + "\n"
            )
        if data.num_groups and data.meta.get("group_categories"):
            text += f"\n## {split}: accuracy per category\n\n"
            names = list(data.meta["group_categories"])
            text += results.category_table(summaries, names, split=split) + "\n"
    if data.num_groups:
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
        "selection score; hsfm_last: head after the last epoch.\n"
    )
    timing = ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in report["timings_s"].items())
    return text + f"\nWall time (compile + run): {timing}.\n"
