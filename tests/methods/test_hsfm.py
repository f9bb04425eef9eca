"""The full HSFM run: seeds vmapped == a Python loop, one trace, Eq. 17, and it beats ERM."""

from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import train
from experiments.configs import synthetic as synthetic_config
from hsfm_jax.core import heads, losses, optim
from hsfm_jax.data import features
from hsfm_jax.methods.hsfm import algorithm as hsfm
from hsfm_jax.methods.hsfm import hard_set, meta
from hsfm_jax.methods.hsfm import method as hsfm_method
from hsfm_jax.reporting import evaluate

SETTINGS = hsfm.Settings(
    num_classes=2,
    num_groups=4,
    support_per_class=8,
    hard_set_size=10,
    inner_steps=3,
    meta_steps=2,
    epochs=4,
)


@pytest.fixture(scope="module")
def problem(hsfm_problem):
    return hsfm_problem


def test_vmapped_seeds_equal_python_loop(problem):
    arrays, head, rates = problem
    keys = jax.random.split(jax.random.key(1), 3)
    batched = hsfm.run_seeds(arrays, head, rates, keys, settings=SETTINGS)
    single = jax.jit(hsfm.run, static_argnames="settings")
    for i, key in enumerate(keys):
        one = single(arrays, head, rates, key, settings=SETTINGS)
        np.testing.assert_array_equal(batched.support_indices[i], one.support_indices)
        np.testing.assert_array_equal(batched.best_epoch[i], one.best_epoch)
        chex.assert_trees_all_close(
            jax.tree_util.tree_map(
                lambda x, i=i: x[i], (batched.best_head, batched.support, batched.history)
            ),
            (one.best_head, one.support, one.history),
            rtol=1e-5,
            atol=1e-6,
        )


def test_one_trace_across_seeds_rates_and_epoch_chunks(problem):
    arrays, head, rates = problem

    @jax.jit
    @chex.assert_max_traces(n=1)
    def seeds(keys, rates):
        return jax.vmap(lambda k: hsfm.run(arrays, head, rates, k, settings=SETTINGS))(keys)

    seeds(jax.random.split(jax.random.key(0), 4), rates)
    seeds(jax.random.split(jax.random.key(5), 4), hsfm.make_rates(inner_lr=2e-2, meta_lr=1.0))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def chunk(state, rates):
        return hsfm.run_epochs(state, arrays, rates, settings=SETTINGS, num_epochs=2)

    state = hsfm.init(arrays, head, rates, jax.random.key(0), settings=SETTINGS)
    for _ in range(3):
        state, _ = chunk(state, rates)
    assert int(state.epoch) == 6


def test_epoch_chunks_equal_one_scan(problem):
    arrays, head, rates = problem
    key = jax.random.key(3)
    whole = hsfm.run(arrays, head, rates, key, settings=SETTINGS)
    state = hsfm.init(arrays, head, rates, key, settings=SETTINGS)
    state, h1 = hsfm.run_epochs(state, arrays, rates, settings=SETTINGS, num_epochs=1)
    state, h2 = hsfm.run_epochs(state, arrays, rates, settings=SETTINGS, num_epochs=3)
    chex.assert_trees_all_close(state.best_head, whole.best_head, rtol=1e-6)
    np.testing.assert_allclose(
        np.concatenate([h1["val_wga"], h2["val_wga"]]), whole.history["val_wga"]
    )


def test_carried_val_logits_are_the_current_heads(problem):
    """The hard set of the next epoch is drawn from val logits of the head the epoch ended with."""
    arrays, head, rates = problem
    state = hsfm.init(arrays, head, rates, jax.random.key(2), settings=SETTINGS)
    np.testing.assert_allclose(state.val_logits, heads.apply(head, arrays.val.features))
    state, _ = hsfm.run_epochs(state, arrays, rates, settings=SETTINGS, num_epochs=2)
    np.testing.assert_allclose(
        state.val_logits, heads.apply(state.head, arrays.val.features), rtol=1e-6, atol=1e-6
    )


