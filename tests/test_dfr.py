"""DFR: the JAX L1 solver against scikit-learn's liblinear, subsampling, end to end."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from hsfm_jax import evaluate, features, heads, synthetic
from hsfm_jax.baselines import dfr, erm


def _problem(num_classes, n=240, d=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(num_classes, d)) * (rng.random((num_classes, d)) < 0.3)
    y = np.argmax(x @ w.T + rng.normal(size=(n, num_classes)), axis=1)
    return x, y


def _liblinear(c):
    # l1_ratio=1 is the L1 penalty without the deprecated `penalty=` argument (sklearn 1.8+).
    return LogisticRegression(C=c, solver="liblinear", l1_ratio=1, tol=1e-8, max_iter=10000)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_l1_logreg_matches_liblinear(num_classes):
    x, y = _problem(num_classes)
    for c in (1.0, 0.1):
        head, info = dfr.fit_l1_logreg(
            jnp.asarray(x), jnp.asarray(y), jnp.ones(len(y)), c, num_classes=num_classes
        )
        clf = _liblinear(c) if num_classes == 2 else OneVsRestClassifier(_liblinear(c))
        clf.fit(x, y)
        estimators = [clf] if num_classes == 2 else clf.estimators_
        for k, est in enumerate(estimators):
            positive = 1 if num_classes == 2 else k
            targets = np.where(y == positive, 1.0, -1.0)
            sk_objective = dfr.l1_logreg_objective(
                jnp.asarray(est.coef_[0], jnp.float32),
                jnp.asarray(est.intercept_[0], jnp.float32),
                jnp.asarray(x),
                jnp.asarray(targets, jnp.float32),
                jnp.ones(len(y)),
                c,
            )
            np.testing.assert_allclose(info["objective"][k], sk_objective, rtol=1e-4)
            np.testing.assert_allclose(info["coef"][k], est.coef_[0], atol=2e-2)
        chex.assert_shape(head.weight, (num_classes, x.shape[1]))
        ours = np.asarray(heads.predict(head, jnp.asarray(x)))
        assert abs(np.mean(ours == y) - clf.score(x, y)) <= 1.0 / len(y) + 1e-9


def test_sample_weight_zero_drops_rows():
    x, y = _problem(2)
    keep = np.arange(len(y)) % 3 != 0
    sub, _ = dfr.fit_l1_logreg(
        jnp.asarray(x[keep]), jnp.asarray(y[keep]), jnp.ones(keep.sum()), 0.5, num_classes=2
    )
    masked, _ = dfr.fit_l1_logreg(
        jnp.asarray(x), jnp.asarray(y), jnp.asarray(keep, jnp.float32), 0.5, num_classes=2
    )
    chex.assert_trees_all_close(sub, masked, atol=1e-4)


def test_balanced_mask_properties():
    rng = np.random.default_rng(0)
    strata = jnp.asarray(rng.choice(4, size=300, p=[0.5, 0.3, 0.15, 0.05]))
    valid = jnp.asarray(rng.random(300) < 0.8)
    smallest = min(int(np.sum(np.asarray(valid) & (np.asarray(strata) == g))) for g in range(4))
    masks = [dfr.balanced_mask(jax.random.key(i), strata, valid, 4) for i in range(3)]
    for mask in masks:
        mask = np.asarray(mask)
        assert not np.any(mask & ~np.asarray(valid))
        np.testing.assert_array_equal(
            np.bincount(np.asarray(strata)[mask], minlength=4), [smallest] * 4
        )
    assert not np.array_equal(masks[0], masks[1])  # a different key, a different subsample
    size = dfr.balanced_size(np.asarray(strata), 4)
    idx = np.asarray(dfr.balanced_indices(jax.random.key(0), strata, 4, size))
    assert len(np.unique(idx)) == size == 4 * np.bincount(np.asarray(strata)).min()


def test_fold_scaler_matches_standardized_head():
    x, y = _problem(3)
    mean, scale = dfr.fit_scaler(jnp.asarray(x))
    np.testing.assert_allclose(mean, x.mean(0), atol=1e-5)
    np.testing.assert_allclose(scale, x.std(0), rtol=1e-4)
    head = heads.LinearHead(jnp.asarray(np.random.default_rng(1).normal(size=(3, 24))), jnp.ones(3))
    raw = dfr.fold_scaler(head, mean, scale)
    np.testing.assert_allclose(
        heads.apply(raw, jnp.asarray(x)), heads.apply(head, (x - mean) / scale), atol=1e-4
    )


def test_dfr_end_to_end_beats_erm_on_synthetic():
    splits, info = synthetic.generate(num_train=2000, val_per_group=50, test_per_group=200)
    meta = features.make_meta(
        dataset="synthetic",
        backbone="none",
        class_names=info["class_names"],
        group_names=info["group_names"],
        feature_dim=splits["train"].features.shape[1],
        split_sizes={k: v.num_examples for k, v in splits.items()},
        preprocessing="test",
    )
    data = features.FeatureSet(path=None, meta=meta, splits=splits)
    config = dfr.default_config()
    config.variants = ("dfr", "tr_dfr", "paper_dfr")
    config.num_retrains = 4
    config.tr_num_retrains = 2
    config.paper.epochs = 200
    keys = jax.random.split(jax.random.key(0), 2)
    rows = dfr.run(data, config, keys)
    assert set(rows) == {"dfr", "tr_dfr", "paper_dfr"}
    d = data.feature_dim
    for head in rows.values():
        chex.assert_shape([head.weight, head.bias], [(2, 2, d), (2, 2)])

    train, test = data.train.to_arrays(), data.test.to_arrays()
    erm_head = erm.fit(
        train.features, train.labels, keys[0], num_classes=2, learning_rate=1e-2, steps=500
    )
    wga = lambda h: evaluate.evaluate_head(h, test, num_classes=2, num_groups=4)["wga"]
    erm_wga = float(wga(erm_head))
    dfr_wga = np.asarray(jax.vmap(wga)(rows["dfr"]))
    assert np.all(dfr_wga > erm_wga + 0.05), (dfr_wga, erm_wga)

    # New seeds reuse the compiled programs (seeds are data, not static arguments).
    compiled = dfr.dfr_val._cache_size(), dfr.tr_dfr._cache_size(), dfr.paper_dfr._cache_size()
    dfr.run(data, config, jax.random.split(jax.random.key(1), 2))
    assert (dfr.dfr_val._cache_size(), dfr.tr_dfr._cache_size(), dfr.paper_dfr._cache_size()) == (
        compiled
    )
