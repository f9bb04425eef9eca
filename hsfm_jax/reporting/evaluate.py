"""One evaluator for every method: per-group and per-class accuracy, WGA, averages.

Follows the convention of spurious_feature_learning / DFR (Kirichenko et al., 2023):

- ``group_acc``: accuracy of each group (NaN for a group with no example in the split);
- ``wga``: worst-group accuracy over the groups present in the split;
- ``mean_acc``: plain accuracy over all examples of the split;
- ``train_weighted_acc``: group accuracies averaged with weights = train group proportions
  (what DFR and the HSFM paper report as "Average" on Waterbirds);
- ``class_acc`` / ``worst_class_acc`` / ``mean_class_acc``: per-class accuracy, for datasets
  without groups (fine-grained sets) and as extra information otherwise.

Model selection (`selection_score`) reads one of these by name, or ``sfit`` (NeuronTune's
spuriousness fitness, `hsfm_jax.core.spuriousness`). ``worst_class_acc`` and ``sfit`` read no group
label: with ``group_labels="none"`` "auto" resolves to ``worst_class_acc``, SubpopBench's
``ValWorstAccAttributeNo`` (Yang et al., 2023).

Everything is a pure jittable function of arrays, so it runs inside the jitted HSFM loop and
vmaps over seeds. Metrics are returned as a dict of arrays (a pytree).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hsfm_jax.core import heads, spuriousness
from hsfm_jax.data import buckets
from hsfm_jax.data.features import SplitArrays

SELECTION_METRICS = ("wga", "mean_acc", "worst_class_acc", "mean_class_acc", "sfit")


def _segment_accuracy(correct: jnp.ndarray, segment: jnp.ndarray, num_segments: int):
    """Accuracy per segment id in [0, num_segments); ids < 0 are ignored. -> (acc, count)."""
    valid = segment >= 0
    ids = jnp.where(valid, segment, 0)
    hits = jax.ops.segment_sum(jnp.where(valid, correct, 0.0), ids, num_segments=num_segments)
    count = jax.ops.segment_sum(valid.astype(jnp.float32), ids, num_segments=num_segments)
    acc = jnp.where(count > 0, hits / jnp.maximum(count, 1.0), jnp.nan)
    return acc, count


def _nanmin_present(acc: jnp.ndarray, count: jnp.ndarray) -> jnp.ndarray:
    return jnp.min(jnp.where(count > 0, acc, jnp.inf))


def accuracy_metrics(
    correct: jnp.ndarray,
    labels: jnp.ndarray,
    groups: jnp.ndarray,
    *,
    num_classes: int,
    num_groups: int,
    train_group_counts: jnp.ndarray | None = None,
) -> dict[str, jnp.ndarray]:
    """Named metrics from per-example correctness.

    Args:
      correct: (N,) bool or float, whether each example is classified correctly.
      labels: (N,) int; rows with a label < 0 count in no metric.
      groups: (N,) int, -1 where unknown.
      num_classes: C.
      num_groups: G (0 for datasets without groups).
      train_group_counts: (G,) train examples per group, for ``train_weighted_acc``.

    Returns:
      dict with ``mean_acc``, ``class_acc`` (C,), ``worst_class_acc``, ``mean_class_acc`` and,
      when G > 0, ``group_acc`` (G,), ``group_count`` (G,), ``wga``, ``train_weighted_acc``.
    """
    correct = correct.astype(jnp.float32)
    class_acc, class_count = _segment_accuracy(correct, labels, num_classes)
    counted = buckets.valid(labels)  # the split's own rows, not padding ones
    metrics = {
        "mean_acc": jnp.sum(jnp.where(counted, correct, 0.0)) / jnp.maximum(jnp.sum(counted), 1),
        "class_acc": class_acc,
        "worst_class_acc": _nanmin_present(class_acc, class_count),
        "mean_class_acc": jnp.nanmean(class_acc),
    }
    if num_groups > 0:
        group_acc, group_count = _segment_accuracy(correct, groups, num_groups)
        present = group_count > 0
        if train_group_counts is None:
            weights = jnp.ones((num_groups,), jnp.float32)
        else:
            weights = jnp.asarray(train_group_counts, jnp.float32)
        weights = jnp.where(present, weights, 0.0)
        weighted = jnp.sum(jnp.where(present, group_acc, 0.0) * weights) / jnp.maximum(
            jnp.sum(weights), 1e-12
        )
        metrics.update(
            group_acc=group_acc,
            group_count=group_count,
            wga=_nanmin_present(group_acc, group_count),
            train_weighted_acc=weighted,
        )
    return metrics


def evaluate_head(
    head: heads.LinearHead,
    split: SplitArrays,
    *,
    num_classes: int,
    num_groups: int,
    train_group_counts: jnp.ndarray | None = None,
) -> dict[str, jnp.ndarray]:
    """Metrics of a linear head on a split (see `accuracy_metrics`)."""
    return evaluate_logits(
        heads.apply(head, split.features),
        split,
        num_classes=num_classes,
        num_groups=num_groups,
        train_group_counts=train_group_counts,
    )


def evaluate_logits(
    logits: jnp.ndarray,
    split: SplitArrays,
    *,
    num_classes: int,
    num_groups: int,
    train_group_counts: jnp.ndarray | None = None,
) -> dict[str, jnp.ndarray]:
    """Metrics from a split's logits (N, C), already computed (see `accuracy_metrics`)."""
    correct = jnp.argmax(logits, axis=-1).astype(jnp.int32) == split.labels
    return accuracy_metrics(
        correct,
        split.labels,
        split.groups,
        num_classes=num_classes,
        num_groups=num_groups,
        train_group_counts=train_group_counts,
    )


