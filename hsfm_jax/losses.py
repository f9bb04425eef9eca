"""Cross-entropy losses (paper Eq. 4, 9, 12, 16)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hsfm_jax import heads, linalg


def per_example_cross_entropy(*, logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Cross-entropy of each row: logits (N, C), labels (N,) int -> (N,)."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def cross_entropy(*, logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Mean cross-entropy over rows: logits (N, C), labels (N,) -> ()."""
    return jnp.mean(per_example_cross_entropy(logits=logits, labels=labels))


def head_loss(head: heads.LinearHead, features: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Mean cross-entropy of a linear head on (features (N, d), labels (N,))."""
    return cross_entropy(logits=heads.apply(head, features), labels=labels)


# The hand-written meta-gradients (`meta_vjp`, `meta_gram`) work on one-hot labels and need the
# softmax itself, with the CPU-shaped row reductions of `linalg`.


def softmax_ce_grad(
    logits: jnp.ndarray, onehot: jnp.ndarray, n: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(P, (P - onehot) / n): the softmax of logits (N, C) and the gradient of the mean CE over
    `n` rows with respect to the logits."""
    e = jnp.exp(logits - linalg.row_max(logits))
    p = e / linalg.row_sum(e)
    return p, (p - onehot) / n


def onehot_cross_entropy(
    features: jnp.ndarray, weight: jnp.ndarray, bias: jnp.ndarray, onehot: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(mean CE, logits (N, C)) of the head (weight (C, d), bias (C,)) on features (N, d)."""
    logits = linalg.matmul_nt(features, weight) + bias
    return -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits, axis=-1), axis=-1)), logits
