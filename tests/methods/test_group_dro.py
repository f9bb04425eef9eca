"""Group DRO: steps against a NumPy reference, WGA over ERM on synthetic, config checks."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hsfm_jax.core import heads, optim
from hsfm_jax.data import features
from hsfm_jax.methods import common, erm, group_dro
from hsfm_jax.reporting import evaluate


def _numpy_steps(x, y, g, w, b, *, counts, steps, eta, c_adj, l2, lr, num_groups):
    """Group DRO by hand: per-group mean CE, q <- q exp(eta (L + C / sqrt(n))), SGD on q.L."""
    present = counts > 0
    q = np.where(present, 1.0 / present.sum(), 0.0)
    history = []
    for _ in range(steps):
        logits = x @ w.T + b
        logits = logits - logits.max(1, keepdims=True)
        prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        ce = -np.log(prob[np.arange(len(y)), y])
        in_group = g[:, None] == np.arange(num_groups)
        n_batch = in_group.sum(0)
        loss = (ce @ in_group) / np.maximum(n_batch, 1)
        adjusted = loss + c_adj / np.sqrt(np.maximum(counts, 1))
        q = q * np.exp(eta * adjusted)
        q = q / q.sum()
        coeff = (prob - np.eye(w.shape[0])[y]) * (q[g] / np.maximum(n_batch[g], 1))[:, None]
        w = w - lr * (coeff.T @ x + l2 * w)
        b = b - lr * (coeff.sum(0) + l2 * b)
        history.append((w.copy(), b.copy(), q.copy()))
    return history


def test_steps_match_numpy():
    rng = np.random.default_rng(0)
    n, d, num_classes, num_groups = 40, 5, 3, 4
    x = rng.normal(size=(n, d))
    y = rng.integers(0, num_classes, size=n)
    g = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])  # group 3 is absent from train: q_3 stays 0
    counts = np.bincount(g, minlength=num_groups).astype(float)
    w0, b0 = rng.normal(size=(num_classes, d)), rng.normal(size=num_classes)
    settings = dict(eta=0.3, c_adj=1.5, l2=0.1, lr=0.2)
    expected = _numpy_steps(
        x, y, g, w0, b0, counts=counts, steps=3, num_groups=num_groups, **settings
    )

    tx = optim.make("sgd", settings["lr"])
    step = jax.jit(
        group_dro.make_step(
            common.Inputs(
                jnp.asarray(x, jnp.float32), jnp.asarray(y), jnp.asarray(g), None, None, None
            ),
            jnp.asarray(counts, jnp.float32),
            group_dro.Point(settings["eta"], settings["l2"], settings["c_adj"]),
            tx,
            settings=group_dro.Settings(
                num_classes=num_classes,
                num_groups=num_groups,
                metric="wga",
                optimizer="sgd",
                steps=3,
                batch_size=0,
                group_balanced=True,
                l2_bias=True,
                eval_every=0,
            ),
        )
    )
    state = group_dro.initial_state(num_classes, d, jnp.asarray(counts), tx)
    state = state.replace(head=heads.from_numpy(w0, b0))
    for w, b, q in expected:
        state = step(state, jax.random.key(0))
        np.testing.assert_allclose(np.exp(state.log_q), q, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(state.head.weight, w, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(state.head.bias, b, rtol=1e-4, atol=1e-5)
    assert float(np.exp(state.log_q)[3]) == 0.0


def test_beats_erm_on_synthetic(feature_set):
    data = feature_set(num_train=2000, val_per_group=50, test_per_group=200)
    config = group_dro.default_config()
    config.learning_rate = 1e-2  # unit-scale features, d = 32 (as experiments/configs/synthetic.py)
    keys = jax.random.split(jax.random.key(0), 3)
    config.update(group_dro.check(config, data))
    result = group_dro.run(data, config, keys)
    rows, info = result.rows, result.info
    assert set(rows) == {"group_dro"}
    c, d, p = data.num_classes, data.feature_dim, 9
    chex.assert_shape([rows["group_dro"].weight, rows["group_dro"].bias], [(3, c, d), (3, c)])
    chex.assert_shape(
        [info["head"].weight, info["score"], info["scores"]], [(3, p, c, d), (3, p), (3, p, 20)]
    )
    chex.assert_tree_all_finite(rows)

    train, test = data.train.to_arrays(), data.test.to_arrays()
    wga = lambda h: evaluate.evaluate_head(h, test, num_classes=c, num_groups=4)["wga"]
    recipe, rates = erm.Recipe(num_classes=c, steps=1000), erm.Rates(learning_rate=1e-2)
    erm_head = erm.fit(train.features, train.labels, keys[0], recipe, rates)
    erm_wga = float(wga(erm_head))
    dro_wga = np.asarray(jax.vmap(wga)(rows["group_dro"]))
    assert np.all(dro_wga >= erm_wga + 0.05), (dro_wga, erm_wga)

    # New seeds reuse the compiled program (seeds and grid values are data, not static).
    compiled = group_dro.run_grid._cache_size()
    config.step_size_grid = (0.02, 0.2, 2.0)
    config.update(group_dro.check(config, data))
    group_dro.run(data, config, jax.random.split(jax.random.key(1), 3))
    assert group_dro.run_grid._cache_size() == compiled


def test_full_batch_is_one_run_for_every_seed(feature_set):
    data = feature_set(num_train=400, val_per_group=10, test_per_group=10)
    config = group_dro.default_config()
    config.update(batch_size=0, steps=20, eval_every=10, step_size_grid=(0.1,), l2_grid=(0.1,))
    config.update(group_dro.check(config, data))
    result = group_dro.run(data, config, jax.random.split(jax.random.key(0), 2))
    rows = result.rows
    chex.assert_shape(rows["group_dro"].weight, (2, 2, data.feature_dim))
    np.testing.assert_array_equal(rows["group_dro"].weight[0], rows["group_dro"].weight[1])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("step_size_grid", (0.01, -1.0), r"group_dro\.step_size_grid: every value must be >= 0"),
        ("l2_grid", (), r"group_dro\.l2_grid must be a non-empty tuple"),
        ("adjustment_grid", (float("nan"),), r"group_dro\.adjustment_grid: every value"),
        (
            "optimizer",
            "lbfgs",
            r"group_dro\.optimizer must be one of \('sgd', 'adam', 'momentum'\)",
        ),
        ("learning_rate", 0.0, r"group_dro\.learning_rate must be > 0 and finite, got 0\.0"),
        ("steps", 10.5, r"group_dro\.steps must be an integer > 0, got 10\.5"),
        ("batch_size", -1, r"group_dro\.batch_size must be an integer >= 0, got -1"),
        ("group_balanced", 1, r"group_dro\.group_balanced must be True or False, got 1"),
        ("l2_bias", "yes", r"group_dro\.l2_bias must be True or False"),
        ("standardize", None, r"group_dro\.standardize must be True or False"),
        ("eval_every", 300, r"group_dro\.eval_every must be 0 or divide group_dro\.steps=1000"),
        ("selection_metric", "auc", r"group_dro\.selection_metric must be 'auto' or one of"),
        ("stepsize_grid", (0.1,), r"group_dro: unknown config field\(s\) \['stepsize_grid'\]"),
    ],
)
def test_check_names_the_field(feature_set, field, value, message):
    data = feature_set(num_train=200, val_per_group=5, test_per_group=5)
    # A plain dict round trip: ConfigDict's own type checks would stop some bad values first.
    config = ml_collections.ConfigDict({**group_dro.default_config().to_dict(), field: value})
    with pytest.raises(ValueError, match=message):
        group_dro.check(config, data)


def test_check_needs_train_groups(feature_set):
    data = feature_set(num_train=200, val_per_group=5, test_per_group=5, with_groups=False)
    with pytest.raises(
        ValueError, match=r"^group_dro needs group labels on train \(num_groups=0\)$"
    ):
        group_dro.check(group_dro.default_config(), data)
    grouped = feature_set(num_train=200, val_per_group=5, test_per_group=5)
    train = grouped.train
    partial = features.Split(
        train.features, train.labels, np.where(np.arange(200) < 3, -1, train.groups)
    )
    with pytest.raises(ValueError, match=r"3 of 200 train examples have group -1"):
        group_dro.check(group_dro.default_config(), features.with_splits(grouped, train=partial))
    group_dro.check(group_dro.default_config(), grouped)  # passes
