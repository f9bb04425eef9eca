"""The L1 logistic-regression solver against scikit-learn (liblinear; one-vs-rest for more
than two classes): objective, coefficients, predictions, sample weights, warm starts."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from hsfm_jax.core import heads
from hsfm_jax.solvers import l1_logistic


def _problem(num_classes, n=240, d=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(num_classes, d)) * (rng.random((num_classes, d)) < 0.3)
    y = np.argmax(x @ w.T + rng.normal(size=(n, num_classes)), axis=1)
    return x, y


def _liblinear(c):
    # l1_ratio=1 is the L1 penalty without the deprecated `penalty=` argument (sklearn 1.8+).
    return LogisticRegression(C=c, solver="liblinear", l1_ratio=1, tol=1e-8, max_iter=10000)


def _objective(est, x, y, positive, c):
    targets = np.where(y == positive, 1.0, -1.0)
    return l1_logistic.l1_logreg_objective(
        jnp.asarray(est.coef_[0], jnp.float32),
        jnp.asarray(est.intercept_[0], jnp.float32),
        jnp.asarray(x),
        jnp.asarray(targets, jnp.float32),
        jnp.ones(len(y)),
        c,
    )


@pytest.mark.parametrize(
    "num_classes,solver",
    [
        (2, l1_logistic.Solver()),
        (3, l1_logistic.Solver()),
        # Fewer coordinates per Newton step than nonzeros: the greedy block regime.
        (2, l1_logistic.Solver(working_set=8)),
        (2, l1_logistic.Solver(method="fista")),
        (3, l1_logistic.Solver(method="fista")),
    ],
)
def test_l1_logreg_matches_liblinear(num_classes, solver):
    x, y = _problem(num_classes)
    for c in (1.0, 0.1):
        head, info = l1_logistic.fit_l1_logreg(
            jnp.asarray(x),
            jnp.asarray(y),
            jnp.ones(len(y)),
            c,
            num_classes=num_classes,
            solver=solver,
        )
        clf = _liblinear(c) if num_classes == 2 else OneVsRestClassifier(_liblinear(c))
        clf.fit(x, y)
        estimators = [clf] if num_classes == 2 else clf.estimators_
        for k, est in enumerate(estimators):
            positive = 1 if num_classes == 2 else k
            sk_objective = _objective(est, x, y, positive, c)
            np.testing.assert_allclose(info["objective"][k], sk_objective, rtol=1e-4)
            np.testing.assert_allclose(info["coef"][k], est.coef_[0], atol=2e-2)
        chex.assert_shape(head.weight, (num_classes, x.shape[1]))
        ours = np.asarray(heads.predict(head, jnp.asarray(x)))
        assert abs(np.mean(ours == y) - clf.score(x, y)) <= 1.0 / len(y) + 1e-9


def test_sample_weight_zero_drops_rows():
    x, y = _problem(2)
    keep = np.arange(len(y)) % 3 != 0
    sub, _ = l1_logistic.fit_l1_logreg(
        jnp.asarray(x[keep]), jnp.asarray(y[keep]), jnp.ones(keep.sum()), 0.5, num_classes=2
    )
    masked, _ = l1_logistic.fit_l1_logreg(
        jnp.asarray(x), jnp.asarray(y), jnp.asarray(keep, jnp.float32), 0.5, num_classes=2
    )
    chex.assert_trees_all_close(sub, masked, atol=1e-4)


def test_l1_logreg_matches_liblinear_on_backbone_like_features():
    # Nonnegative, correlated, wider than the subsample (d > n), as DFR's real problems are:
    # the benchmark's d = 1280 problem, one balanced tuning subsample, every C of the grid.
    from benchmarks import dfr as bench

    data = bench.make_problem("1280")
    x, y, g = data.val.features, data.val.labels, data.val.groups
    _, rows = bench._tuning_split(np.random.default_rng(0), x, g)
    z = x[rows]
    z = (z - z.mean(0)) / np.where(z.std(0) > 0, z.std(0), 1.0)
    for c in (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01):
        _, info = l1_logistic.fit_l1_logreg(
            jnp.asarray(z), jnp.asarray(y[rows]), jnp.ones(len(rows)), c, num_classes=2
        )
        est = _liblinear(c).fit(z, y[rows])
        np.testing.assert_allclose(
            info["objective"][0], _objective(est, z, y[rows], 1, c), rtol=1e-4
        )


def test_warm_start_and_rows_reach_the_same_optimum():
    x, y = _problem(2, n=300, d=40)
    keep = np.arange(len(y)) % 4 != 0
    weights = jnp.asarray(keep, jnp.float32)
    fit = lambda **kw: l1_logistic.fit_l1_logreg(
        jnp.asarray(x), jnp.asarray(y), weights, 0.3, num_classes=2, **kw
    )[1]
    cold = fit()
    warm = fit(
        init=l1_logistic.fit_l1_logreg(jnp.asarray(x), jnp.asarray(y), weights, 1.0, num_classes=2)[
            1
        ]["beta"]
    )
    # The rows with weight, padded to a fixed size with a weight-0 row (as DFR's refits do).
    rows = np.concatenate([np.flatnonzero(keep), np.flatnonzero(~keep)[:3]])
    compact = fit(rows=jnp.asarray(rows))
    for info in (warm, compact):
        np.testing.assert_allclose(info["objective"], cold["objective"], rtol=1e-5)
        np.testing.assert_allclose(info["beta"], cold["beta"], atol=1e-3)


def test_a_working_set_under_8_is_refused():
    x, y = _problem(2)
    with pytest.raises(ValueError, match="working_set"):
        l1_logistic.fit_l1_logreg(
            jnp.asarray(x),
            jnp.asarray(y),
            jnp.ones(len(y)),
            1.0,
            num_classes=2,
            solver=l1_logistic.Solver(working_set=4),
        )
