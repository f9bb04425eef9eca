"""The feature set an experiment config describes: made when asked, loaded, val split applied.

``config.prepare`` says how to make a missing ``features_dir``: "synthetic" writes
`hsfm_jax.data.synthetic` features, "export" runs ``python -m feature_export.pipeline`` (build the dataset when it has a builder,
fine-tune the backbone when asked, export) with the flags of ``config.export`` in a subprocess:
the JAX process never imports PyTorch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
from absl import logging

from hsfm_jax import apps
from hsfm_jax.data import features as features_lib
from hsfm_jax.data import synthetic
from hsfm_jax.runtime import atomic, locks, ownership

PLACEHOLDER_PREFIX = "/path/to"
PREPARE_MODES = ("", "synthetic", "export")
STALE_MODES = ("regenerate", "refuse")
# What made a prepared features_dir: {"prepare": mode, "arguments": ...}, compared on reuse.
PREPARE_FILE = "prepare.json"


def check(config: ml_collections.ConfigDict) -> Path:
    """Checks `features_dir`, `prepare` and the val split fields; returns the features path."""
    path = Path(config.features_dir)
    if config.features_dir == "" or str(path).startswith(PLACEHOLDER_PREFIX):
        raise ValueError(
            f"config.features_dir is not set ({config.features_dir!r}): pass "
            "--config.features_dir=<feature directory>"
        )
    if config.prepare not in PREPARE_MODES:
        raise ValueError(f"prepare must be one of {PREPARE_MODES}, got {config.prepare!r}")
    if config.stale_features not in STALE_MODES:
        raise ValueError(
            f"stale_features must be one of {STALE_MODES}, got {config.stale_features!r}"
        )
    check_val_split(config)
    return path


def check_val_split(config: ml_collections.ConfigDict) -> None:
    fraction = config.val_split.fraction
    if not isinstance(fraction, int | float) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_split.fraction must be in [0, 1), got {fraction!r}")
    reported = [s for s in extra_splits(config) if s in ("val", "test", "select")]
    if reported:
        raise ValueError(
            f"extra_test_splits={config.extra_test_splits!r} names {reported}, which every run "
            "reports already (val: the selection split, the part of val that selects when "
            "val_split.fraction > 0); list other splits only"
        )


def export_argv(export_config: ml_collections.ConfigDict, path: Path) -> list[str]:
    """The `python -m feature_export.pipeline` flags that `config.export` describes."""
    argv = [f"--dataset={export_config.dataset}", f"--backbone={export_config.backbone}"]
    argv.append(f"--out={path}")
    for flag in ("data_dir", "weights", "num_threads", "finetune_workdir"):
        if export_config.get(flag):
            argv.append(f"--{flag}={export_config[flag]}")
    for field, flag in (
        ("dataset_args", "dataset_arg"),
        ("backbone_args", "backbone_arg"),
        ("build_args", "build_arg"),
        ("finetune_args", "finetune_arg"),
    ):
        argv += [f"--{flag}={k}={v!r}" for k, v in export_config.get(field, {}).items()]
    return argv + ["--quiet"]


def run_export(argv: list[str]) -> None:
    """Runs the exporter in a subprocess; its one-line error becomes a ValueError here."""
    command = [sys.executable, "-m", "feature_export.pipeline", *argv]
    logging.info("Exporting features: %s", " ".join(command))
    proc = subprocess.run(command, stderr=subprocess.PIPE, text=True, env=apps.subprocess_env())
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        message = (errors or lines or [f"exit code {proc.returncode}"])[-1]
        raise ValueError(f"feature export failed: {message.removeprefix('error: ')}")


def _requested(config: ml_collections.ConfigDict, path: Path) -> dict:
    if config.prepare == "synthetic":
        return {"prepare": "synthetic", "arguments": config.synthetic.to_dict()}
    return {"prepare": "export", "arguments": export_argv(config.export, path)}


def _prepared_by_us(path: Path) -> bool:
    """Whether `path` holds features a run prepared (or the synthetic generator wrote), which a
    run may make again; features exported or written by anyone else are only ever read."""
    marker = ownership.read(path) or {}
    made_by = marker.get("made_by") if marker.get("kind") == "features" else None
    return made_by in ("prepare", "synthetic") or (path / PREPARE_FILE).is_file()


def prepare_features(config: ml_collections.ConfigDict) -> Path:
    """Returns features_dir, creating it first when `config.prepare` says how.

    A prepared directory records what made it (prepare.json). When the config asks for other
    generator or export arguments, the features are made again (`stale_features="regenerate"`)
    or the run is refused (`"refuse"`); never reused silently. Only a missing or empty path, or
    features a run prepared, are (re)made: any other directory is an error, its files untouched.
    The directory is locked (`locks`) while it is checked and made.
    """
    path = check(config)
    if not config.prepare:
        return path
    requested = json.loads(json.dumps(_requested(config, path)))
    record = path / PREPARE_FILE
    with locks.hold(path, "features_dir"):
        if os.path.lexists(path) and not ownership.is_empty(path) and not _prepared_by_us(path):
            what = "features" if (path / features_lib.META_FILE).is_file() else "files"
            raise ValueError(
                f"features_dir {path} holds {what} that no run prepared (no {PREPARE_FILE}); "
                f"prepare={config.prepare!r} makes features only in a new or empty directory or "
                "one it made: pass --config.prepare= to read these as they are, or choose "
                "another features_dir"
            )
        if (path / features_lib.META_FILE).is_file():
            found = _read_record(record)
            if found == requested:
                return path
            if config.stale_features == "refuse":
                raise ValueError(
                    f"{path}: made with other {config.prepare} arguments ({record}: {found}) "
                    f"than this config asks for; remove it or set stale_features='regenerate'"
                )
            logging.warning("%s: made with other arguments than requested; making it again", path)
        features_lib.mark_features(path, "prepare")
        record.unlink(missing_ok=True)  # a run killed while making it leaves no matching record
        if config.prepare == "synthetic":
            logging.info("Writing synthetic features to %s", path)
            synthetic.write(path, **config.synthetic.to_dict())
        else:
            run_export(export_argv(config.export, path))
        with atomic.atomic_write(record, "w") as f:
            json.dump(requested, f, indent=2)
    return path


def _read_record(record: Path) -> dict | None:
    try:
        found = json.loads(record.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):
        return {"unreadable": str(record)}
    return found if isinstance(found, dict) else {"unreadable": str(record)}


def extra_splits(config: ml_collections.ConfigDict) -> list[str]:
    return [s.strip() for s in config.extra_test_splits.split(",") if s.strip()]


def without_unknown_groups(data: features_lib.FeatureSet) -> features_lib.FeatureSet:
    """A feature set that declares groups but labels none of its rows (all -1) has no groups:
    every method then balances and selects by class, as on the fine-grained sets."""
    if data.num_groups == 0 or any((s.groups >= 0).any() for s in data.splits.values()):
        return data
    logging.warning(
        "%s: meta.json declares %d groups but every row's group is -1: running without groups "
        "(selection by accuracy, class balancing)",
        data.path,
        data.num_groups,
    )
    meta = {**data.meta, "num_groups": 0, "group_names": []}
    return dataclasses.replace(data, meta=meta)


def method_data(
    config: ml_collections.ConfigDict, data: features_lib.FeatureSet
) -> features_lib.FeatureSet:
    """What every method receives: `data`, or with ``config.group_labels="none"`` `data` without
    any group label (`features.without_group_labels`), so no method can read one."""
    if config.get("group_labels", "all") == "none":
        return features_lib.without_group_labels(data)
    return data


def prepare_loaded(
    config: ml_collections.ConfigDict, data: features_lib.FeatureSet
) -> features_lib.FeatureSet:
    """A loaded feature set as `config` uses it: its extra splits present, groups that label no
    row dropped (`without_unknown_groups`), computing in float64 when ``config.float64``
    (`features.with_dtype`; the caller turns ``jax_enable_x64`` on), padded to row buckets when
    ``config.row_buckets`` (`features.with_row_buckets`), `config.val_split` applied,
    no split empty (`check_splits`)."""
    check_val_split(config)
    fraction = config.val_split.fraction
    for name in (*features_lib.SPLITS, *extra_splits(config)):
        if name not in data.splits:
            raise ValueError(f"{data.path}: no split {name!r}; has {sorted(data.splits)}")
    data = without_unknown_groups(data)
    data = features_lib.with_dtype(data, np.float64 if config.float64 else np.float32)
    data = features_lib.with_row_buckets(data, config.get("row_buckets", False))
    data = features_lib.split_validation(data, fraction, config.val_split.seed)
    check_splits(data)
    return data


def load(config: ml_collections.ConfigDict) -> features_lib.FeatureSet:
    """The feature set of `config` (`prepare_loaded`).

    Refused: features another run is preparing right now, and an empty train, val, test or extra
    split (no metric can be computed on it). Warned: a group with no test example (left out of
    test WGA), and features whose every value is tiny (all predictions alike).
    """
    path = prepare_features(config)
    holder = locks.is_held(path)
    if holder:
        raise ValueError(
            f"features_dir {path} is being prepared by another run ({holder}); wait for it to "
            "finish"
        )
    data = features_lib.load(path, splits=(*features_lib.SPLITS, *extra_splits(config)))
    return prepare_loaded(config, data)


def check_splits(data: features_lib.FeatureSet) -> None:
    """One-line errors for empty splits; warnings for empty test groups, degenerate features."""
    for name, split in data.splits.items():
        if split.num_examples == 0:
            raise ValueError(
                f"{data.path}/{name}: the split is empty (meta.json 'splits': {name}: 0); every "
                "method needs examples in train, val and test"
            )
    test = data.test
    if data.num_groups and test.has_groups:
        counts = np.bincount(test.groups[test.groups >= 0], minlength=data.num_groups)
        missing = [data.group_names[g] for g in np.flatnonzero(counts == 0)]
        if missing:
            logging.warning(
                "%s/test: no example of group(s) %s: test WGA is the worst of the other groups",
                data.path,
                missing,
            )
    sample = np.asarray(data.train.features[:4096], np.float32)
    scale = float(np.abs(sample).max()) if sample.size else 0.0
    if scale < 1e-12:
        logging.warning(
            "%s/train: every feature value is below 1e-12 in magnitude (max %.3g): the "
            "features are degenerate, every head predicts alike",
            data.path,
            scale,
        )
