"""The Python entry point: `FeatureSet.from_arrays` (checked as `features.load` checks a
directory) and `hsfm_jax.run` -> `Results` (table, tidy CSV, metrics, heads)."""

import csv
import io

import numpy as np
import pytest

import hsfm_jax
from hsfm_jax import apps, methods
from hsfm_jax.data import features, synthetic

SMALL = dict(num_train=400, val_per_group=20, test_per_group=40)
FAST = {"erm.steps": 50, "hsfm.epochs": 2, "hsfm.hard_set_size": 10}


@pytest.fixture(scope="module")
def splits():
    return synthetic.arrays(**SMALL)


def test_from_arrays_equals_the_saved_directory(splits, tmp_path):
    train, val, test = splits
    data = hsfm_jax.FeatureSet.from_arrays(
        train=train, val=val, test=test, group_names=["a", "b", "c", "d"]
    )
    features.save(
        tmp_path,
        splits={n: features.Split(*s) for n, s in zip(features.SPLITS, splits, strict=True)},
        dataset="arrays",
        backbone="arrays",
        class_names=data.class_names,
        group_names=data.group_names,
        preprocessing="",
    )
    loaded = features.load(tmp_path)
    assert loaded.meta == data.meta
    for name in features.SPLITS:
        for field in ("features", "labels", "groups"):
            np.testing.assert_array_equal(getattr(loaded[name], field), getattr(data[name], field))
    assert data.class_names == ["class 0", "class 1"]
    assert data.num_groups == 4 and data.feature_dim == train[0].shape[1]


def _refusals(splits, tmp_path, **bad):
    """The ValueError of `from_arrays` and of `load` of the same arrays saved, without the
    location each names (``val groups`` / ``<dir>/val/groups.npy``)."""
    given = dict(zip(features.SPLITS, splits, strict=True))
    given.update(bad)
    with pytest.raises(ValueError) as from_arrays:
        features.from_arrays(**given, group_names=["a", "b", "c", "d"])
    features.save(
        tmp_path,
        splits={n: features.Split(*(np.asarray(a) for a in s)) for n, s in given.items()},
        dataset="arrays",
        backbone="arrays",
        class_names=["class 0", "class 1"],
        group_names=["a", "b", "c", "d"],
        preprocessing="",
    )
    with pytest.raises(ValueError) as loaded:
        features.load(tmp_path)
    return str(from_arrays.value), str(loaded.value)


def test_group_ids_out_of_range_are_refused_as_load_refuses_them(splits, tmp_path):
    features_, labels, groups = splits[1]
    groups = groups.copy()
    groups[7] = 5
    from_arrays, loaded = _refusals(splits, tmp_path, val=(features_, labels, groups))
    assert from_arrays == "val groups: groups out of range [-1, 4) at row 7: 5"
    assert loaded == f"{tmp_path}/val/groups.npy: groups out of range [-1, 4) at row 7: 5"


def test_non_finite_features_are_refused_as_load_refuses_them(splits, tmp_path):
    features_, labels, groups = splits[2]
    features_ = features_.copy()
    features_[3, 1] = np.nan
    from_arrays, loaded = _refusals(splits, tmp_path, test=(features_, labels, groups))
    assert from_arrays == "test features: non-finite value (NaN or inf) in row 3"
    assert loaded == f"{tmp_path}/test/features.npy: non-finite value (NaN or inf) in row 3"


def test_from_arrays_refuses_mismatched_shapes_and_forms(splits):
    train, val, test = splits
    with pytest.raises(ValueError, match=r"^val labels: expected shape \(80,\), got \(79,\)$"):
        features.from_arrays(train=train, val=(val[0], val[1][:-1], val[2]), test=test)
    with pytest.raises(ValueError, match=r"^test features: expected shape \(160, 32\)"):
        features.from_arrays(train=train, val=val, test=(test[0][:, :5], *test[1:]))
    with pytest.raises(ValueError, match=r"^val labels: expected integer labels"):
        features.from_arrays(train=train, val=(val[0], val[1] * 1.0, val[2]), test=test)
    with pytest.raises(ValueError, match=r"^train: expected \(features, labels\)"):
        features.from_arrays(train=train[0], val=val, test=test)
    with pytest.raises(ValueError, match=r"^from_arrays: class_names has 3 entries"):
        data = features.from_arrays(train=train, val=val, test=test)
        features.check_meta({**data.meta, "class_names": ["a", "b", "c"]}, "from_arrays")


def test_without_groups_every_row_is_unknown(splits):
    train, val, test = splits
    data = features.from_arrays(train=train[:2], val=val[:2], test=test[:2])
    assert data.num_groups == 0 and (data.train.groups == -1).all()


