"""The base experiment config: every field a run reads, with defaults.

Dataset configs start from `base_config()` and override what the paper's tables give. Each
method's fields (`config.<method>`) are its module's `default_config()` (`hsfm_jax.methods`).
"""

from __future__ import annotations

import ml_collections

from hsfm_jax import methods
from hsfm_jax.runtime import experiment


def hsfm_config(**overrides) -> ml_collections.ConfigDict:
    """HSFM hyperparameters (`hsfm_jax.methods.hsfm.method.default_config`) with `overrides`."""
    config = methods.default_configs()["hsfm"]
    config.update(overrides)
    return config


def erm_config(**overrides) -> ml_collections.ConfigDict:
    """The ERM head recipe (`hsfm_jax.methods.erm.default_config`) with `overrides`."""
    config = methods.default_configs()["erm"]
    config.update(overrides)
    return config


def base_config() -> ml_collections.ConfigDict:
    """Every field a run reads, with defaults (`hsfm_jax.runtime.experiment.default_config`)."""
    return experiment.default_config()
