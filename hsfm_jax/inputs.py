"""The feature set an experiment config describes: made when asked, loaded, val split applied.

``config.prepare`` says how to make a missing ``features_dir``: "synthetic" writes
`hsfm_jax.synthetic` features, "export" runs ``python -m feature_export.export`` with the flags
of ``config.export`` in a subprocess (the JAX process never imports PyTorch).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ml_collections
from absl import logging

from hsfm_jax import features as features_lib
from hsfm_jax import synthetic

PLACEHOLDER_PREFIX = "/path/to"
PREPARE_MODES = ("", "synthetic", "export")


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
    fraction = config.val_split.fraction
    if not isinstance(fraction, int | float) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_split.fraction must be in [0, 1), got {fraction!r}")
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


def run_export(argv: list[str]) -> None:
    """Runs the exporter in a subprocess; its one-line error becomes a ValueError here."""
    command = [sys.executable, "-m", "feature_export.export", *argv]
    logging.info("Exporting features: %s", " ".join(command))
    proc = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        message = (errors or lines or [f"exit code {proc.returncode}"])[-1]
        raise ValueError(f"feature export failed: {message.removeprefix('error: ')}")


def prepare_features(config: ml_collections.ConfigDict) -> Path:
    """Returns features_dir, creating it first when `config.prepare` says how."""
    path = check(config)
    if (path / features_lib.META_FILE).is_file() or not config.prepare:
        return path
    if config.prepare == "synthetic":
        logging.info("Writing synthetic features to %s", path)
        synthetic.write(path, **config.synthetic.to_dict())
    else:
        run_export(export_argv(config.export, path))
    return path


def extra_splits(config: ml_collections.ConfigDict) -> list[str]:
    return [s.strip() for s in config.extra_test_splits.split(",") if s.strip()]


def load(config: ml_collections.ConfigDict) -> features_lib.FeatureSet:
    """The feature set of `config`, with `config.val_split` applied."""
    data = features_lib.load(
        prepare_features(config), splits=(*features_lib.SPLITS, *extra_splits(config))
    )
    return features_lib.split_validation(data, config.val_split.fraction, config.val_split.seed)
