"""Row buckets change no number: every registered method, run on the same features sent as they
are and padded to their row buckets (`hsfm_jax.data.buckets`: padding rows with label -1), returns
the same heads and the same report. float64, so the only difference allowed is summation order."""

import jax
import numpy as np
import pytest

from hsfm_jax import methods
from hsfm_jax.data import buckets, features
from tests.methods.test_float64 import _small_config

# methods whose programs do not yet honour padding rows (run unpadded by `experiment.run`)
NOT_YET = {"dfr"}


def _assert_same(a, b, where):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)) and not hasattr(a, "_fields"):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
        assert len(leaves_a) == len(leaves_b), where
        for x, y in zip(leaves_a, leaves_b):
            x, y = np.asarray(x), np.asarray(y)
            assert x.shape == y.shape, where
            if np.issubdtype(x.dtype, np.floating):
                np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, err_msg=where)
            else:
                np.testing.assert_array_equal(x, y, err_msg=where)


@pytest.mark.parametrize("name", list(methods.REGISTRY))
def test_padding_rows_change_no_result(small_features_dir, name):
    if name in NOT_YET:
        pytest.skip(f"{name} does not honour padding rows yet")
    config = _small_config(small_features_dir)
    keys = jax.random.split(jax.random.key(0), 2)
    with jax.enable_x64(True):
        data = features.with_dtype(features.load(small_features_dir), np.float64)
        padded = features.with_row_buckets(data)
        assert padded.train.to_arrays().labels.shape[0] == buckets.rows(data.train.num_examples)
        assert padded.train.num_rows > data.train.num_examples  # the test pads something
        resolved = methods.check(config, [name], data)[name]
        config = methods.resolve(config, name, resolved)
        plain = methods.run(name, data, config, keys)
        bucketed = methods.run(name, padded, config, keys)
    _assert_same(plain.rows, bucketed.rows, f"{name}.rows")
    _assert_same(dict(plain.report), dict(bucketed.report), f"{name}.report")
    _assert_same(dict(plain.info), dict(bucketed.info), f"{name}.info")
