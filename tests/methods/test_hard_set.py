"""Hard set (Eqs. 4-6) and class-balanced support sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hsfm_jax.methods.hsfm import hard_set


def test_top_k_per_class_matches_numpy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=200)
    scores = rng.normal(size=200).astype(np.float32)
    idx = np.asarray(
        hard_set.top_k_per_class(
            jnp.asarray(scores), jnp.asarray(labels), num_classes=3, per_class=7
        )
    )
    assert idx.shape == (21,)
    for c in range(3):
        chosen = idx[7 * c : 7 * (c + 1)]
        assert np.all(labels[chosen] == c)
        expected = np.flatnonzero(labels == c)[np.argsort(-scores[labels == c])[:7]]
        np.testing.assert_array_equal(chosen, expected)


def test_exactly_k_when_class_has_exactly_k():
    labels = jnp.array([0, 0, 1, 1, 1])
    idx = hard_set.top_k_per_class(
        jnp.array([0.1, 0.2, 5.0, 4.0, 3.0]), labels, num_classes=2, per_class=2
    )
    np.testing.assert_array_equal(idx, [1, 0, 2, 3])


def test_class_too_small_is_an_error():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 10)
    with pytest.raises(
        ValueError, match=r"val \(hard_set_size\): class 1 has 3 examples, fewer than the 5"
    ):
        hard_set.check_class_sizes(labels, 5, 3, what="val (hard_set_size)")
    with pytest.raises(ValueError, match="class 3 has 0 examples"):
        hard_set.check_class_sizes(labels, 1, 4, what="val")
    hard_set.check_class_sizes(labels, 3, 3, what="val")


def test_sample_per_class_without_replacement():
    labels = jnp.asarray(np.repeat([0, 1, 2], [30, 8, 50]))
    for seed in range(5):
        idx = np.asarray(
            hard_set.sample_per_class(jax.random.key(seed), labels, num_classes=3, per_class=8)
        )
        assert len(set(idx.tolist())) == 24
        np.testing.assert_array_equal(np.asarray(labels)[idx], np.repeat([0, 1, 2], 8))
    a = hard_set.sample_per_class(jax.random.key(0), labels, num_classes=3, per_class=8)
    b = hard_set.sample_per_class(jax.random.key(1), labels, num_classes=3, per_class=8)
    assert not np.array_equal(a, b)


def test_repeat_small_classes_fills_from_the_same_class_only():
    scores = jnp.array([0.5, 3.0, 2.0, 9.0, 1.0, 7.0, 8.0])
    labels = jnp.array([0, 0, 0, 1, 1, 1, 1])
    idx = hard_set.top_k_per_class(
        scores, labels, num_classes=2, per_class=5, repeat_small_classes=True
    )
    # class 0 has 3 examples (hardest first: 1, 2, 0), repeated; class 1 has 4 (3, 6, 5, 4)
    np.testing.assert_array_equal(idx, [1, 2, 0, 1, 2, 3, 6, 5, 4, 3])
    full = hard_set.top_k_per_class(
        scores, labels, num_classes=2, per_class=3, repeat_small_classes=True
    )
    np.testing.assert_array_equal(
        full, hard_set.top_k_per_class(scores, labels, num_classes=2, per_class=3)
    )
