"""The group-label-free track (``group_labels="none"``), label-free selection metrics
(worst-class accuracy, SFit) and the bootstrap interval of test WGA."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import train
from experiments.configs import synthetic as synthetic_config
from hsfm_jax import methods
from hsfm_jax.core import heads, spuriousness
from hsfm_jax.data import features as features_lib
from hsfm_jax.data import inputs, synthetic
from hsfm_jax.methods import neurontune
from hsfm_jax.methods.hsfm import method as hsfm_method
from hsfm_jax.reporting import evaluate, results, tables
from hsfm_jax.runtime import experiment

pytestmark = pytest.mark.slow  # every method, label-free and grouped, end to end

LABEL_FREE_METHODS = "erm,dfr,neurontune,jtt,afr,hsfm"
SFIT_METHODS = ("dfr", "jtt", "afr")


@pytest.fixture(scope="module")
def features_dirs(tmp_path_factory):
    """(original, copy whose train and val group labels are randomly permuted)."""
    original = tmp_path_factory.mktemp("features")
    synthetic.write(original, num_train=1000, val_per_group=40, test_per_group=100)
    shuffled = tmp_path_factory.mktemp("shuffled") / "features"
    shutil.copytree(original, shuffled)
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        path = shuffled / split / "groups.npy"
        groups = np.load(path)
        np.save(path, rng.permutation(groups))
        assert not np.array_equal(np.load(path), groups)
    return original, shuffled


def small_config(features_dir, methods_list, group_labels):
    config = synthetic_config.get_config()
    config.features_dir = str(features_dir)
    config.prepare = ""
    config.methods = methods_list
    config.group_labels = group_labels
    config.num_seeds = 2
    config.erm.steps = 50
    config.dfr.variants = ("dfr", "tr_dfr", "paper_dfr")
    config.dfr.num_retrains = 2
    config.dfr.tr_num_retrains = 2
    config.dfr.paper.epochs = 50
    config.neurontune.epochs = 2
    config.neurontune.batches_per_epoch = 20
    config.group_dro.steps = 100
    config.jtt.steps = 100
    config.jtt.identification_steps_grid = (25, 50)
    config.jtt.upweight_grid = (20.0,)
    config.afr.steps = 50
    config.afr.gamma_grid = (0.0, 4.0)
    config.afr.reg_grid = (0.0,)
    config.hsfm.epochs = 3
    return config


def fit(config):
    data = inputs.load(config)
    names = experiment.check(config)
    resolved = methods.check(config, names, inputs.method_data(config, data))
    return experiment.fit(config, names, resolved, data), resolved


def label_free_config(features_dir):
    """Label-free, "auto" selection (worst-class accuracy) for HSFM and NeuronTune, SFit for the
    reweighting baselines and DFR."""
    config = small_config(features_dir, LABEL_FREE_METHODS, "none")
    for name in SFIT_METHODS:
        config[name].selection_metric = "sfit"
    return config


@pytest.fixture(scope="module")
def label_free_runs(features_dirs):
    return [fit(label_free_config(d)) for d in features_dirs]


@pytest.fixture(scope="module")
def grouped_runs(features_dirs):
    return [fit(small_config(d, LABEL_FREE_METHODS + ",group_dro", "all")) for d in features_dirs]


def _equal(a: heads.LinearHead, b: heads.LinearHead) -> bool:
    return all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, a, b)))


def test_label_free_run_never_reads_a_group_label(label_free_runs):
    (original, resolved), (shuffled, _) = label_free_runs
    assert set(original.rows) == set(shuffled.rows)
    for row in original.rows:
        assert _equal(original.rows[row], shuffled.rows[row]), row
    # "auto" resolved to the label-free choices
    for name in ("hsfm", "neurontune"):
        assert resolved[name]["selection_metric"] == "worst_class_acc"
    assert resolved["dfr"] == {"selection_metric": "sfit", "balance": "classes"}
    for name in ("jtt", "afr"):
        assert resolved[name]["selection_metric"] == "sfit"


def test_rows_marked_without_group_labels_ignore_them(grouped_runs):
    """Every row whose `group_use` says ✗ / ✗ gives the same heads when train and val group
    labels are shuffled, with every group label handed to the methods."""
    (original, resolved), (shuffled, _) = grouped_runs
    config = small_config("unused", LABEL_FREE_METHODS + ",group_dro", "all")
    free, used = [], []
    for name in methods.parse(config.methods):
        use = methods.group_use(name, methods.resolve(config, name, resolved[name]))
        for row, reads in use.items():
            (used if reads["train"] or reads["val"] else free).append(row)
            if not (reads["train"] or reads["val"]):
                assert _equal(original.rows[row], shuffled.rows[row]), row
    assert free == ["erm", "neurontune_sfit", "hsfm_last"]
    # the test has teeth: rows that read group labels change when they are shuffled
    assert not _equal(original.rows["dfr"], shuffled.rows["dfr"])
    assert not _equal(original.rows["group_dro"], shuffled.rows["group_dro"])


def test_label_free_rows_equal_grouped_rows_that_never_read_groups(label_free_runs, grouped_runs):
    free, grouped = label_free_runs[0][0], grouped_runs[0][0]
    for row in ("erm", "neurontune_sfit", "hsfm_last"):
        assert _equal(free.rows[row], grouped.rows[row]), row


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"methods": "erm,group_dro"}, "group_dro reads train group labels, which group_labels="),
        ({"dfr.balance": "groups"}, "dfr.balance='groups' reads group labels, which group_labels"),
        ({"hsfm.selection_metric": "wga"}, "hsfm.selection_metric='wga' reads val group labels"),
        ({"jtt.selection_metric": "wga"}, "jtt.selection_metric='wga' reads val group labels"),
        ({"group_labels": "some"}, "group_labels must be one of ('all', 'none'), got 'some'"),
        ({"bootstrap": -1}, "bootstrap must be an integer >= 0 (0: off), got -1"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_settings_that_read_groups_fail_clearly(features_dirs, tmp_path, overrides, message):
    config = small_config(features_dirs[0], LABEL_FREE_METHODS, "none")
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    with pytest.raises(ValueError) as error:
        train.run(config, tmp_path / "run")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_label_free_run_end_to_end(features_dirs, label_free_runs, tmp_path):
    """`experiments.train.run` of the fixture's config (compiled already), with a bootstrap."""
    config = label_free_config(features_dirs[0])
    config.bootstrap = 50
    report = train.run(config, tmp_path / "run")
    assert report["group_labels"] == "none"
    for row in ("erm", "dfr", "tr_dfr", "paper_dfr", "neurontune_wga", "jtt", "afr", "hsfm"):
        assert report["methods"][row]["group_use"] == {"train": False, "val": False}, row
        assert np.isfinite(report["methods"][row]["test"]["wga"]["mean"]), row
    # test groups are kept for reporting: test WGA and its bootstrap interval
    interval = report["methods"]["hsfm"]["bootstrap"]
    assert interval["metric"] == "wga" and len(interval["per_seed"]) == 2
    lo, hi = interval["seed_mean"]
    assert 0.0 <= lo <= hi <= 1.0
    text = (tmp_path / "run" / "results.md").read_text()
    assert "group labels (train / val)" in text and "test WGA 95% CI" in text
    assert "| hsfm | 2 |" in text and "✗ / ✗ |" in text and "group labels off" in text
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["methods"]["hsfm"]["bootstrap"] == interval


