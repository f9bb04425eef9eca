"""JTT: error sets, weights and both stages against NumPy; WGA over ERM on synthetic; checks."""

import chex
import jax
import ml_collections
import numpy as np
import pytest

from hsfm_jax.methods import erm, jtt
from hsfm_jax.reporting import evaluate


def _numpy_gd(z, y, sample_weight, steps, lr, l2, num_classes):
    """erm.fit's full-batch objective by hand (weighted mean CE + l2/2 on weight and bias)."""
    w, b = np.zeros((num_classes, z.shape[1])), np.zeros(num_classes)
    path = []
    for _ in range(steps):
        logits = z @ w.T + b
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        coeff = (prob - np.eye(num_classes)[y]) * (sample_weight / sample_weight.sum())[:, None]
        w, b = w - lr * (coeff.T @ z + l2 * w), b - lr * (coeff.sum(0) + l2 * b)
        path.append((w, b))
    return path


def _numpy_wga(w, b, split, mean, scale):
    pred = np.argmax(((split.features - mean) / scale) @ w.T + b, axis=1)
    correct = pred == split.labels
    return min(correct[split.groups == g].mean() for g in np.unique(split.groups))


def test_error_sets_weights_and_heads_match_numpy(feature_set):
    data = feature_set(
        num_core=2, num_spurious=2, num_noise=1, num_train=80, val_per_group=6, test_per_group=2
    )
    config = jtt.default_config()
    config.update(
        identification_steps_grid=(7, 3),  # any order: the chain runs them sorted
        upweight_grid=(2.0, 5.0),
        batch_size=0,
        learning_rate=0.5,
        l2=0.01,
        steps=8,
        eval_every=2,
    )
    config.update(jtt.check(config, data))
    result = jtt.run(data, config, jax.random.split(jax.random.key(0), 1))
    rows, info = result.rows, result.info

    x, y = np.asarray(data.train.features, np.float64), data.train.labels
    mean, scale = x.mean(0), x.std(0)
    z = (x - mean) / scale
    ones = np.ones(len(y))
    for t_index, t in enumerate((3, 7)):
        w, b = _numpy_gd(z, y, ones, t, 0.5, 0.01, 2)[-1]
        np.testing.assert_allclose(
            info["identification_head"].weight[0, t_index], w / scale, rtol=1e-4, atol=1e-5
        )
        errors = np.argmax(z @ w.T + b, axis=1) != y
        np.testing.assert_array_equal(info["errors"][0, t_index], errors)
        assert 0 < errors.sum() < len(y)
        np.testing.assert_array_equal(jtt.upweights(errors, 5.0), np.where(errors, 5.0, 1.0))
        for u_index, upweight in enumerate((2.0, 5.0)):
            p = 2 * t_index + u_index
            assert info["grid"]["identification_steps"][p] == t
            assert info["grid"]["upweight"][p] == upweight
            path = _numpy_gd(z, y, np.where(errors, upweight, 1.0), 8, 0.5, 0.01, 2)[1::2]
            scores = [_numpy_wga(w, b, data.val, mean, scale) for w, b in path]
            np.testing.assert_allclose(info["scores"][0, p], scores, atol=1e-6)
            best = int(info["checkpoint"][0, p]) - 1
            assert best == int(np.argmax(scores))
            w, b = path[best]
            np.testing.assert_allclose(info["head"].weight[0, p], w / scale, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(
                info["head"].bias[0, p], b - (w / scale) @ mean, rtol=1e-4, atol=1e-5
            )
    selected = int(np.argmax(info["score"][0]))
    np.testing.assert_array_equal(rows["jtt"].weight[0], info["head"].weight[0, selected])


def test_beats_erm_on_synthetic(feature_set):
    data = feature_set(num_train=2000, val_per_group=50, test_per_group=200)
    config = jtt.default_config()
    config.learning_rate = 0.1  # unit-scale features, d = 32 (as experiments/configs/synthetic.py)
    keys = jax.random.split(jax.random.key(0), 3)
    config.update(jtt.check(config, data))
    result = jtt.run(data, config, keys)
    rows, info = result.rows, result.info
    c, d = data.num_classes, data.feature_dim
    chex.assert_shape([rows["jtt"].weight, rows["jtt"].bias], [(3, c, d), (3, c)])
    chex.assert_shape([info["head"].weight, info["errors"]], [(3, 9, c, d), (3, 3, 2000)])
    chex.assert_tree_all_finite(rows)

    # The error set is mostly the minority groups (y != s), which JTT relies on.
    errors = np.asarray(info["errors"][0, 0])
    minority = data.train.groups % 3 != 0
    assert (errors & minority).sum() / errors.sum() > 0.8

    train, test = data.train.to_arrays(), data.test.to_arrays()
    wga = lambda h: evaluate.evaluate_head(h, test, num_classes=c, num_groups=4)["wga"]
    recipe, rates = erm.Recipe(num_classes=c, steps=1000), erm.Rates(learning_rate=1e-2)
    erm_head = erm.fit(train.features, train.labels, keys[0], recipe, rates)
    erm_wga = float(wga(erm_head))
    jtt_wga = np.asarray(jax.vmap(wga)(rows["jtt"]))
    assert np.all(jtt_wga >= erm_wga + 0.05), (jtt_wga, erm_wga)

    compiled = jtt.run_grid._cache_size()
    config.upweight_grid = (10.0, 30.0, 60.0)
    config.update(jtt.check(config, data))
    jtt.run(data, config, jax.random.split(jax.random.key(1), 3))
    assert jtt.run_grid._cache_size() == compiled


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "identification_steps_grid",
            (10, 0),
            r"jtt\.identification_steps_grid: every value must be an integer > 0, got 0",
        ),
        (
            "identification_steps_grid",
            (10, 10),
            r"jtt\.identification_steps_grid must not repeat a value",
        ),
        (
            "upweight_grid",
            (20.0, -5.0),
            r"jtt\.upweight_grid: every value must be > 0 and finite, got -5\.0",
        ),
        ("upweight_grid", 20.0, r"jtt\.upweight_grid must be a non-empty tuple"),
        ("optimizer", "rmsprop", r"jtt\.optimizer must be one of"),
        ("learning_rate", float("inf"), r"jtt\.learning_rate must be > 0 and finite, got inf"),
        ("steps", 0, r"jtt\.steps must be an integer > 0, got 0"),
        ("batch_size", 1.5, r"jtt\.batch_size must be an integer >= 0, got 1\.5"),
        ("l2", -0.1, r"jtt\.l2 must be >= 0 and finite, got -0\.1"),
        ("l2_bias", 0, r"jtt\.l2_bias must be True or False, got 0"),
        ("standardize", "no", r"jtt\.standardize must be True or False"),
        ("eval_every", 33, r"jtt\.eval_every must be 0 or divide jtt\.steps=1000, got 33"),
        ("eval_every", -1, r"jtt\.eval_every must be an integer >= 0, got -1"),
        ("selection_metric", "wga2", r"jtt\.selection_metric must be 'auto' or one of"),
        ("lambda_up", 5.0, r"jtt: unknown config field\(s\) \['lambda_up'\]"),
    ],
)
def test_check_names_the_field(feature_set, field, value, message):
    data = feature_set(num_train=200, val_per_group=5, test_per_group=5)
    config = ml_collections.ConfigDict({**jtt.default_config().to_dict(), field: value})
    with pytest.raises(ValueError, match=message):
        jtt.check(config, data)


def test_check_without_groups(feature_set):
    """JTT reads no train group; without groups selection must be by accuracy."""
    data = feature_set(num_train=200, val_per_group=5, test_per_group=5, with_groups=False)
    jtt.check(jtt.default_config(), data)  # "auto" selects by mean accuracy
    config = jtt.default_config()
    config.selection_metric = "wga"
    with pytest.raises(ValueError, match=r"^jtt\.selection_metric='wga' needs group labels"):
        jtt.check(config, data)
