"""Feature scalers: StandardScaler statistics on the device and from host chunks, folded into
heads."""

import jax.numpy as jnp
import numpy as np

from hsfm_jax.core import heads, scaling


def _features(n=240, d=24, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32) * 3 + 1


def test_fold_scaler_matches_standardized_head():
    x = _features()
    mean, scale = scaling.fit_scaler(jnp.asarray(x))
    np.testing.assert_allclose(mean, x.mean(0), atol=1e-5)
    np.testing.assert_allclose(scale, x.std(0), rtol=1e-4)
    head = heads.LinearHead(jnp.asarray(np.random.default_rng(1).normal(size=(3, 24))), jnp.ones(3))
    raw = scaling.fold_scaler(head, mean, scale)
    np.testing.assert_allclose(
        heads.apply(raw, jnp.asarray(x)), heads.apply(head, (x - mean) / scale), atol=1e-4
    )


def test_host_scaler_equals_fit_scaler_with_a_constant_column():
    x = _features()
    x[:, 3] = 7.0  # constant: scale 1, as scikit-learn
    host_mean, host_scale = scaling.host_scaler(x, chunk=50)
    assert host_mean.dtype == np.float64  # the caller casts once, to its dtype
    mean, scale = scaling.fit_scaler(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(host_mean, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(host_scale[3], 1.0)
    np.testing.assert_allclose(mean, host_mean, rtol=1e-5, atol=1e-5)
    # The constant column: float32 sums leave a variance of rounding noise on the device, which
    # fit_scaler keeps as a (tiny) scale; host_scaler's float64 sums find exactly 0.
    varying = np.arange(x.shape[1]) != 3
    np.testing.assert_allclose(scale[varying], host_scale[varying], rtol=1e-4)
