"""The one evaluator: per-group/per-class accuracy, WGA, mean and train-weighted averages."""

import jax.numpy as jnp
import numpy as np
import pytest

from hsfm_jax.core import heads
from hsfm_jax.reporting import evaluate


def test_hand_computed():
    labels = jnp.array([0, 0, 0, 1, 1, 1, 1])
    groups = jnp.array([0, 0, 1, 2, 3, 3, 3])
    correct = jnp.array([1, 1, 0, 1, 1, 0, 1], bool)
    m = evaluate.accuracy_metrics(
        correct,
        labels,
        groups,
        num_classes=2,
        num_groups=4,
        train_group_counts=jnp.array([10.0, 0.0, 30.0, 60.0]),
    )
    np.testing.assert_allclose(m["group_acc"], [1.0, 0.0, 1.0, 2 / 3])
    np.testing.assert_allclose(m["wga"], 0.0)
    np.testing.assert_allclose(m["mean_acc"], 5 / 7)
    np.testing.assert_allclose(m["class_acc"], [2 / 3, 3 / 4])
    np.testing.assert_allclose(m["worst_class_acc"], 2 / 3)
    # train weights: group 1 has weight 0, so its 0% does not count.
    np.testing.assert_allclose(
        m["train_weighted_acc"], (10 * 1 + 30 * 1 + 60 * 2 / 3) / 100, rtol=1e-6
    )


def test_empty_group_is_nan_and_ignored_by_wga():
    m = evaluate.accuracy_metrics(
        jnp.array([1, 0, 1], bool),
        jnp.array([0, 1, 1]),
        jnp.array([0, 3, 3]),
        num_classes=2,
        num_groups=4,
    )
    assert np.isnan(m["group_acc"][1]) and np.isnan(m["group_acc"][2])
    np.testing.assert_allclose(m["wga"], 0.5)
    np.testing.assert_array_equal(m["group_count"], [1, 0, 0, 2])


def test_unknown_groups_skipped():
    m = evaluate.accuracy_metrics(
        jnp.array([1, 0]), jnp.array([0, 1]), jnp.array([-1, -1]), num_classes=2, num_groups=0
    )
    assert "wga" not in m
    np.testing.assert_allclose(m["class_acc"], [1.0, 0.0])


def test_evaluate_head_predicts_argmax():
    head = heads.LinearHead(jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.zeros(2))
    from hsfm_jax.data.features import SplitArrays

    split = SplitArrays(
        jnp.array([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]]), jnp.array([0, 1, 1]), jnp.array([0, 1, 1])
    )
    m = evaluate.evaluate_head(head, split, num_classes=2, num_groups=2)
    np.testing.assert_allclose(m["group_acc"], [1.0, 0.5])


def test_selection_metric_name():
    assert evaluate.selection_metric_name(4) == "wga"
    assert evaluate.selection_metric_name(0) == "mean_acc"
    assert evaluate.selection_metric_name(0, "worst_class_acc") == "worst_class_acc"
    with pytest.raises(ValueError, match="needs group labels"):
        evaluate.selection_metric_name(0, "wga")
    with pytest.raises(ValueError, match="selection_metric must be"):
        evaluate.selection_metric_name(4, "best")
