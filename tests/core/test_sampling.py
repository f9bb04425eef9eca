"""`sampling.search_sorted` is `jnp.searchsorted` and `sampling.choice` is `jax.random.choice`
with replacement and weights, index for index."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hsfm_jax.core import sampling


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 64, 65, 1000, 4097])
def test_search_sorted_equals_searchsorted_with_ties(n):
    rng = np.random.default_rng(n)
    values = jnp.asarray(np.sort(rng.integers(0, 6, n)), jnp.float32)  # many ties
    queries = jnp.asarray(rng.integers(-2, 14, (5, 40)) * 0.5, jnp.float32)  # on and off ties
    np.testing.assert_array_equal(
        sampling.search_sorted(values, queries), jnp.searchsorted(values, queries)
    )


@pytest.mark.parametrize("branching", [2, 3, 8])
def test_other_branchings_agree(branching):
    rng = np.random.default_rng(branching)
    values = jnp.asarray(np.sort(rng.random(300)), jnp.float32)
    queries = jnp.asarray(rng.random(500), jnp.float32)
    np.testing.assert_array_equal(
        sampling.search_sorted(values, queries, branching), jnp.searchsorted(values, queries)
    )


@pytest.mark.parametrize(
    "weights",
    ["jtt", "zeros", "spiky", "uniform"],
)
def test_choice_equals_jax_random_choice(weights):
    rng = np.random.default_rng(0)
    n = 4000
    p = {
        "jtt": np.where(rng.random(n) < 0.05, 100.0, 1.0),  # an upweighted error set
        "zeros": np.where(rng.random(n) < 0.3, 0.0, rng.random(n)),  # left-out rows
        "spiky": np.where(rng.random(n) < 0.001, 1e6, 1e-3),
        "uniform": np.ones(n),
    }[weights]
    p = jnp.asarray(p / p.sum(), jnp.float32)
    keys = jax.random.split(jax.random.key(3), 50)
    ours = jax.vmap(lambda k: sampling.choice(k, p, (128,)))(keys)
    reference = jax.vmap(lambda k: jax.random.choice(k, n, (128,), replace=True, p=p))(keys)
    np.testing.assert_array_equal(ours, reference)
    if weights == "zeros":
        assert not np.any(np.asarray(p)[np.asarray(ours)] == 0)  # never a zero-weight row


@pytest.mark.parametrize("n", [0, 1, 2, 7, 700, 1625, 1626, 3000])
def test_permutation_of_a_traced_count_equals_jax_random_permutation(n):
    """Its first n entries are `jax.random.permutation(key, n)` bit for bit (one sort round up to
    1,625 items, two from 1,626), the padding indices n .. size - 1 follow in order."""
    permutation = jax.jit(sampling.permutation, static_argnums=2)
    for size in sorted({max(n, 1), n + 5, 4096}):
        key = jax.random.key(n + size)
        got = np.asarray(permutation(key, jnp.int32(n), size))
        np.testing.assert_array_equal(got[:n], jax.random.permutation(key, n))
        np.testing.assert_array_equal(got[n:], np.arange(n, size))
