"""One experiment from a config, as `experiments.main` runs it: `hsfm_jax.runtime.experiment.run` on the
config's ``features_dir``, writing its files to `workdir` (see `hsfm_jax.runtime.experiment`)."""

from __future__ import annotations

from pathlib import Path

import ml_collections

from hsfm_jax.runtime import experiment


def run(config: ml_collections.ConfigDict, workdir: str | Path, *, progress: bool = False) -> dict:
    """Runs the experiment `config` describes; returns its results.json content."""
    results = experiment.run(config.features_dir, config=config, workdir=workdir, progress=progress)
    return results.report
