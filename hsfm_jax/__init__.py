"""hsfm_jax: HSFM (Hard-Set Feature-space Meta-learning, ECCV 2026) and last-layer baselines in JAX."""

from hsfm_jax import evaluate, features, heads, losses
from hsfm_jax.evaluate import accuracy_metrics, evaluate_head, evaluate_logits
from hsfm_jax.features import FeatureSet, Split, SplitArrays, load, save
from hsfm_jax.heads import LinearHead

__all__ = [
    "FeatureSet",
    "LinearHead",
    "Split",
    "SplitArrays",
    "accuracy_metrics",
    "evaluate",
    "evaluate_head",
    "evaluate_logits",
    "features",
    "heads",
    "load",
    "losses",
    "save",
]