def test_deferred_test_history_equals_per_epoch_evaluation(problem, monkeypatch):
    """Test metrics of every epoch's head from one matmul after the scan == one per epoch."""
    arrays, head, rates = problem
    key = jax.random.key(4)
    assert hsfm._defer_test(arrays, SETTINGS, SETTINGS.epochs)
    deferred = hsfm.run(arrays, head, rates, key, settings=SETTINGS)
    monkeypatch.setattr(hsfm, "_DEFERRED_TEST_BYTES", 0)
    assert not hsfm._defer_test(arrays, SETTINGS, SETTINGS.epochs)
    per_epoch = hsfm.run(arrays, head, rates, key, settings=SETTINGS)
    assert sorted(deferred.history) == sorted(per_epoch.history)
    test_keys = [k for k in deferred.history if k.startswith("test_")]
    assert {"test_wga", "test_mean_acc", "test_worst_class_acc"} <= set(test_keys)
    for k in test_keys:
        assert deferred.history[k].shape == (SETTINGS.epochs,), k
        np.testing.assert_allclose(deferred.history[k], per_epoch.history[k], err_msg=k)
    last = evaluate.evaluate_head(
        deferred.last_head,
        arrays.test,
        num_classes=2,
        num_groups=4,
        train_group_counts=arrays.train_group_counts,
    )
    np.testing.assert_allclose(deferred.history["test_wga"][-1], last["wga"])
    np.testing.assert_allclose(deferred.history["test_mean_acc"][-1], last["mean_acc"])


def test_sgd_meta_step_is_eq17(problem):
    """One epoch, one meta-step, meta_optimizer='sgd': H1 = H0 - eta * clip(dL_out/dH0)."""
    arrays, head, _ = problem
    settings = SETTINGS._replace(meta_steps=1, epochs=1, meta_optimizer="sgd", head_optimizer="sgd")
    rates = hsfm.make_rates(inner_lr=1e-2, meta_lr=0.3, meta_grad_clip=5e-4)
    result = hsfm.run(arrays, head, rates, jax.random.key(0), settings=settings)
    h0 = arrays.train.features[result.support_indices]
    y = arrays.train.labels[result.support_indices]
    val_losses = losses.per_example_cross_entropy(
        logits=heads.apply(head, arrays.val.features), labels=arrays.val.labels
    )
    q = hard_set.top_k_per_class(val_losses, arrays.val.labels, num_classes=2, per_class=10)
    _, g = meta.meta_value_and_grad(
        h0, head, y, (arrays.val.features[q], arrays.val.labels[q]), inner_steps=3, inner_lr=1e-2
    )
    norm = jnp.linalg.norm(g)
    assert norm > 5e-4  # the clip is active in this test
    np.testing.assert_allclose(result.support, h0 - 0.3 * g * 5e-4 / norm, rtol=1e-5, atol=1e-7)
    # then T sgd head steps on the edited H
    tx = optim.make("sgd", 1e-2)
    expected = head
    for _ in range(3):
        grads = jax.grad(losses.head_loss)(expected, result.support, y)
        expected = jax.tree_util.tree_map(
            lambda p, u: p + u, expected, tx.update(grads, tx.init(expected))[0]
        )
    chex.assert_trees_all_close(result.last_head, expected, rtol=1e-5)


def test_best_head_selection_ties_go_to_later_epoch(problem):
    arrays, head, _ = problem
    # lr 0: nothing changes, every epoch ties; the last epoch must be kept.
    rates = hsfm.make_rates(inner_lr=0.0, meta_lr=0.0, head_lr=0.0)
    result = hsfm.run(arrays, head, rates, jax.random.key(0), settings=SETTINGS)
    assert int(result.best_epoch) == SETTINGS.epochs


