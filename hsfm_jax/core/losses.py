"""Cross-entropy losses (paper Eq. 4, 9, 12, 16)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hsfm_jax.core import heads, linalg


def per_example_cross_entropy(*, logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Cross-entropy of each row: logits (N, C), labels (N,) int -> (N,)."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def cross_entropy(*, logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Mean cross-entropy over rows: logits (N, C), labels (N,) -> ()."""
    return jnp.mean(per_example_cross_entropy(logits=logits, labels=labels))


def onehot_columns(labels: jnp.ndarray, num_classes: int, dtype=jnp.float32) -> jnp.ndarray:
    """(C, N) one-hot labels, one column per example (the layout of `weighted_ce_grad`)."""
    return (jnp.arange(num_classes)[:, None] == labels[None, :]).astype(dtype)


def per_example_cross_entropy_columns(
    head: heads.LinearHead, features: jnp.ndarray, onehot_t: jnp.ndarray
) -> jnp.ndarray:
    """`per_example_cross_entropy` of a linear head (N,), computed on transposed (C, N) logits:
    the layout of `weighted_ce_grad`, faster than (N, C) with few classes (vmapped, on CPU)."""
    logits_t = head.weight @ features.T + head.bias[:, None]
    return jax.nn.logsumexp(logits_t, axis=0) - jnp.sum(onehot_t * logits_t, axis=0)


def weighted_ce_grad(
    head: heads.LinearHead, features: jnp.ndarray, onehot_t: jnp.ndarray, weights: jnp.ndarray
) -> heads.LinearHead:
    """The gradient of ``sum_i w_i CE_i`` of a linear head, in closed form.

    On transposed logits, one column per example: ``G = (softmax(Z) - Y) diag(w)`` (C, N), then
    ``dW = G X`` and ``db = G 1``. The softmax depends only on differences of logits, so they
    are taken relative to the last class, ``R = (W[:-1] - W[-1]) X^T + (b[:-1] - b[-1])``
    (C - 1, N), and the last row of the gradient is minus the sum of the others (a column of
    ``G`` sums to zero): two classes cost one row. ``jax.grad`` of the same sum gives these
    values to float rounding (tests/core/test_losses.py); vmapped over heads (seeds, grids) with few
    classes, this form runs 2-4x faster on the CPU than autodiff's (N, C) layout.

    Args:
      head: weight (C, d), bias (C,); features: (N, d); onehot_t: (C, N) one-hot labels
        (`onehot_columns`); weights: (N,) per-example weights (1 / N for the mean).
    """
    weight_rel, bias_rel = head.weight[:-1] - head.weight[-1:], head.bias[:-1] - head.bias[-1:]
    rel = weight_rel @ features.T + bias_rel[:, None]  # (C - 1, N)
    if head.num_classes == 2:  # the logistic function of the one relative logit
        probs = jax.nn.sigmoid(rel)
    else:
        top = jnp.maximum(jnp.max(rel, axis=0), 0.0)  # the last class's relative logit is 0
        e = jnp.exp(rel - top)
        probs = e / (jnp.exp(-top) + jnp.sum(e, axis=0))
    g = weights * (probs - onehot_t[:-1])  # (C - 1, N)
    weight, bias = g @ features, jnp.sum(g, axis=1)
    return heads.LinearHead(
        weight=jnp.concatenate([weight, -jnp.sum(weight, axis=0, keepdims=True)]),
        bias=jnp.concatenate([bias, -jnp.sum(bias, keepdims=True)]),
    )


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
