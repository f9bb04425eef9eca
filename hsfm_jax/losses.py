"""Cross-entropy losses (paper Eq. 4, 9, 12, 16)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hsfm_jax import heads


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
