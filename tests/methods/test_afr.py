"""AFR: weights, objective and retraining steps against NumPy; WGA over ERM on synthetic; checks."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hsfm_jax.core import heads, scaling
from hsfm_jax.methods import afr, erm
from hsfm_jax.reporting import evaluate


def _first_seed(tree):
    return jax.tree_util.tree_map(lambda a: a[0], tree)


def _softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _numpy_weights(logits, y, gamma, balance):
    """The released notebook's compute_afr_weights (balance="count"), and the other two modes."""
    w = np.exp(-gamma * _softmax(logits)[np.arange(len(y)), y])
    counts = np.bincount(y)
    if balance == "count":
        for c in range(1, len(counts)):
            w[y == c] *= counts[0] / counts[c]
    elif balance == "sum":
        for c in range(len(counts)):
            w[y == c] /= w[y == c].sum()
    return w / w.sum()


def _numpy_step(w, b, x, y, weights, w0, b0, reg, lr, clip):
    """One SGD step on sum_i w_i CE_i + reg ||theta - theta0||^2, gradient clipped to `clip`."""
    coeff = (_softmax(x @ w.T + b) - np.eye(w.shape[0])[y]) * weights[:, None]
    gw, gb = coeff.T @ x + 2 * reg * (w - w0), coeff.sum(0) + 2 * reg * (b - b0)
    norm = np.sqrt((gw**2).sum() + (gb**2).sum())
    factor = min(1.0, clip / norm) if clip > 0 else 1.0
    return w - lr * factor * gw, b - lr * factor * gb


@pytest.mark.parametrize("balance", afr.CLASS_BALANCE)
def test_weights_match_numpy(balance):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3)) * 2
    y = rng.choice(3, size=50, p=[0.6, 0.3, 0.1])
    for gamma in (0.0, 4.0, 14.0):
        ours = afr.afr_weights(
            jnp.asarray(logits, jnp.float32),
            jnp.asarray(y),
            gamma,
            num_classes=3,
            class_balance=balance,
        )
        np.testing.assert_allclose(ours, _numpy_weights(logits, y, gamma, balance), rtol=1e-5)
        np.testing.assert_allclose(np.sum(ours), 1.0, rtol=1e-6)


def test_objective_and_step_match_numpy():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 2, size=30)
    weights = rng.random(30) / 30
    w0, b0 = rng.normal(size=(2, 4)), rng.normal(size=2)
    w, b = w0 + 0.3 * rng.normal(size=(2, 4)), b0 + 0.3 * rng.normal(size=2)
    head, ref = heads.from_numpy(w, b), heads.from_numpy(w0, b0)
    ce = -np.log(_softmax(x @ w.T + b)[np.arange(30), y])
    expected = (weights * ce).sum() + 0.7 * (((w - w0) ** 2).sum() + ((b - b0) ** 2).sum())
    args = (jnp.asarray(x, jnp.float32), jnp.asarray(y), jnp.asarray(weights, jnp.float32))
    np.testing.assert_allclose(afr.objective(head, *args, ref, 0.7), expected, rtol=1e-5)
    # the closed-form gradient the retraining uses is the objective's autodiff gradient
    autodiff = jax.grad(afr.objective)(head, *args, ref, 0.7)
    onehot_t = jnp.asarray(np.eye(2)[y].T, jnp.float32)
    grads = afr.objective_grad(head, args[0], onehot_t, args[2], ref, 0.7)
    np.testing.assert_allclose(grads.weight, autodiff.weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads.bias, autodiff.bias, rtol=1e-5, atol=1e-6)
    for clip in (0.0, 0.05):  # 0.05 is below this gradient's norm, so clipping acts
        tx = afr.make_optimizer("sgd", 0.1, clip)
        updates, _ = tx.update(grads, tx.init(head), head)
        new = jax.tree_util.tree_map(jnp.add, head, updates)
        w1, b1 = _numpy_step(w, b, x, y, weights, w0, b0, 0.7, 0.1, clip)
        np.testing.assert_allclose(new.weight, w1, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new.bias, b1, rtol=1e-5, atol=1e-6)


