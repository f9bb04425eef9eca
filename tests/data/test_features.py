"""The on-disk feature format: round trip and every validation error names the file."""

import json
import shutil

import numpy as np
import pytest

from hsfm_jax.data import features, synthetic


@pytest.fixture
def features_dir(small_features_dir, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(small_features_dir, path)
    return path


def _edit_meta(path, **changes):
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))


def test_round_trip(tmp_path):
    splits, info = synthetic.generate(num_train=50, val_per_group=3, test_per_group=4)
    splits["val"] = features.Split(
        splits["val"].features.astype(np.float16),
        splits["val"].labels,
        splits["val"].groups,
        ids=[f"val/{i}.png" for i in range(splits["val"].num_examples)],
    )
    weight, bias = np.ones((2, 32), np.float32), np.zeros((2,), np.float32)
    features.save(
        tmp_path,
        splits=splits,
        dataset="toy",
        backbone="none",
        class_names=info["class_names"],
        group_names=info["group_names"],
        preprocessing="none",
        head=(weight, bias),
    )
    loaded = features.load(tmp_path)
    assert loaded.num_classes == 2 and loaded.num_groups == 4 and loaded.feature_dim == 32
    for name in features.SPLITS:
        np.testing.assert_array_equal(loaded[name].features, splits[name].features)
        np.testing.assert_array_equal(loaded[name].labels, splits[name].labels)
        np.testing.assert_array_equal(loaded[name].groups, splits[name].groups)
    assert loaded.val.features.dtype == np.float16
    assert isinstance(loaded.train.features, np.memmap)
    assert loaded.val.ids == splits["val"].ids and loaded.train.ids is None
    np.testing.assert_array_equal(loaded.head_weight, weight)
    np.testing.assert_array_equal(loaded.train_group_counts(), np.bincount(splits["train"].groups))


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        features.load(tmp_path / "nope")


def test_missing_meta(features_dir):
    (features_dir / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"meta\.json: missing"):
        features.load(features_dir)


def test_corrupt_meta(features_dir):
    (features_dir / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"meta\.json: not valid JSON"):
        features.load(features_dir)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(format_version=2), "unknown format_version 2"),
        (dict(num_classes=3), "class_names has 2 entries, num_classes is 3"),
        (dict(feature_dim=11), r"features\.npy: expected shape \(600, 11\)"),
        (dict(splits={"train": 600, "val": 80}), "split 'test' not listed"),
        (dict(splits={"train": 601, "val": 80, "test": 200}), r"expected shape \(601, 12\)"),
        (dict(num_groups="4"), "'num_groups' must be a non-negative int"),
    ],
)
def test_meta_errors(features_dir, changes, message):
    _edit_meta(features_dir, **changes)
    with pytest.raises(ValueError, match=message):
        features.load(features_dir)


def test_missing_field(features_dir):
    meta = json.loads((features_dir / "meta.json").read_text())
    del meta["group_names"]
    (features_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"missing field\(s\) \['group_names'\]"):
        features.load(features_dir)


def test_missing_split(features_dir):
    shutil.rmtree(features_dir / "val")
    with pytest.raises(FileNotFoundError, match="missing split directory 'val'"):
        features.load(features_dir)


def test_label_out_of_range(features_dir):
    labels = np.load(features_dir / "test" / "labels.npy")
    labels[7] = 2
    np.save(features_dir / "test" / "labels.npy", labels)
    with pytest.raises(
        ValueError, match=r"test/labels\.npy: labels out of range \[0, 2\) at row 7"
    ):
        features.load(features_dir)


def test_group_out_of_range(features_dir):
    groups = np.load(features_dir / "val" / "groups.npy")
    groups[3] = -2
    np.save(features_dir / "val" / "groups.npy", groups)
    with pytest.raises(
        ValueError, match=r"val/groups\.npy: groups out of range \[-1, 4\) at row 3"
    ):
        features.load(features_dir)


