"""The per-class skinny products equal the plain matmuls, on both sides of the size threshold."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hsfm_jax.core import linalg


@pytest.mark.parametrize("N, C", [(32, 2), (128, 3), (600, 2), (16, 7)])
def test_equal_to_matmul(N, C):
    rng = np.random.default_rng(N + C)
    d = 2048
    x = jnp.asarray(rng.normal(size=(N, d)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(C, d)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(N, C)), jnp.float32)
    # (600, 2048) is past the per-class limit, C = 7 past the class limit: the plain matmul path.
    assert linalg._per_class(x, C) == (N * d <= linalg._PER_CLASS_MAX_ENTRIES and C <= 4)
    np.testing.assert_allclose(linalg.matmul_nt(x, w), x @ w.T, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(linalg.matmul_tn(g, x), g.T @ x, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(linalg.low_rank(g, w), g @ w, rtol=1e-5, atol=1e-3)


def test_vmap_and_grad():
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(3, 32, 64)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(2, 64)), jnp.float32)
    np.testing.assert_allclose(
        jax.vmap(linalg.matmul_nt, (0, None))(xs, w), xs @ w.T, rtol=1e-5, atol=1e-5
    )
    loss = lambda w: jnp.sum(jnp.tanh(linalg.matmul_nt(xs[0], w)))
    ref = lambda w: jnp.sum(jnp.tanh(xs[0] @ w.T))
    np.testing.assert_allclose(jax.grad(loss)(w), jax.grad(ref)(w), rtol=1e-5, atol=1e-5)