def test_pipeline_matches_numpy(feature_set):
    """Split, ERM stage, weights on the held-out part, retraining steps and checkpoint choice."""
    data = feature_set(
        num_core=2, num_spurious=2, num_noise=1, num_train=100, val_per_group=6, test_per_group=2
    )
    config = afr.default_config()
    config.update(gamma_grid=(0.0, 3.0), reg_grid=(0.0, 0.5), steps=3, eval_every=1)
    config.update(learning_rate=0.5, grad_clip=1.0)
    config.erm.update(learning_rate=1e-2, steps=50)
    config.update(afr.check(config, data))
    result = afr.run(data, config, jax.random.split(jax.random.key(0), 1))
    rows, info = result.rows, result.info

    rw_rows = np.asarray(info["reweight_rows"][0])
    assert len(np.unique(rw_rows)) == len(rw_rows) == 20  # 20% of 100 held out
    erm_rows = np.setdiff1d(np.arange(100), rw_rows)
    x = np.asarray(data.train.features, np.float64)
    mean, scale = x.mean(0), x.std(0)
    z = (x - mean) / scale
    erm_head = erm.fit(
        jnp.asarray(z[erm_rows], jnp.float32),
        jnp.asarray(data.train.labels[erm_rows]),
        jax.random.key(0),
        erm.Recipe(num_classes=2, steps=50),
        erm.Rates(learning_rate=1e-2),
    )
    folded = scaling.fold_scaler(
        erm_head, jnp.asarray(mean, jnp.float32), jnp.asarray(scale, jnp.float32)
    )
    chex.assert_trees_all_close(_first_seed(info["erm_head"]), folded, rtol=1e-4, atol=1e-5)

    w0, b0 = np.asarray(erm_head.weight, np.float64), np.asarray(erm_head.bias, np.float64)
    zr, yr = z[rw_rows], data.train.labels[rw_rows]
    for g_index, gamma in enumerate((0.0, 3.0)):
        weights = _numpy_weights(zr @ w0.T + b0, yr, gamma, "count")
        np.testing.assert_allclose(info["weights"][0, g_index], weights, rtol=1e-4)
        for r_index, reg in enumerate((0.0, 0.5)):
            p = 2 * g_index + r_index
            assert (info["grid"]["gamma"][p], info["grid"]["reg"][p]) == (gamma, reg)
            w, b, path = w0, b0, []
            for _ in range(3):
                w, b = _numpy_step(w, b, zr, yr, weights, w0, b0, reg, 0.5, 1.0)
                path.append((w, b))
            best = int(info["checkpoint"][0, p]) - 1
            w, b = path[best]
            np.testing.assert_allclose(info["head"].weight[0, p], w / scale, rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(
                info["head"].bias[0, p], b - (w / scale) @ mean, rtol=1e-3, atol=1e-4
            )
    selected = int(np.argmax(info["score"][0]))
    np.testing.assert_array_equal(rows["afr"].weight[0], info["head"].weight[0, selected])


def test_beats_erm_on_synthetic(feature_set):
    data = feature_set(num_train=4000, val_per_group=50, test_per_group=200)
    config = afr.default_config()
    config.learning_rate = 0.03  # unit-scale features, d = 32 (as experiments/configs/synthetic.py)
    config.erm.update(learning_rate=1e-2, steps=500)  # experiments/configs/synthetic.py's ERM
    keys = jax.random.split(jax.random.key(0), 3)
    config.update(afr.check(config, data))
    result = afr.run(data, config, keys)
    rows, info = result.rows, result.info
    c, d = data.num_classes, data.feature_dim
    chex.assert_shape([rows["afr"].weight, rows["afr"].bias], [(3, c, d), (3, c)])
    chex.assert_shape([info["head"].weight, info["weights"]], [(3, 32, c, d), (3, 8, 800)])
    chex.assert_tree_all_finite(rows)

    train, test = data.train.to_arrays(), data.test.to_arrays()
    wga = lambda h: evaluate.evaluate_head(h, test, num_classes=c, num_groups=4)["wga"]
    recipe, rates = erm.Recipe(num_classes=c, steps=500), erm.Rates(learning_rate=1e-2)
    erm_head = erm.fit(train.features, train.labels, keys[0], recipe, rates)
    erm_wga = float(wga(erm_head))
    afr_wga = np.asarray(jax.vmap(wga)(rows["afr"]))
    assert np.mean(afr_wga) >= erm_wga + 0.05 and np.min(afr_wga) >= erm_wga, (afr_wga, erm_wga)

    compiled = afr.run_grid._cache_size()
    config.reg_grid = (0.0, 0.05, 0.1, 0.2)
    config.update(afr.check(config, data))
    afr.run(data, config, jax.random.split(jax.random.key(1), 3))
    assert afr.run_grid._cache_size() == compiled


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("erm_fraction", 1.0, r"afr\.erm_fraction must be in \(0, 1\), got 1\.0"),
        (
            "erm_fraction",
            0.999,
            r"afr\.erm_fraction=0\.999 splits 200 train examples into 200 \(ERM\) and 0",
        ),
        (
            "gamma_grid",
            (4.0, -1.0),
            r"afr\.gamma_grid: every value must be >= 0 and finite, got -1\.0",
        ),
        ("reg_grid", (), r"afr\.reg_grid must be a non-empty tuple"),
        (
            "class_balance",
            "groups",
            r"afr\.class_balance must be one of \('count', 'sum', 'none'\)",
        ),
        ("optimizer", "lbfgs", r"afr\.optimizer must be one of"),
        ("learning_rate", -1.0, r"afr\.learning_rate must be > 0 and finite, got -1\.0"),
        ("steps", 0, r"afr\.steps must be an integer > 0"),
        ("grad_clip", -1.0, r"afr\.grad_clip must be >= 0 and finite"),
        ("eval_every", 7, r"afr\.eval_every must be 0 or divide afr\.steps=500, got 7"),
        ("standardize", 1, r"afr\.standardize must be True or False"),
        ("selection_metric", "best", r"afr\.selection_metric must be 'auto' or one of"),
        ("gamma", 4.0, r"afr: unknown config field\(s\) \['gamma'\]"),
        ("erm", None, r"afr\.erm must be a ConfigDict"),
    ],
)
def test_check_names_the_field(feature_set, field, value, message):
    data = feature_set(num_train=200, val_per_group=5, test_per_group=5)
    config = ml_collections.ConfigDict({**afr.default_config().to_dict(), field: value})
    with pytest.raises(ValueError, match=message):
        afr.check(config, data)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("optimizer", "x", r"erm\.optimizer must be one of"),
        ("learning_rate", 0.0, r"erm\.learning_rate must be > 0 and finite, got 0\.0"),
        ("epochs", -2, r"erm\.epochs must be an integer >= 0, got -2"),
        ("class_balanced", "no", r"erm\.class_balanced must be True or False"),
    ],
)
def test_check_names_erm_fields(feature_set, field, value, message):
    data = feature_set(num_train=200, val_per_group=5, test_per_group=5)
    config = afr.default_config().to_dict()
    config["erm"][field] = value
    with pytest.raises(ValueError, match=message):
        afr.check(ml_collections.ConfigDict(config), data)


def test_erm_recipe_epochs():
    """``erm.epochs`` overrides ``erm.steps`` as the experiment's ERM row does."""
    config = afr.default_config()
    assert erm.num_steps(config.erm, 1600) == 1000
    config.erm.update(epochs=3, batch_size=128)
    assert erm.num_steps(config.erm, 1600) == 3 * 13
    config.erm.batch_size = 0
    assert erm.num_steps(config.erm, 1600) == 3
