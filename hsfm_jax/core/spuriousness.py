"""Spuriousness scores of a head's errors (NeuronTune, Zheng, Ye & Zhang, ICML 2025, Eq. 5) and
SFit, their label-free model-selection score.

For class y and feature dimension i, ``delta_i^y`` = median activation over the class's
misclassified examples minus the median over its correctly classified ones; SFit = sum over
classes and dimensions of ``|delta|``, higher is better. It reads features, class labels and
predictions only, never a group label, so any method can select models by it
(``selection_metric="sfit"``, `hsfm_jax.reporting.evaluate.selection_score`).

Medians over variable-size subsets are computed without dynamic shapes: activations are sorted
once per column, and a subset's median is read off by a cumulative count of its members in that
order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hsfm_jax.core import heads


def subset_median(values: jnp.ndarray, rows: jnp.ndarray, mask: jnp.ndarray):
    """Per class and column, the median over the rows selected by `mask`.

    Args:
      values, rows: from `class_sorted_activations`, (C, M, d).
      mask: (N,) bool, the subset (it is intersected with each class).

    Returns:
      (median (C, d), count (C,)): NumPy's median (mean of the two middle values for an even
      count); NaN where the class has no selected row.
    """
    selected = jnp.where(rows >= 0, mask[jnp.maximum(rows, 0)], False)
    cumulative = jnp.cumsum(selected, axis=1)  # (C, M, d)
    count = cumulative[:, -1, :]  # (C, d), the same in every column

    def kth(k):  # k-th smallest (0-based) selected value per (class, column)
        position = jnp.argmax(cumulative > k[:, None, :], axis=1)
        return jnp.take_along_axis(values, position[:, None, :], axis=1)[:, 0, :]

    low = kth(jnp.maximum(count - 1, 0) // 2)
    high = kth(count // 2)
    median = jnp.where(count > 0, 0.5 * (low + high), jnp.nan)
    return median, count[:, 0]


def spuriousness_scores(
    values: jnp.ndarray, rows: jnp.ndarray, correct: jnp.ndarray, member: jnp.ndarray
) -> jnp.ndarray:
    """delta_i^y of Eq. 5: median over misclassified minus median over correct, (C, d).

    Args:
      values, rows: `class_sorted_activations` of D_Ide's superset (C, M, d).
      correct: (N,) bool, prediction outcomes of the current head.
      member: (N,) bool, which rows belong to D_Ide.

    A class with no misclassified or no correct member gets delta = 0.
    """
    wrong_median, wrong_count = subset_median(values, rows, member & ~correct)
    right_median, right_count = subset_median(values, rows, member & correct)
    both = (wrong_count > 0) & (right_count > 0)
    return jnp.where(both[:, None], wrong_median - right_median, 0.0)


def sfit(delta: jnp.ndarray) -> jnp.ndarray:
    """Spuriousness fitness score: sum over classes and dimensions of |delta|."""
    return jnp.sum(jnp.abs(delta))


def sfit_score(
    head: heads.LinearHead, features: jnp.ndarray, labels: jnp.ndarray, *, num_classes: int
) -> jnp.ndarray:
    """() SFit of `head` on a split, activations ``|features|`` (NeuronTune's default).

    Args:
      head: weight (C, d), bias (C,).
      features: (N, d) float.
      labels: (N,) int in [0, C); rows with a label < 0 are ignored.
      num_classes: C.

    The same value as ``sfit(spuriousness_scores(...))`` on class-sorted activations of the rows,
    computed from one sort of the whole split (jittable; classes are visited one at a time, so
    memory stays (N, d) for any C).
    """
    activations = jnp.abs(features)
    order = jnp.argsort(activations, axis=0, stable=True)
    values = jnp.take_along_axis(activations, order, axis=0)[None]  # (1, N, d)
    rows = order.astype(jnp.int32)[None]
    correct = heads.predict(head, features) == labels

    def one_class(y):
        member = labels == y
        wrong, wrong_count = subset_median(values, rows, member & ~correct)
        right, right_count = subset_median(values, rows, member & correct)
        both = (wrong_count > 0) & (right_count > 0)
        return jnp.sum(jnp.where(both[:, None], jnp.abs(wrong - right), 0.0))

    return jnp.sum(jax.lax.map(one_class, jnp.arange(num_classes)))
