"""Hard set: the Khard highest-loss validation examples of each class (paper Eqs. 4-6)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def check_class_sizes(labels: np.ndarray, per_class: int, num_classes: int, *, what: str) -> None:
    """Raises ValueError naming the first class with fewer than `per_class` examples.

    Args:
      labels: (N,) int host array.
      per_class: examples needed from each class.
      num_classes: C.
      what: names the set and the config field in the message, e.g. "val (hard_set_size)".
    """
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    for c, count in enumerate(counts[:num_classes]):
        if count < per_class:
            raise ValueError(
                f"{what}: class {c} has {count} examples, fewer than the {per_class} requested "
                "per class"
            )


FILL_MODES = ("error", "repeat")


@functools.partial(jax.jit, static_argnames=("num_classes", "per_class", "repeat_small_classes"))
def top_k_per_class(
    scores: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    num_classes: int,
    per_class: int,
    repeat_small_classes: bool = False,
) -> jnp.ndarray:
    """Indices of the `per_class` highest scores within each class.

    By default every class must have at least `per_class` examples (check with
    `check_class_sizes` beforehand: that check, at the boundary, is what keeps one class from
    being filled with another's examples). With `repeat_small_classes`, a class with n < per_class
    examples contributes all n of them, repeated in rank order (hardest first) to fill its
    `per_class` slots, so every class keeps the same weight in a mean over the set: top-k with k
    capped at the class size, class-balanced (for fine-grained sets with tiny val classes).

    Args:
      scores: (N,) float, e.g. per-example losses.
      labels: (N,) int in [0, C).

    Returns:
      (C * per_class,) int32 indices, class 0's first, each class's in decreasing score.
    """

    def one_class(c):
        in_class = labels == c
        masked = jnp.where(in_class, scores, -jnp.inf)
        order = jax.lax.top_k(masked, min(per_class, scores.shape[0]))[1]
        if repeat_small_classes:
            order = order[jnp.arange(per_class) % jnp.maximum(jnp.sum(in_class), 1)]
        return order

    return jax.vmap(one_class)(jnp.arange(num_classes)).reshape(-1).astype(jnp.int32)


def sample_per_class(
    key: jax.Array, labels: jnp.ndarray, *, num_classes: int, per_class: int
) -> jnp.ndarray:
    """Draws `per_class` indices of each class uniformly without replacement.

    Returns (C * per_class,) int32, class 0's first.
    """
    priorities = jax.random.uniform(key, labels.shape)
    return top_k_per_class(priorities, labels, num_classes=num_classes, per_class=per_class)