def test_hsfm_selects_by_sfit(small_features_dir):
    data = features_lib.without_group_labels(features_lib.load(small_features_dir))
    config = hsfm_method.default_config()
    config.update(support_per_class=4, hard_set_size=8, inner_steps=3, meta_steps=2, epochs=3)
    config.erm.steps = 20
    config.selection_metric = "sfit"
    config.update(hsfm_method.check(config, data))
    result = hsfm_method.run(data, config, jax.random.split(jax.random.key(0), 2))
    rows, info = result.rows, result.info
    result = info["result"]
    scores = np.asarray(result.history["val_selection"])  # (S, epochs): SFit of every epoch
    np.testing.assert_array_equal(np.asarray(result.best_score), scores.max(axis=1))
    head = jax.tree_util.tree_map(lambda x: x[0], rows["hsfm"])
    val = data.val.to_arrays()
    expected = spuriousness.sfit_score(head, val.features, val.labels, num_classes=2)
    np.testing.assert_allclose(result.best_score[0], expected, rtol=1e-5)


def test_grouped_table_marks_group_use():
    summary = {"test": {}, "val": {}}
    for split in summary:
        for metric in ("wga", "mean_acc", "train_weighted_acc"):
            summary[split][metric] = {"mean": 0.5, "std": 0.0, "per_seed": [0.5]}
    report = {"methods": {"dfr": {"group_use": {"train": False, "val": True}}}}
    columns = tables._run_columns(report)[1]
    text = tables.method_table({"dfr": summary}, num_groups=4, extra_columns=columns)
    assert text.splitlines()[0].endswith("| group labels (train / val) |")
    assert text.splitlines()[2].endswith("| ✗ / ✓ |")


