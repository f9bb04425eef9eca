"""`erm.fit_chain`: a chain of `erm.fit` calls as one loop (JTT's identification heads)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hsfm_jax.core import heads
from hsfm_jax.methods import erm


def _chain_of_fits(features, labels, key, segments, recipe, rates):
    head, out = heads.zeros(recipe.num_classes, features.shape[1]), []
    for i, n in enumerate(segments):
        fold = jax.random.fold_in(key, i)
        head = erm.fit(features, labels, fold, recipe._replace(steps=n), rates, init=head)
        out.append(head)
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *out)


@pytest.mark.parametrize("batch_size", [0, 32])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fit_chain_equals_a_chain_of_fits(batch_size, optimizer):
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(300, 16)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 3, 300), jnp.int32)
    recipe = erm.Recipe(num_classes=3, optimizer=optimizer, batch_size=batch_size)
    rates = erm.Rates(learning_rate=1e-2, l2=1e-3)
    segments = (5, 7, 18)
    key = jax.random.key(3)
    loop = jax.jit(lambda k: _chain_of_fits(features, labels, k, segments, recipe, rates))(key)
    chain = jax.jit(lambda k: erm.fit_chain(features, labels, k, recipe, rates, segments=segments))(
        key
    )
    chex.assert_shape(chain.weight, (3, 3, 16))
    # The same operations in another fusion: float32 rounding apart, nothing more.
    chex.assert_trees_all_close(chain, loop, rtol=1e-5, atol=1e-6)
    # Each segment's head moved from the previous one (the optimizer restarted, then stepped).
    assert np.all(np.abs(np.diff(np.asarray(chain.weight), axis=0)).max(axis=(1, 2)) > 1e-3)