def test_labels_wrong_shape(features_dir):
    np.save(features_dir / "train" / "labels.npy", np.zeros((599,), np.int64))
    with pytest.raises(ValueError, match=r"train/labels\.npy: expected shape \(600,\)"):
        features.load(features_dir)


def test_float_labels_rejected(features_dir):
    np.save(features_dir / "train" / "labels.npy", np.zeros((600,), np.float32))
    with pytest.raises(ValueError, match="expected integer labels"):
        features.load(features_dir)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features(features_dir, bad, dtype):
    feats = np.load(features_dir / "val" / "features.npy").astype(dtype)
    feats[5, 2] = bad
    np.save(features_dir / "val" / "features.npy", feats)
    with pytest.raises(ValueError, match=r"val/features\.npy: non-finite value .* row 5"):
        features.load(features_dir)


def test_float64_features_rejected(features_dir):
    feats = np.load(features_dir / "test" / "features.npy")
    np.save(features_dir / "test" / "features.npy", feats.astype(np.float64))
    with pytest.raises(ValueError, match="expected float32 or float16"):
        features.load(features_dir)


def test_bad_head(features_dir):
    np.savez(features_dir / "head.npz", weight=np.zeros((2, 5)), bias=np.zeros(2))
    with pytest.raises(ValueError, match=r"head\.npz: weight must have shape \(2, 12\)"):
        features.load(features_dir)


def test_no_groups_dataset(tmp_path):
    splits, _ = synthetic.generate(num_train=40, val_per_group=2, test_per_group=2)
    splits = {
        k: features.Split(s.features, s.labels, np.full_like(s.groups, -1))
        for k, s in splits.items()
    }
    features.save(
        tmp_path,
        splits=splits,
        dataset="fg",
        backbone="none",
        class_names=["a", "b"],
        group_names=[],
        preprocessing="none",
    )
    loaded = features.load(tmp_path)
    assert loaded.num_groups == 0 and not loaded.val.has_groups
    assert loaded.train_group_counts().shape == (0,)


def test_save_is_atomic_per_split(tmp_path, monkeypatch):
    """A writer killed mid-split leaves no split directory and no meta.json that load accepts."""
    splits, info = synthetic.generate(num_train=40, val_per_group=2, test_per_group=2)
    calls = {"n": 0}
    real_save = np.save

    def dying_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # inside the second split
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        features.save(
            tmp_path,
            splits=splits,
            dataset="toy",
            backbone="none",
            class_names=info["class_names"],
            group_names=info["group_names"],
            preprocessing="",
        )
    monkeypatch.undo()
    assert (tmp_path / "train").is_dir() and not (tmp_path / "val").exists()
    with pytest.raises(FileNotFoundError, match=r"meta\.json: missing"):
        features.load(tmp_path)


def test_split_by_class_is_stratified_disjoint_and_seeded():
    splits, _ = synthetic.generate(num_train=40, val_per_group=25, test_per_group=2)
    val = features.Split(
        splits["val"].features,
        splits["val"].labels,
        splits["val"].groups,
        ids=[str(i) for i in range(100)],
    )
    first, second = features.split_by_class(val, 0.5, seed=3)
    assert first.num_examples == second.num_examples == 50
    np.testing.assert_array_equal(np.bincount(first.labels), [25, 25])
    assert not set(first.ids) & set(second.ids) and len(set(first.ids) | set(second.ids)) == 100
    again, _ = features.split_by_class(val, 0.5, seed=3)
    assert again.ids == first.ids
    with pytest.raises(ValueError, match=r"split fraction must be in \(0, 1\)"):
        features.split_by_class(val, 1.0, seed=0)


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    from hsfm_jax.runtime.atomic import atomic_write

    target = tmp_path / "sub" / "out.json"
    with atomic_write(target, "w") as f:
        f.write("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as f:
        f.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]
