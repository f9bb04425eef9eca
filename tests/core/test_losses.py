"""The closed-form cross-entropy gradients equal autodiff's, and a NumPy computation of one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hsfm_jax.core import heads, losses
from hsfm_jax.methods import erm


def _problem(n, d, c, seed):
    rng = np.random.default_rng(seed)
    head = heads.from_numpy(rng.normal(size=(c, d)), rng.normal(size=(c,)))
    x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    y = jnp.asarray(rng.integers(0, c, size=n), jnp.int32)
    w = jnp.asarray(rng.random(n), jnp.float32)
    return head, x, y, w


@pytest.mark.parametrize("n, d, c", [(40, 6, 2), (25, 9, 5)])
def test_weighted_ce_grad_equals_numpy_and_autodiff(n, d, c):
    head, x, y, w = _problem(n, d, c, seed=n + c)
    got = losses.weighted_ce_grad(head, x, losses.onehot_columns(y, c), w)
    # NumPy: dCE_i/dz_i = softmax(z_i) - e_{y_i}; dW = sum_i w_i (p_i - e_{y_i}) x_i^T
    z = np.asarray(x) @ np.asarray(head.weight).T + np.asarray(head.bias)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g = np.asarray(w)[:, None] * (p - np.eye(c)[np.asarray(y)])
    np.testing.assert_allclose(got.weight, g.T @ np.asarray(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.bias, g.sum(0), rtol=1e-5, atol=1e-6)

    def weighted_sum(h):
        per_example = losses.per_example_cross_entropy(logits=heads.apply(h, x), labels=y)
        return jnp.sum(w * per_example)

    auto = jax.grad(weighted_sum)(head)
    np.testing.assert_allclose(got.weight, auto.weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.bias, auto.bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("l2_bias", [False, True])
def test_erm_objective_grad_equals_autodiff(masked, l2_bias):
    head, x, y, w = _problem(30, 8, 3, seed=7)
    mask = jnp.asarray(np.arange(8) % 3 != 0, jnp.float32) if masked else None
    got = erm._objective_grad(head, x, losses.onehot_columns(y, 3), w, 0.3, l2_bias, mask)
    auto = jax.grad(erm._objective)(head, x, y, w, 0.3, l2_bias, mask)
    np.testing.assert_allclose(got.weight, auto.weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.bias, auto.bias, rtol=1e-5, atol=1e-6)
    if masked:  # masked features get only the weight decay
        np.testing.assert_allclose(got.weight[:, ::3], 0.3 * head.weight[:, ::3], rtol=1e-6)


def test_per_example_cross_entropy_columns_equals_rows():
    head, x, y, _ = _problem(35, 6, 4, seed=3)
    np.testing.assert_allclose(
        losses.per_example_cross_entropy_columns(head, x, losses.onehot_columns(y, 4)),
        losses.per_example_cross_entropy(logits=heads.apply(head, x), labels=y),
        rtol=1e-5,
        atol=1e-6,
    )
