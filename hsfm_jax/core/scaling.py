"""Feature standardization: scikit-learn's ``StandardScaler`` statistics on the device
(`fit_scaler`) or over a large host array (`host_scaler`), and `fold_scaler`, which turns a head
on standardized features into the same head on raw features (every method returns heads over
raw features, so the one evaluator scores them alike)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from hsfm_jax.core import heads


def fit_scaler(features: jnp.ndarray, weights: jnp.ndarray | None = None):
    """StandardScaler statistics (mean, scale) over rows with weight > 0 (ddof=0, scale 1 for
    constant columns, as scikit-learn). features (N, d) -> ((d,), (d,))."""
    if weights is None:
        weights = jnp.ones(features.shape[:1], features.dtype)
    weights = weights / jnp.sum(weights)
    mean = weights @ features
    var = weights @ jnp.square(features - mean)
    scale = jnp.sqrt(var)
    return mean, jnp.where(scale > 1e-12 * jnp.maximum(jnp.abs(mean), 1.0), scale, 1.0)


def host_scaler(features: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """`fit_scaler` for a (possibly memory-mapped, large) host array, in float64 chunks: float64
    (d,) mean and scale, which the caller casts to its dtype once."""
    n = features.shape[0]
    total = np.zeros(features.shape[1])
    for s in range(0, n, chunk):
        total += np.asarray(features[s : s + chunk], np.float64).sum(0)
    mean = total / n
    sq = np.zeros_like(mean)
    for s in range(0, n, chunk):
        sq += np.square(np.asarray(features[s : s + chunk], np.float64) - mean).sum(0)
    scale = np.sqrt(sq / n)
    scale = np.where(scale > 1e-12 * np.maximum(np.abs(mean), 1.0), scale, 1.0)
    return mean, scale


def fold_scaler(head: heads.LinearHead, mean: jnp.ndarray, scale: jnp.ndarray) -> heads.LinearHead:
    """A head on standardized features -> the same head on raw features.

    W z + b with z = (x - mean) / scale equals (W / scale) x + (b - (W / scale) mean).
    """
    weight = head.weight / scale
    return heads.LinearHead(weight, head.bias - weight @ mean)
