"""NeuronTune: masked medians against NumPy, identification on known dims, end to end."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hsfm_jax.data import features, synthetic
from hsfm_jax.methods import neurontune
from hsfm_jax.runtime import epoch_loop


def test_spuriousness_scores_match_numpy():
    rng = np.random.default_rng(0)
    n, d, num_classes = 101, 7, 3
    activations = np.abs(rng.normal(size=(n, d))).astype(np.float32)
    activations[:, 0] = np.round(activations[:, 0])  # ties
    labels = rng.integers(0, num_classes, size=n)
    correct = rng.random(n) < 0.7
    correct[labels == 2] = True  # a class with no misclassified example -> delta = 0
    values, rows = neurontune.class_sorted_activations(activations, labels, num_classes)
    delta = neurontune.spuriousness_scores(
        jnp.asarray(values), jnp.asarray(rows), jnp.asarray(correct), jnp.ones(n, bool)
    )
    expected = neurontune.spuriousness_scores_numpy(activations, labels, correct, num_classes)
    np.testing.assert_allclose(delta, expected, atol=1e-6)
    np.testing.assert_array_equal(delta[2], 0.0)

    member = rng.random(n) < 0.5  # a subset D_Ide, as with tune_split="val_half"
    delta_sub = neurontune.spuriousness_scores(
        jnp.asarray(values), jnp.asarray(rows), jnp.asarray(correct), jnp.asarray(member)
    )
    expected_sub = neurontune.spuriousness_scores_numpy(
        activations[member], labels[member], correct[member], num_classes
    )
    np.testing.assert_allclose(delta_sub, expected_sub, atol=1e-6)
    np.testing.assert_allclose(neurontune.sfit(delta), np.abs(expected).sum(), rtol=1e-5)


def _relu_synthetic():
    """The synthetic generator with one core and one spurious direction, as post-ReLU features.

    Each generator dimension x_j becomes (relu(x_j), relu(-x_j)), non-negative like the
    post-ReLU embeddings NeuronTune is defined on, so column j and j + d both belong to the
    block of x_j.
    """
    splits, info = synthetic.generate(
        num_core=1, num_spurious=1, num_noise=4, num_train=2000, val_per_group=100
    )
    relu2 = lambda x: np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], axis=1)
    splits = {k: features.Split(relu2(s.features), s.labels, s.groups) for k, s in splits.items()}
    d = len(info["core_dims"]) + len(info["spurious_dims"]) + len(info["noise_dims"])
    meta = features.make_meta(
        dataset="synthetic_relu",
        backbone="none",
        class_names=info["class_names"],
        group_names=info["group_names"],
        feature_dim=2 * d,
        split_sizes={k: v.num_examples for k, v in splits.items()},
        preprocessing="test",
    )
    both = lambda dims: sorted(dims + [j + d for j in dims])
    dims = {k: both(info[k]) for k in ("core_dims", "spurious_dims", "noise_dims")}
    return features.FeatureSet(path=None, meta=meta, splits=splits), dims


def test_identification_and_end_to_end_on_known_dims():
    data, dims = _relu_synthetic()
    config = neurontune.default_config()  # activation "abs", lambda = 0
    config.thresholds = (0.0, 0.5)
    config.epochs = 3
    config.batches_per_epoch = 20
    keys = jax.random.split(jax.random.key(0), 2)
    config.update(neurontune.check(config, data))
    result = neurontune.run(data, config, keys)
    rows, info = result.rows, {**result.info, "resumed_from": result.resumed_from}

    biased = np.asarray(info["biased"])  # (S, L, d)
    chex.assert_shape(biased, (2, 2, data.feature_dim))
    at_zero = np.flatnonzero(biased[0, 0])
    assert set(dims["spurious_dims"]) <= set(at_zero), at_zero
    assert not set(dims["core_dims"]) & set(at_zero), at_zero

    assert set(rows) == {"neurontune_wga", "neurontune_sfit"}
    c, d = data.num_classes, data.feature_dim
    for head in rows.values():
        chex.assert_shape([head.weight, head.bias], [(2, c, d), (2, c)])
        chex.assert_tree_all_finite(head)
    # Suppressed dimensions are zero columns of the returned heads (lambda = 0 here or 0.5).
    wga_head = np.asarray(rows["neurontune_wga"].weight)
    assert np.all(wga_head[:, :, dims["spurious_dims"]] == 0.0)
    sfit_history = np.asarray(info["sfit_history"])
    chex.assert_shape(sfit_history, (2, 2, 3))
    assert np.all(np.isfinite(sfit_history)) and np.all(sfit_history >= 0)
    np.testing.assert_allclose(np.asarray(info["best_sfit"]), sfit_history.max(-1))


def test_chunks_equal_one_scan_and_resume(tmp_path):
    """Tuning epochs in chunks (3 = 2 + 1) give exactly one scan's numbers; a run killed after
    its first checkpoint resumes to them, compiling nothing new. D_Tune is half of val, so the
    state carries the split (tune_split="train" resumes in test_integrity's SIGKILL test)."""
    data, _ = _relu_synthetic()
    config = neurontune.default_config()
    config.update(thresholds=(0.0, 0.5), epochs=3, batches_per_epoch=5, tune_split="val_half")
    keys = jax.random.split(jax.random.key(0), 2)
    config.chunk_epochs = 3
    config.update(neurontune.check(config, data))
    result = neurontune.run(data, config, keys)
    one_scan = {**result.info, "resumed_from": result.resumed_from}
    config.chunk_epochs = 2
    result = neurontune.run(data, config, keys)
    chunked = {**result.info, "resumed_from": result.resumed_from}
    chex.assert_shape(chunked["metric_history"], (2, 2, 3))
    chex.assert_trees_all_equal(chunked, one_scan)

    loop = epoch_loop.Options(checkpoint_dir=tmp_path / "ckpt", checkpoint_seconds=0)
    chunk, calls = neurontune.tune_chunk, []

    def killed_after_one_chunk(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return chunk(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(neurontune, "tune_chunk", killed_after_one_chunk)
        with pytest.raises(KeyboardInterrupt):
            neurontune.run(data, config, keys, loop=loop)
    compiled = neurontune.tune_chunk._cache_size()
    result = neurontune.run(data, config, keys, loop=loop)
    resumed = {**result.info, "resumed_from": result.resumed_from}
    assert resumed.pop("resumed_from") == 2 and chunked.pop("resumed_from") == 0
    assert neurontune.tune_chunk._cache_size() == compiled
    chex.assert_trees_all_equal(resumed, chunked)