def _feature_set(train_labels, val_labels, num_groups=4):
    def split(labels):
        labels = np.asarray(labels)
        n = labels.size
        return features.Split(np.zeros((n, 3), np.float32), labels, labels % max(num_groups, 1))

    meta = dict(num_classes=2, num_groups=num_groups, feature_dim=3)
    splits = {"train": split(train_labels), "val": split(val_labels), "test": split([0, 1])}
    return features.FeatureSet(path=Path("mem"), meta=meta, splits=splits)


def _hsfm_config(**overrides):
    config = hsfm_method.default_config()
    config.update(dict(support_per_class=8, hard_set_size=10, **overrides))
    return config


def test_check_names_the_class():
    with pytest.raises(ValueError, match=r"train: hsfm.support_per_class: class 1 has 5"):
        hsfm_method.check(_hsfm_config(), _feature_set([0] * 20 + [1] * 5, [0, 1] * 20))
    with pytest.raises(ValueError, match=r"val: hsfm.hard_set_size: class 0 has 3"):
        hsfm_method.check(_hsfm_config(), _feature_set([0, 1] * 20, [0] * 3 + [1] * 20))
    with pytest.raises(ValueError, match="hsfm.meta_optimizer must be one of"):
        hsfm_method.check(
            _hsfm_config(meta_optimizer="lbfgs"), _feature_set([0, 1] * 20, [0, 1] * 20)
        )


@pytest.mark.slow  # the CLI config, 5 seeds, 40 epochs
def test_hsfm_beats_erm_on_synthetic_with_cli_config(tmp_path):
    """End to end with the exact config the CLI runs (experiments/configs/synthetic.py)."""
    config = synthetic_config.get_config()
    config.features_dir = str(tmp_path / "features")
    report = train.run(config, tmp_path / "run")
    erm_wga = report["methods"]["erm"]["test"]["wga"]["mean"]
    hsfm_wga = report["methods"]["hsfm"]["test"]["wga"]
    assert len(hsfm_wga["per_seed"]) == config.num_seeds == 5
    assert hsfm_wga["mean"] > erm_wga + 0.08, (erm_wga, hsfm_wga)
    assert min(hsfm_wga["per_seed"]) > erm_wga
    for name in ("config.json", "results.json", "results.md", "support.npz", "history.json"):
        assert (tmp_path / "run" / name).is_file()
    support = np.load(tmp_path / "run" / "support.npz")
    assert support["support"].shape == (5, 32, 32) and support["support_indices"].shape == (5, 32)


def test_selection_on_a_separate_split(problem):
    """With Data.select set, best_score is the selection metric on `select`, not on `val`."""
    arrays, head, rates = problem
    data = arrays.replace(select=arrays.test)
    result = hsfm.run(data, head, rates, jax.random.key(0), settings=SETTINGS)
    wga = evaluate.evaluate_head(result.best_head, arrays.test, num_classes=2, num_groups=4)["wga"]
    np.testing.assert_allclose(result.best_score, wga)
    np.testing.assert_allclose(result.best_score, np.max(result.history["val_wga"]))


def test_hard_set_fill_repeat_allows_small_val_classes(problem):
    arrays, head, rates = problem
    labels = np.array([0] * 3 + [1] * 20)
    small_val = _feature_set([0, 1] * 20, labels)
    hsfm_method.check(_hsfm_config(hard_set_fill="repeat"), small_val)  # class 0 gives all 3
    with pytest.raises(ValueError, match="hsfm.hard_set_fill must be one of"):
        hsfm_method.check(_hsfm_config(hard_set_fill="pad"), small_val)
    big = SETTINGS._replace(hard_set_fill="repeat", hard_set_size=200)  # > the 40 val per class
    result = hsfm.run(arrays, head, rates, jax.random.key(0), settings=big)
    assert np.all(np.asarray(result.history["hard_set_group_counts"]).sum(-1) == 400)
