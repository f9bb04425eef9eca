"""One experiment from a config, as `experiments.main` runs it: `hsfm_jax.experiment.run` on the
config's ``features_dir``, writing its files to `workdir` (see `hsfm_jax.experiment`)."""

from __future__ import annotations

from pathlib import Path

import ml_collections

from hsfm_jax import experiment
from hsfm_jax.experiment import Fitted, check, fit  # noqa: F401  (the loop's parts, for tests)


def run(config: ml_collections.ConfigDict, workdir: str | Path, *, progress: bool = False) -> dict:
    """Runs the experiment `config` describes; returns its results.json content."""
    results = experiment.run(config.features_dir, config=config, workdir=workdir, progress=progress)
    return results.report