def selection_metric_name(
    num_groups: int, requested: str = "auto", *, group_labels: str = "all"
) -> str:
    """The metric used to pick a model.

    "auto": WGA when groups exist; without them mean accuracy, or worst-class accuracy when the
    run removed its group labels (``group_labels="none"``, the label-free track).
    """
    if requested == "auto":
        if group_labels == "none":
            return "worst_class_acc"
        return "wga" if num_groups > 0 else "mean_acc"
    if requested not in SELECTION_METRICS:
        raise ValueError(
            f"selection_metric must be 'auto' or one of {SELECTION_METRICS}, got {requested!r}"
        )
    if requested == "wga" and group_labels == "none":
        raise ValueError(
            "selection_metric='wga' reads val group labels, which group_labels='none' removes"
        )
    if requested == "wga" and num_groups == 0:
        raise ValueError(
            "selection_metric='wga' needs group labels, but the dataset has num_groups=0"
        )
    return requested


def selection_score(
    head: heads.LinearHead,
    features: jnp.ndarray,
    labels: jnp.ndarray,
    groups: jnp.ndarray,
    *,
    metric: str,
    num_classes: int,
    num_groups: int,
) -> jnp.ndarray:
    """() the selection score `metric` (a name of `SELECTION_METRICS`) of `head`, higher is better.

    Args:
      head: weight (C, d), bias (C,).
      features: (N, d) float; labels: (N,) int (< 0: row ignored by the per-class metrics and
        SFit); groups: (N,) int, -1 where unknown (read only by ``wga``).
    """
    if metric == "sfit":
        return spuriousness.sfit_score(head, features, labels, num_classes=num_classes)
    correct = heads.predict(head, features) == labels
    return accuracy_metrics(
        correct, labels, groups, num_classes=num_classes, num_groups=num_groups
    )[metric]


def to_python(metrics) -> dict:
    """Converts a metrics pytree to JSON-friendly Python (lists and floats, NaN -> None)."""

    def convert(x):
        x = np.asarray(x)
        if x.ndim == 0:
            v = float(x)
            return None if np.isnan(v) else v
        return [convert(v) for v in x]

    return jax.tree_util.tree_map(convert, metrics)
