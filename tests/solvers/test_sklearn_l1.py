"""DFR's ``solver.method = "sklearn"``: liblinear on the host inside the jitted DFR program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("sklearn")

from hsfm_jax.methods import dfr
from hsfm_jax.solvers import sklearn_l1  # noqa: E402

# liblinear run far past its default tolerance, so the comparison is of the two solutions.
TIGHT = dfr.Solver(method="sklearn", tol=1e-8, newton_iters=10000)


def _problem(num_classes, n=240, d=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(num_classes, d)) * (rng.random((num_classes, d)) < 0.3)
    y = np.argmax(x @ w.T + rng.normal(size=(n, num_classes)), axis=1)
    return x, y


@pytest.mark.parametrize("num_classes", [2, 3])
def test_fit_matches_the_newton_solver(num_classes):
    """Same objective (rtol 1e-4) and coefficients (atol 2e-2) as the JAX solver, which the
    parity tests hold to liblinear (tests/methods/test_dfr.py); sample weights of 0 drop rows."""
    x, y = _problem(num_classes)
    weight = np.ones(len(y), np.float32)
    weight[::7] = 0.0
    for c in (1.0, 0.1):
        args = (jnp.asarray(x), jnp.asarray(y), jnp.asarray(weight), c)
        _, newton = dfr.fit_l1_logreg(*args, num_classes=num_classes)
        head, info = dfr.fit_l1_logreg(*args, num_classes=num_classes, solver=TIGHT)
        np.testing.assert_allclose(info["objective"], newton["objective"], rtol=1e-4)
        np.testing.assert_allclose(info["coef"], newton["coef"], atol=2e-2)
        assert np.all(np.asarray(info["violation"]) < 1e-3)
        assert np.all(np.asarray(info["iterations"]) > 0)
        assert head.weight.shape == (num_classes, x.shape[1])


def test_rows_of_weight_zero_are_left_out():
    x, y = _problem(2)
    weight = np.ones(len(y), np.float32)
    weight[100:] = 0.0
    aug = np.concatenate([x, np.ones((len(y), 1), np.float32)], 1)
    targets = np.where(y == 1, 1.0, -1.0).astype(np.float32)
    full = sklearn_l1.liblinear(aug, targets, 0.5 * weight, tol=1e-8, max_iter=10000)
    cut = sklearn_l1.liblinear(
        aug[:100], targets[:100], 0.5 * weight[:100], tol=1e-8, max_iter=10000
    )
    np.testing.assert_array_equal(full[0], cut[0])


@pytest.mark.slow  # a whole DFR run per solver
def test_dfr_run_with_sklearn_equals_newton(small_features_dir):
    """The whole DFR protocol: the same subsamples, the same chosen C, heads within the
    solvers' tolerance, for every variant that fits an L1 model."""
    from hsfm_jax.data import features

    data = features.load(small_features_dir)
    keys = jax.random.split(jax.random.key(0), 2)
    config = dfr.default_config()
    config.solver.tol = 1e-8
    config.solver.newton_iters = 10000
    config.update(dfr.check(config, data))
    newton = dfr.run(data, config, keys).rows
    config.solver.method = "sklearn"
    sklearn = dfr.run(data, config, keys).rows
    assert set(sklearn) == set(newton) == {"dfr", "tr_dfr"}
    for row in newton:
        scale = float(jnp.abs(newton[row].weight).max())
        np.testing.assert_allclose(sklearn[row].weight, newton[row].weight, atol=2e-2 * scale)
        np.testing.assert_allclose(sklearn[row].bias, newton[row].bias, atol=2e-2 * scale)


def test_check_accepts_sklearn_and_rejects_unknown(small_features_dir):
    from hsfm_jax.data import features

    data = features.load(small_features_dir)
    config = dfr.default_config()
    config.solver.method = "sklearn"
    dfr.check(config, data)
    config.solver.method = "liblinear"
    with pytest.raises(ValueError, match="dfr.solver.method"):
        dfr.check(config, data)
