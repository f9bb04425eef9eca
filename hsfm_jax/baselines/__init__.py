"""Last-layer baselines on the same features as HSFM.

Each baseline module exposes ``default_config()`` and
``run(data: FeatureSet, config, keys (S,)) -> {row name: LinearHead with leading seed axis}``,
heads over raw features (any standardization or masking is folded into the head), so the one
evaluator scores every method the same way. ERM (`erm.py`) is also the building block the others
and HSFM's initial head use.
"""

from __future__ import annotations

import importlib
import importlib.util
import types

# Baselines with the run/default_config contract, in the order results tables list them.
BASELINES = ("dfr", "neurontune", "group_dro", "jtt", "afr")


def available() -> dict[str, types.ModuleType]:
    """The baseline modules present in this installation, by name."""
    return {
        name: importlib.import_module(f"hsfm_jax.baselines.{name}")
        for name in BASELINES
        if importlib.util.find_spec(f"hsfm_jax.baselines.{name}") is not None
    }
