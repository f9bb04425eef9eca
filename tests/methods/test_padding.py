"""Row buckets change no number: every registered method, run on the same features sent as they
are and padded to their row buckets (`hsfm_jax.data.buckets`: padding rows with label -1), returns
the same heads and the same report. float64, so the only difference allowed is summation order."""

import dataclasses

import jax
import numpy as np
import pytest

from hsfm_jax import methods
from hsfm_jax.data import buckets, features
from hsfm_jax.runtime import experiment, program_cache
from tests.methods.test_float64 import _small_config

_XLA = "/jax/core/compile/backend_compile_duration"  # one XLA compilation

# methods whose programs do not yet honour padding rows (run unpadded by `experiment.run`)
NOT_YET: set[str] = set()


def _assert_same(a, b, where):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)) and not hasattr(a, "_fields"):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
        assert len(leaves_a) == len(leaves_b), where
        for x, y in zip(leaves_a, leaves_b, strict=True):
            x, y = np.asarray(x), np.asarray(y)
            assert x.shape == y.shape, where
            if np.issubdtype(x.dtype, np.floating):
                np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, err_msg=where)
            else:
                np.testing.assert_array_equal(x, y, err_msg=where)


# every method as the test config has it; the branches that read rows differently run in CI
# (`slow`: the fast loop keeps one case per method)
BRANCHES = [
    ("erm", {"erm.batch_size": 0}),
    ("erm", {"erm.batch_size": 32, "erm.class_balanced": True}),
    ("group_dro", {"group_dro.batch_size": 0}),
    ("group_dro", {"group_dro.group_balanced": False}),
    ("neurontune", {"neurontune.tune_split": "val_half"}),
    ("afr", {"afr.class_balance": "sum"}),
    ("jtt", {"jtt.batch_size": 0}),
    (
        "hsfm",
        {"hsfm.rate_units": "feature_rms", "hsfm.hard_set_size": 8, "val_split.fraction": 0.5},
    ),
    ("group_dro", {"val_split.fraction": 0.5}),
]
CASES = [(name, {}) for name in methods.REGISTRY] + [
    pytest.param(name, overrides, marks=pytest.mark.slow) for name, overrides in BRANCHES
]


@pytest.mark.parametrize(("name", "overrides"), CASES)
def test_padding_rows_change_no_result(small_features_dir, name, overrides):
    if name in NOT_YET:
        pytest.skip(f"{name} does not honour padding rows yet")
    config = _small_config(small_features_dir)
    overrides = dict(overrides)
    val_fraction = overrides.pop("val_split.fraction", 0.0)  # a `select` split beside val
    experiment.apply_overrides(config, overrides)
    keys = jax.random.split(jax.random.key(0), 2)
    with jax.enable_x64(True):
        data = features.with_dtype(features.load(small_features_dir), np.float64)
        data = features.split_validation(data, val_fraction, seed=0)
        padded = features.with_row_buckets(data)
        assert padded.train.to_arrays().labels.shape[0] == buckets.rows(data.train.num_examples)
        assert padded.train.num_rows > data.train.num_examples  # the test pads something
        resolved = methods.check(config, [name], data)[name]
        config = methods.resolve(config, name, resolved)
        plain = methods.run(name, data, config, keys)
        bucketed = methods.run(name, padded, config, keys)
    _assert_same(plain.rows, bucketed.rows, f"{name}.rows")
    _assert_same(dict(plain.report), dict(bucketed.report), f"{name}.report")
    _assert_same(dict(plain.info), dict(bucketed.info), f"{name}.info")


def _cut(data: features.FeatureSet, fraction: float, seed: int = 0) -> features.FeatureSet:
    """`data` keeping a random `fraction` of each split's rows (in order): other split sizes in the
    same row buckets, groups no longer balanced in val."""
    rng = np.random.default_rng(seed)

    def cut(split):
        keep = rng.random(split.num_examples) < fraction
        ids = None if split.ids is None else [i for i, k in zip(split.ids, keep, strict=True) if k]
        return dataclasses.replace(
            split,
            features=split.features[keep],
            labels=split.labels[keep],
            groups=split.groups[keep],
            ids=ids,
        )

    return dataclasses.replace(data, splits={n: cut(s) for n, s in data.splits.items()})


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver,group_labels", [("newton", "all"), ("newton", "none"), ("sklearn", "all")]
)
def test_dfr_padding_changes_no_result_on_unbalanced_splits(
    small_features_dir, solver, group_labels
):
    """Every DFR variant, on splits whose groups are unbalanced (`_cut`), with the JAX and the
    scikit-learn solver, and with balanced classes where the groups are unknown."""
    config = _small_config(small_features_dir)
    config.dfr.solver.method = solver
    keys = jax.random.split(jax.random.key(1), 2)
    # x64 for the whole process, as `experiment.run` sets it: scikit-learn's host callback runs
    # on an XLA thread, which does not see `jax.enable_x64`'s thread-local setting.
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        data = _cut(features.with_dtype(features.load(small_features_dir), np.float64), 0.8)
        if group_labels == "none":
            data = features.without_group_labels(data)
        resolved = methods.check(config, ["dfr"], data)["dfr"]
        config = methods.resolve(config, "dfr", resolved)
        assert config.balance == ("groups" if group_labels == "all" else "classes")
        plain = methods.run("dfr", data, config, keys)
        bucketed = methods.run("dfr", features.with_row_buckets(data), config, keys)
    finally:
        jax.config.update("jax_enable_x64", x64)
    assert set(plain.rows) == {"dfr", "tr_dfr", "paper_dfr"}
    _assert_same(plain.rows, bucketed.rows, "dfr.rows")


@pytest.mark.parametrize("name", list(methods.REGISTRY))
def test_a_second_size_in_the_same_buckets_compiles_nothing(small_features_dir, name):
    if name in NOT_YET:
        pytest.skip(f"{name} does not honour padding rows yet")
    assert program_cache.directory() is None  # loads from disk would hide compilations
    config = _small_config(small_features_dir)
    keys = jax.random.split(jax.random.key(0), 2)
    data = features.with_row_buckets(features.load(small_features_dir))
    smaller = _cut(data, 0.9)
    for split in data.splits:
        assert smaller[split].num_rows == data[split].num_rows
        assert smaller[split].num_examples < data[split].num_examples
        assert set(np.unique(smaller[split].groups)) == set(np.unique(data[split].groups))
    resolved = methods.check(config, [name], data)[name]
    assert methods.check(config, [name], smaller)[name] == resolved
    config = methods.resolve(config, name, resolved)
    jax.block_until_ready(methods.run(name, data, config, keys).rows)
    compiled = []
    listener = lambda event, duration, **kw: compiled.append(event) if event == _XLA else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        jax.block_until_ready(methods.run(name, smaller, config, keys).rows)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiled == [], f"{name}: {len(compiled)} program(s) compiled again"
