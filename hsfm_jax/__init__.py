"""hsfm_jax: HSFM (Hard-Set Feature-space Meta-learning, ECCV 2026) and last-layer baselines in JAX.

data = hsfm_jax.FeatureSet.from_arrays(train=(X, y, g), val=(Xv, yv, gv), test=(Xt, yt, gt))
print(hsfm_jax.run(data, methods="erm,dfr,hsfm", num_seeds=3).table())
"""

from hsfm_jax import (
    evaluate,
    experiment,
    features,
    heads,
    hsfm,
    hsfm_method,
    losses,
    methods,
    synthetic,
)
from hsfm_jax.evaluate import accuracy_metrics, evaluate_head, evaluate_logits
from hsfm_jax.experiment import Results, default_config, run
from hsfm_jax.features import FeatureSet, Split, SplitArrays, from_arrays, load, save
from hsfm_jax.heads import LinearHead
from hsfm_jax.methods import REGISTRY

__version__ = "0.1.0"

__all__ = [
    "REGISTRY",
    "FeatureSet",
    "LinearHead",
    "Results",
    "Split",
    "SplitArrays",
    "__version__",
    "accuracy_metrics",
    "default_config",
    "evaluate",
    "evaluate_head",
    "evaluate_logits",
    "experiment",
    "features",
    "from_arrays",
    "heads",
    "hsfm",
    "hsfm_method",
    "load",
    "losses",
    "methods",
    "run",
    "save",
    "synthetic",
]