def test_three_lines_from_arrays_to_the_table(splits, tmp_path):
    train, val, test = splits
    data = hsfm_jax.FeatureSet.from_arrays(train=train, val=val, test=test)
    results = hsfm_jax.run(data, methods="erm,hsfm", num_seeds=2, overrides=FAST)
    table = results.table()
    assert table.startswith("# arrays / arrays: 2 seed(s)")
    for row in ("| erm |", "| hsfm |", "| hsfm_fixed |", "| hsfm_last |"):
        assert row in table
    assert results.rows == ["erm", "hsfm", "hsfm_fixed", "hsfm_last"]  # hsfm: the rate grid's
    assert results.heads["hsfm"].weight.shape == (2, 2, train[0].shape[1])
    wga = results.metrics("hsfm", "test")["wga"]
    assert len(wga["per_seed"]) == 2 and 0.0 <= wga["mean"] <= 1.0

    rows = list(csv.DictReader(io.StringIO(results.to_csv())))
    assert list(rows[0]) == ["method", "seed", "split", "metric", "value"]
    hsfm_test_wga = [r for r in rows if r["method"] == "hsfm" and r["split"] == "test"]
    hsfm_test_wga = [float(r["value"]) for r in hsfm_test_wga if r["metric"] == "wga"]
    assert hsfm_test_wga == pytest.approx(wga["per_seed"])
    assert {r["metric"] for r in rows} >= {"wga", "mean_acc", "group_acc[3]", "class_acc[1]"}

    # The same arrays as a directory, through the same loop, written to a workdir.
    features.save(
        tmp_path / "features",
        splits={n: features.Split(*s) for n, s in zip(features.SPLITS, splits, strict=True)},
        dataset="arrays",
        backbone="arrays",
        class_names=data.class_names,
        group_names=data.group_names,
        preprocessing="",
    )
    from_dir = hsfm_jax.run(
        tmp_path / "features",
        methods="erm,hsfm",
        num_seeds=2,
        overrides=FAST,
        workdir=tmp_path / "run",
    )
    assert from_dir.metrics("hsfm")["wga"]["per_seed"] == wga["per_seed"]
    assert (tmp_path / "run" / "results.md").read_text() == from_dir.table()
    assert not (tmp_path / "run.ckpt").exists()


def test_run_refuses_bad_overrides_before_any_method_runs(splits):
    train, val, test = splits
    data = features.from_arrays(train=train, val=val, test=test)
    with pytest.raises(ValueError, match=r"^overrides: unknown field 'hsfm.meta_lrr'$"):
        hsfm_jax.run(data, methods="hsfm", overrides={"hsfm.meta_lrr": 0.1})
    with pytest.raises(ValueError, match=r"^overrides: unknown field 'hsfmm'$"):
        hsfm_jax.run(data, methods="hsfm", overrides={"hsfmm": {"epochs": 1}})
    with pytest.raises(ValueError, match=r"^overrides: erm.steps='many'"):
        hsfm_jax.run(data, methods="erm", overrides={"erm": {"steps": "many"}})
    with pytest.raises(ValueError, match=r"^methods: unknown method\(s\) \['svm'\]"):
        hsfm_jax.run(data, methods=["erm", "svm"])
    with pytest.raises(ValueError, match=r"^num_seeds must be an integer > 0"):
        hsfm_jax.run(data, methods="erm", num_seeds=0)


def test_methods_check_names_a_method_config_passed_for_the_experiment_config(splits):
    train, val, test = splits
    data = features.from_arrays(train=train, val=val, test=test)
    hsfm_config = methods.default_configs()["hsfm"]
    with pytest.raises(ValueError, match=r"takes an experiment config .* has no \['hsfm', 'erm'\]"):
        methods.check(hsfm_config, ["hsfm"], data)
    config = hsfm_jax.runtime.experiment.make_config(overrides=FAST)
    resolved = methods.check(config, ["hsfm"], data)
    assert set(resolved) == {"hsfm"}


def test_version_is_the_package_version():
    assert isinstance(hsfm_jax.__version__, str) and hsfm_jax.__version__.count(".") == 2


def test_configs_are_found_by_name_or_path(splits):
    own = hsfm_jax.runtime.experiment.make_config("own_features", methods="erm")
    assert own.hsfm.inner_lr == 1e-2 and own.prepare == "" and own.methods == "erm"
    by_path = hsfm_jax.runtime.experiment.make_config(apps.config_path("own_features"))
    assert by_path.to_dict() == {**own.to_dict(), "methods": by_path.methods}
    with pytest.raises(FileNotFoundError, match=r"^config own_featurez: no such file, nor a"):
        hsfm_jax.runtime.experiment.make_config("own_featurez")