# ----------------------------------------------------------------------------- metrics


def _head_and_split(seed, n=60, d=5, num_classes=3):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d)).astype(np.float32)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    groups = rng.integers(0, 2 * num_classes, n).astype(np.int32)
    head = heads.LinearHead(
        jnp.asarray(rng.normal(size=(num_classes, d)), jnp.float32),
        jnp.asarray(rng.normal(size=num_classes), jnp.float32),
    )
    return head, features, labels, groups


def test_worst_class_selection_matches_numpy():
    head, features, labels, groups = _head_and_split(0)
    predicted = np.argmax(features @ np.asarray(head.weight).T + np.asarray(head.bias), axis=1)
    per_class = [np.mean(predicted[labels == c] == c) for c in range(3)]
    got = evaluate.selection_score(
        head, features, labels, groups, metric="worst_class_acc", num_classes=3, num_groups=6
    )
    np.testing.assert_allclose(got, min(per_class), rtol=1e-6)
    # labels < 0 are not counted (neurontune's D_Ide subsets)
    masked = np.where(labels == 2, -1, labels)
    got = evaluate.selection_score(
        head, features, masked, groups, metric="worst_class_acc", num_classes=3, num_groups=6
    )
    np.testing.assert_allclose(got, min(per_class[:2]), rtol=1e-6)


def test_sfit_score_matches_neurontune_reference():
    head, features, labels, _ = _head_and_split(1, n=80)
    correct = np.asarray(heads.predict(head, features)) == labels
    delta = neurontune.spuriousness_scores_numpy(np.abs(features), labels, correct, 3)
    got = jax.jit(spuriousness.sfit_score, static_argnames="num_classes")(
        head, features, labels, num_classes=3
    )
    np.testing.assert_allclose(got, np.abs(delta).sum(), rtol=1e-5)


def test_selection_metric_names_label_free():
    assert evaluate.selection_metric_name(0, "auto", group_labels="none") == "worst_class_acc"
    assert evaluate.selection_metric_name(4, "sfit") == "sfit"
    with pytest.raises(ValueError, match="group_labels='none' removes"):
        evaluate.selection_metric_name(0, "wga", group_labels="none")


def test_without_group_labels_leaves_none(features_dirs):
    data = features_lib.load(features_dirs[0])
    free = features_lib.without_group_labels(data)
    assert free.num_groups == 0 and free.group_labels == "none" and data.group_labels == "all"
    for name, split in free.splits.items():
        assert (split.groups == -1).all(), name
        np.testing.assert_array_equal(split.features, data[name].features)
    assert data.num_groups == 4 and (data.test.groups >= 0).all()  # the original is untouched


# ----------------------------------------------------------------------------- bootstrap


def _correct_and_groups(seed, n, seeds=2):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 4, n).astype(np.int32)
    correct = rng.random((seeds, n)) < np.array([0.9, 0.8, 0.7, 0.6])[groups]
    return correct, groups


def _wga(correct, groups):
    return min(correct[groups == g].mean() for g in np.unique(groups))


def test_bootstrap_matches_numpy_resampling():
    correct, groups = _correct_and_groups(0, 200)
    indices = results.resample_indices(jax.random.key(3), 200, 30)
    assert indices.shape == (30, 200)
    got = results.bootstrap_worst_accuracy(correct, groups, indices, num_segments=4)
    idx = np.asarray(indices)
    expected = [[_wga(c[rows], groups[rows]) for c in correct] for rows in idx]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    again = results.resample_indices(jax.random.key(3), 200, 30)
    np.testing.assert_array_equal(indices, again)  # deterministic given the key


def test_bootstrap_interval_contains_the_estimate_and_narrows():
    widths = []
    for n in (200, 3200):
        correct, groups = _correct_and_groups(1, n)
        indices = results.resample_indices(jax.random.key(0), n, 400)
        samples = results.bootstrap_worst_accuracy(correct, groups, indices, num_segments=4)
        interval = results.bootstrap_interval(samples)
        lo, hi = interval["seed_mean"]
        assert lo <= np.mean([_wga(c, groups) for c in correct]) <= hi
        for (slo, shi), c in zip(interval["per_seed"], correct, strict=True):
            assert slo <= _wga(c, groups) <= shi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2
