"""ERM linear head on frozen features (the "Base (ERM)" rows of the HSFM paper's tables).

`fit` trains a linear head with cross-entropy (+ optional L2 on the weight) with an optax
optimizer, full batch or minibatch (optionally class-balanced sampling). It is one jitted
`lax.scan`, a pure function of (data, key), so it vmaps over seeds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from hsfm_jax import heads, losses, optim


def _objective(head, features, labels, weights, l2):
    per_example = losses.per_example_cross_entropy(
        logits=heads.apply(head, features), labels=labels
    )
    data_loss = jnp.sum(per_example * weights) / jnp.sum(weights)
    return data_loss + 0.5 * l2 * jnp.sum(head.weight**2)


@functools.partial(
    jax.jit,
    static_argnames=("num_classes", "optimizer", "steps", "batch_size", "class_balanced"),
)
def fit(
    features: jnp.ndarray,
    labels: jnp.ndarray,
    key: jax.Array,
    *,
    num_classes: int,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    steps: int = 1000,
    l2: float = 0.0,
    batch_size: int = 0,
    class_balanced: bool = False,
    init: heads.LinearHead | None = None,
) -> heads.LinearHead:
    """Trains a linear head.

    Args:
      features: (N, d) float.
      labels: (N,) int in [0, C).
      key: PRNG key for minibatch sampling (unused in full batch).
      num_classes: C.
      optimizer: name understood by `hsfm_jax.optim.make`.
      learning_rate: step size.
      steps: number of optimizer steps.
      l2: coefficient of 0.5 * l2 * ||W||^2 (bias not penalized).
      batch_size: 0 for full batch; else examples drawn per step.
      class_balanced: weight (full batch) or sample (minibatch) classes equally.
      init: starting head; zeros when None.

    Returns:
      The trained `LinearHead` (weight (C, d), bias (C,)).
    """
    n, d = features.shape
    head = heads.zeros(num_classes, d, features.dtype) if init is None else init
    counts = jnp.bincount(labels, length=num_classes).astype(features.dtype)
    example_weight = (
        1.0 / jnp.maximum(counts[labels], 1.0) if class_balanced else jnp.ones((n,), features.dtype)
    )
    tx = optim.make(optimizer, learning_rate)
    grad_fn = jax.grad(_objective)

    def step(carry, step_key):
        head, opt_state = carry
        if batch_size:
            p = example_weight / jnp.sum(example_weight)
            idx = jax.random.choice(step_key, n, (batch_size,), replace=True, p=p)
            grads = grad_fn(head, features[idx], labels[idx], jnp.ones((batch_size,)), l2)
        else:
            grads = grad_fn(head, features, labels, example_weight, l2)
        updates, opt_state = tx.update(grads, opt_state, head)
        return (jax.tree_util.tree_map(jnp.add, head, updates), opt_state), None

    (head, _), _ = jax.lax.scan(step, (head, tx.init(head)), jax.random.split(key, steps))
    return head
