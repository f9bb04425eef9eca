"""Results as data: evaluate rows of heads, aggregate over seeds (`tables` renders them).

A "row" is a method's heads with a leading seed axis (S, C, d). Every row is evaluated by the
one evaluator (`hsfm_jax.evaluate`) on the same splits, so rows are comparable.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from hsfm_jax import evaluate, heads
from hsfm_jax.features import SplitArrays

GROUP_COLUMNS = (
    ("test", "wga", "test WGA"),
    ("test", "mean_acc", "test mean acc"),
    ("test", "train_weighted_acc", "test avg (train-weighted)"),
    ("val", "wga", "val WGA"),
)
CLASS_COLUMNS = (
    ("test", "mean_acc", "test acc"),
    ("test", "mean_class_acc", "test mean-class acc"),
    ("test", "worst_class_acc", "test worst-class acc"),
    ("val", "mean_acc", "val acc"),
)
METRIC_NOTES = {
    "wga": "worst-group accuracy over groups present in the split",
    "mean_acc": "accuracy over all examples of the split",
    "train_weighted_acc": (
        "group accuracies weighted by train group proportions (the 'Average' of DFR and the "
        "HSFM paper on Waterbirds)"
    ),
    "group_acc": "accuracy of each group (None where the split has none of it)",
    "class_acc": "accuracy of each class",
    "category_acc": "pooled accuracy over the groups of each category (meta.json group_categories)",
}


def evaluate_rows(
    rows: Mapping[str, heads.LinearHead],
    splits: Mapping[str, SplitArrays],
    *,
    num_classes: int,
    num_groups: int,
    train_group_counts,
    group_categories: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, dict[str, dict]]:
    """Metrics of every row on every split: {row: {split: metrics with leading seed axis}}."""
    categories = tuple((name, tuple(ids)) for name, ids in (group_categories or {}).items())
    return {
        name: {
            split_name: _evaluate_seeds(
                head,
                split,
                train_group_counts,
                num_classes=num_classes,
                num_groups=num_groups,
                categories=categories if num_groups else (),
            )
            for split_name, split in splits.items()
        }
        for name, head in rows.items()
    }


@functools.partial(jax.jit, static_argnames=("num_classes", "num_groups", "categories"))
def _evaluate_seeds(head, split, train_group_counts, *, num_classes, num_groups, categories):
    def one(head):
        metrics = evaluate.evaluate_head(
            head,
            split,
            num_classes=num_classes,
            num_groups=num_groups,
            train_group_counts=train_group_counts,
        )
        if categories:
            metrics["category_acc"] = {
                name: _pooled(metrics["group_acc"], metrics["group_count"], ids)
                for name, ids in categories
            }
        return metrics

    return jax.vmap(one)(head)


def _pooled(group_acc, group_count, ids):
    ids = np.asarray(ids)
    acc = jax.numpy.nan_to_num(group_acc[ids])
    return (acc * group_count[ids]).sum() / jax.numpy.maximum(group_count[ids].sum(), 1.0)


def summarize(metrics) -> dict:
    """{metric: {"mean", "std", "per_seed"}} over the leading seed axis; NaN -> None."""

    def one(x):
        x = np.asarray(x, np.float64)
        with np.errstate(all="ignore"):
            mean = np.nanmean(x, axis=0) if np.isfinite(x).any() else np.full(x.shape[1:], np.nan)
            std = np.nanstd(x, axis=0) if np.isfinite(x).any() else np.full(x.shape[1:], np.nan)
        return {
            "mean": evaluate.to_python(mean),
            "std": evaluate.to_python(std),
            "per_seed": evaluate.to_python(x),
        }

    return jax.tree_util.tree_map(one, metrics)


def json_array(x) -> list:
    """Nested lists for strict JSON: ints as ints, non-finite floats as None."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return x.tolist()
    values = x.astype(np.float64).astype(object)
    values[~np.isfinite(x)] = None
    return values.tolist()
