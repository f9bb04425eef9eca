"""DFR: the regularization path, subsampling, the config checks, end to end."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hsfm_jax.core import scaling
from hsfm_jax.data import features
from hsfm_jax.methods import dfr, erm
from hsfm_jax.reporting import evaluate
from hsfm_jax.solvers import l1_logistic


def _problem(num_classes, n=240, d=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(num_classes, d)) * (rng.random((num_classes, d)) < 0.3)
    y = np.argmax(x @ w.T + rng.normal(size=(n, num_classes)), axis=1)
    return x, y


def test_regularization_path_equals_independent_fits():
    x, y = _problem(3)
    grid = jnp.asarray(dfr.default_config().c_grid, jnp.float32)
    ones = jnp.ones(len(y))
    heads_path, betas = dfr._fit_grid(
        jnp.asarray(x), jnp.asarray(y), ones, grid, 3, l1_logistic.Solver()
    )
    chex.assert_shape(
        [heads_path.weight, betas], [(len(grid), 3, x.shape[1]), (len(grid), 3, x.shape[1] + 1)]
    )
    # Also under a plain (unnamed) vmap, where the solver's loop bounds are batched.
    batched = jax.vmap(
        lambda c: l1_logistic.fit_l1_logreg(jnp.asarray(x), jnp.asarray(y), ones, c, num_classes=3)[
            1
        ]
    )(grid)
    for i, c in enumerate(grid):
        _, info = l1_logistic.fit_l1_logreg(jnp.asarray(x), jnp.asarray(y), ones, c, num_classes=3)
        np.testing.assert_allclose(betas[i], info["beta"], atol=1e-3)
        np.testing.assert_allclose(batched["objective"][i], info["objective"], rtol=1e-5)


def test_rescale_beta_is_the_same_function():
    x, _ = _problem(2)
    rng = np.random.default_rng(2)
    beta = jnp.asarray(rng.normal(size=(2, x.shape[1] + 1)), jnp.float32)
    m1, s1 = jnp.asarray(rng.normal(size=x.shape[1])), jnp.asarray(rng.random(x.shape[1]) + 0.5)
    m2, s2 = scaling.fit_scaler(jnp.asarray(x))
    moved = dfr._rescale_beta(beta, m1, s1, m2, s2)
    logits = lambda b, m, s: ((x - m) / s) @ b[:, :-1].T + b[:, -1]
    np.testing.assert_allclose(logits(moved, m2, s2), logits(beta, m1, s1), rtol=1e-4, atol=1e-4)


def test_tune_size_bound_covers_every_subset():
    rng = np.random.default_rng(0)
    strata = rng.choice(4, size=400, p=[0.4, 0.4, 0.1, 0.1])
    bound = dfr.tune_size_bound(strata, 4)
    for seed in range(20):
        subset = np.random.default_rng(seed).permutation(400)[: 50 + 10 * seed]
        assert dfr.balanced_size(strata[subset], 4) <= bound
    assert dfr.balanced_size(strata[strata < 2], 4) <= bound  # two groups absent


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
    everything = jnp.ones(strata.shape, bool)
    idx, kept = dfr.balanced_indices(jax.random.key(0), strata, everything, 4, size + 5)
    idx, kept = np.asarray(idx), np.asarray(kept)
    assert np.all(kept[:size]) and not np.any(kept[size:])
    assert not set(idx[size:]) & set(idx[:size])  # rows past the subsample are other rows
    assert len(np.unique(idx[:size])) == size == 4 * np.bincount(np.asarray(strata)).min()


@pytest.mark.slow  # every DFR variant end to end
def test_dfr_end_to_end_beats_erm_on_synthetic(feature_set):
    data = feature_set(num_train=2000, val_per_group=50, test_per_group=200)
    config = dfr.default_config()
    config.variants = ("dfr", "tr_dfr", "paper_dfr")
    config.num_retrains = 4
    config.tr_num_retrains = 2
    config.paper.epochs = 200
    keys = jax.random.split(jax.random.key(0), 2)
    config.update(dfr.check(config, data))
    rows = dfr.run(data, config, keys).rows
    assert set(rows) == {"dfr", "tr_dfr", "paper_dfr"}
    d = data.feature_dim
    for head in rows.values():
        chex.assert_shape([head.weight, head.bias], [(2, 2, d), (2, 2)])

    train, test = data.train.to_arrays(), data.test.to_arrays()
    recipe, rates = erm.Recipe(num_classes=2, steps=500), erm.Rates(learning_rate=1e-2)
    erm_head = erm.fit(train.features, train.labels, keys[0], recipe, rates)
    wga = lambda h: evaluate.evaluate_head(h, test, num_classes=2, num_groups=4)["wga"]
    erm_wga = float(wga(erm_head))
    dfr_wga = np.asarray(jax.vmap(wga)(rows["dfr"]))
    assert np.all(dfr_wga > erm_wga + 0.05), (dfr_wga, erm_wga)

    # New seeds reuse the compiled programs (seeds are data, not static arguments).
    compiled = dfr.dfr_val._cache_size(), dfr.tr_dfr._cache_size(), dfr.paper_dfr._cache_size()
    config.update(dfr.check(config, data))
    dfr.run(data, config, jax.random.split(jax.random.key(1), 2))
    assert (dfr.dfr_val._cache_size(), dfr.tr_dfr._cache_size(), dfr.paper_dfr._cache_size()) == (
        compiled
    )


def test_bad_solver_settings_fail_in_check(small_features_dir):
    data = features.load(small_features_dir)
    config = dfr.default_config()
    config.solver.method = "lbfgs"
    with pytest.raises(ValueError, match="dfr.solver.method must be one of"):
        dfr.check(config, data)
    config.solver.method = "newton"
    config.solver.working_set = 4
    with pytest.raises(ValueError, match="dfr.solver.working_set must be >= 8"):
        dfr.check(config, data)


def test_benchmark_smoke(tmp_path):
    from benchmarks import dfr as bench

    out = tmp_path / "dfr.json"
    results = bench.main(["--sizes=64", "--repeats=1", f"--out={out}"])
    (row,) = results["sizes"]
    assert row["feature_dim"] == 64 and row["jax_s"] > 0 and row["sklearn_s"] > 0
    assert abs(row["objective_gap"]) < 1e-4
    assert out.is_file()
