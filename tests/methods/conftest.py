"""HSFM's small problem, shared by its algorithm and chunk tests."""

import jax
import jax.numpy as jnp
import pytest

from hsfm_jax.data import features
from hsfm_jax.methods import erm
from hsfm_jax.methods.hsfm import algorithm as hsfm
from hsfm_jax.methods.hsfm import method as hsfm_method


@pytest.fixture(scope="module")
def hsfm_problem(small_features_dir):
    """(arrays, ERM head, rates) on the small synthetic feature directory."""
    data = features.load(small_features_dir)
    arrays = hsfm_method.device_data(data, jnp.float32)
    head = erm.fit(
        arrays.train.features,
        arrays.train.labels,
        jax.random.key(0),
        erm.Recipe(num_classes=2, steps=200),
        erm.Rates(learning_rate=1e-2),
    )
    return arrays, head, hsfm.make_rates(inner_lr=1e-2, meta_lr=1e-1)
