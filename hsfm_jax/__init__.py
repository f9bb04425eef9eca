"""hsfm_jax: HSFM (Hard-Set Feature-space Meta-learning, ECCV 2026) and last-layer baselines in JAX.

data = hsfm_jax.FeatureSet.from_arrays(train=(X, y, g), val=(Xv, yv, gv), test=(Xt, yt, gt))
print(hsfm_jax.run(data, methods="erm,dfr,hsfm", num_seeds=3).table())
"""

from hsfm_jax import methods
from hsfm_jax.core import heads, losses
from hsfm_jax.core.heads import LinearHead
from hsfm_jax.data import features, synthetic
from hsfm_jax.data.features import FeatureSet, Split, SplitArrays, from_arrays, load, save
from hsfm_jax.methods import REGISTRY
from hsfm_jax.methods.hsfm import algorithm as hsfm
from hsfm_jax.methods.hsfm import method as hsfm_method
from hsfm_jax.reporting import evaluate
from hsfm_jax.reporting.evaluate import accuracy_metrics, evaluate_head, evaluate_logits
from hsfm_jax.runtime import experiment
from hsfm_jax.runtime.experiment import Results, default_config, run

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
