"""hsfm_jax: HSFM (Hard-Set Feature-space Meta-learning, ECCV 2026) and last-layer baselines in JAX."""

from hsfm_jax import evaluate, features, heads, hsfm, hsfm_method, losses, methods
from hsfm_jax.evaluate import accuracy_metrics, evaluate_head, evaluate_logits
from hsfm_jax.features import FeatureSet, Split, SplitArrays, load, save
from hsfm_jax.heads import LinearHead
from hsfm_jax.methods import REGISTRY

__all__ = [
    "REGISTRY",
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
    "hsfm",
    "hsfm_method",
    "load",
    "losses",
    "methods",
    "save",
]
