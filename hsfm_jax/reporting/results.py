"""Results as data: evaluate rows of heads, aggregate over seeds (`tables` renders them), and
optionally a bootstrap interval of test WGA over test examples (``config.bootstrap``).

A "row" is a method's heads with a leading seed axis (S, C, d). Every row is evaluated by the
one evaluator (`hsfm_jax.reporting.evaluate`) on the same splits, so rows are comparable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hsfm_jax.core import heads
from hsfm_jax.data.features import SplitArrays
from hsfm_jax.reporting import evaluate
from hsfm_jax.runtime import program_cache

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


@program_cache.jit(static_argnames=("num_classes", "num_groups", "categories"))
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


# ----------------------------------------------------------------------------- bootstrap


def resample_indices(key: jax.Array, num_examples: int, num_resamples: int) -> jax.Array:
    """(B, N) int32: B resamples of N example indices, drawn uniformly with replacement."""
    return jax.random.randint(key, (num_resamples, num_examples), 0, num_examples, jnp.int32)


@program_cache.jit(static_argnames=("num_segments",))
def bootstrap_worst_accuracy(
    correct: jax.Array, segments: jax.Array, indices: jax.Array, *, num_segments: int
) -> jax.Array:
    """Worst-segment accuracy (WGA with groups as segments) on every resample.

    Args:
      correct: (S, N) bool or float, per seed and example.
      segments: (N,) int in [0, num_segments), -1 ignored (as `evaluate.accuracy_metrics`).
      indices: (B, N) from `resample_indices`.

    Returns:
      (B, S) float: per resample and seed, the lowest accuracy over the segments the resample
      holds.
    """
    n = segments.shape[0]
    one_hot = (segments[:, None] == jnp.arange(num_segments)).astype(jnp.float32)  # (N, G)
    correct = correct.astype(jnp.float32)

    def one(rows):
        counts = jnp.zeros((n,), jnp.float32).at[rows].add(1.0)
        total = counts @ one_hot  # (G,)
        hits = (correct * counts) @ one_hot  # (S, G)
        acc = jnp.where(total > 0, hits / jnp.maximum(total, 1.0), jnp.inf)
        return jnp.min(acc, axis=-1)

    return jax.lax.map(one, indices)


def bootstrap_interval(samples: np.ndarray, level: float = 0.95) -> dict:
    """Percentile intervals from `bootstrap_worst_accuracy`'s (B, S) samples: per seed, and of the
    mean over seeds (the table's cell) -> {"per_seed": [[lo, hi]] * S, "seed_mean": [lo, hi]}."""
    samples = np.asarray(samples, np.float64)
    q = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
    return {
        "level": level,
        "per_seed": np.percentile(samples, q, axis=0).T.tolist(),
        "seed_mean": np.percentile(samples.mean(axis=1), q).tolist(),
    }


def bootstrap_rows(
    rows: Mapping[str, heads.LinearHead],
    split: SplitArrays,
    *,
    segments: jax.Array,
    num_segments: int,
    key: jax.Array,
    num_resamples: int,
) -> dict[str, dict]:
    """{row: `bootstrap_interval`} of every row's worst-segment accuracy on `split`, all rows on
    the same resamples of its examples (so rows are compared on the same draws)."""
    indices = resample_indices(key, split.labels.shape[0], num_resamples)
    out = {}
    for name, head in rows.items():
        correct = jax.vmap(lambda h: heads.predict(h, split.features) == split.labels)(head)
        samples = bootstrap_worst_accuracy(correct, segments, indices, num_segments=num_segments)
        out[name] = bootstrap_interval(samples)
    return out


def json_array(x) -> list:
    """Nested lists for strict JSON: ints as ints, non-finite floats as None."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return x.tolist()
    values = x.astype(np.float64).astype(object)
    values[~np.isfinite(x)] = None
    return values.tolist()
