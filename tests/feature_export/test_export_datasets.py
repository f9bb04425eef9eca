"""Real-dataset readers on tiny fixtures written in each dataset's exact published layout.

Each fixture has a few generated images and the real file and column names; it is exported with
one random-init ResNet-50 at 32 px and `hsfm_jax.data.features.load` must accept the result with the
fixture's labels and groups. Bad inputs must fail with one error naming the file and row.
"""

from __future__ import annotations

import gzip
import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from feature_export import backbones, datasets
from feature_export import images as image_files
from feature_export.datasets import celeba as celeba_module
from feature_export.datasets.dominoes import build_dominoes
from feature_export.datasets.tfds import TFDSDataset
from feature_export.export import export_features
from hsfm_jax.data import features

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()


def write_image(path, seed: int, size=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny forward passes are faster on one thread (and CI shares 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def backbone():
    """One random-init ResNet-50 at 32 px (no head, so it fits every dataset)."""
    return backbones.get("resnet50", random_init=True, image_size=32)


def export_and_load(dataset, backbone, out):
    export_features(dataset, backbone, out, batch_size=64, show_progress=False)
    return features.load(out)


def assert_matches(loaded, dataset):
    for split in dataset.splits:
        index = dataset.index(split)
        np.testing.assert_array_equal(loaded[split].labels, index.labels)
        np.testing.assert_array_equal(loaded[split].groups, index.groups)
        assert loaded[split].ids == index.ids
        assert loaded[split].features.shape == (len(index.ids), 2048)


# ----------------------------------------------------------------------------- Waterbirds


def write_waterbirds(root, rows=None):
    """metadata.csv + images; rows: (y, place, split) triples (default: 2 per group per split)."""
    if rows is None:
        rows = [(y, p, s) for s in (0, 1, 2) for y in (0, 1) for p in (0, 1) for _ in range(2)]
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    expected = {}
    for i, (y, place, split) in enumerate(rows):
        name = f"{'001.Black_footed_Albatross' if y else '002.Laysan_Albatross'}/img_{i:04d}.jpg"
        write_image(root / name, i)
        lines.append(f"{i + 1},{name},{y},{split},{place},/b/bamboo_forest/{i:08d}.jpg")
        expected.setdefault(split, []).append((name, y, 2 * y + place))
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return expected


def test_waterbirds_export_round_trip(tmp_path, backbone):
    expected = write_waterbirds(tmp_path / "wb")
    dataset = datasets.get("waterbirds", data_dir=tmp_path / "wb")
    assert dataset.resize_policy == "resize256_crop224"
    for code, split in enumerate(("train", "val", "test")):
        index = dataset.index(split)
        assert index.ids == [e[0] for e in expected[code]]
        assert index.labels.tolist() == [e[1] for e in expected[code]]
        assert index.groups.tolist() == [e[2] for e in expected[code]]
    loaded = export_and_load(dataset, backbone, tmp_path / "out")
    assert loaded.num_groups == 4 and loaded.class_names == ["landbird", "waterbird"]
    assert_matches(loaded, dataset)


def test_waterbirds_bad_inputs(tmp_path):
    root = tmp_path / "wb"
    write_waterbirds(root)
    text = (root / "metadata.csv").read_text()
    (root / "metadata.csv").write_text(text.replace(",place,", ",location,"))
    with pytest.raises(ValueError, match=r"metadata\.csv: missing column\(s\) \['place'\]"):
        datasets.get("waterbirds", data_dir=root)

    lines = text.splitlines()
    fields = lines[3].split(",")
    fields[2] = "2"  # y out of range on line 4
    lines[3] = ",".join(fields)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metadata\.csv: line 4: column 'y' = 2 out of range"):
        datasets.get("waterbirds", data_dir=root)

    (root / "metadata.csv").write_text(text)
    missing = root / text.splitlines()[5].split(",")[1]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=str(missing)):
        datasets.get("waterbirds", data_dir=root)
    with pytest.raises(FileNotFoundError, match="metadata.csv: missing"):
        datasets.get("waterbirds", data_dir=tmp_path / "nowhere")


def test_unreadable_image_leaves_no_loadable_export(tmp_path, backbone):
    root = tmp_path / "wb"
    write_waterbirds(root)
    bad = root / (root / "metadata.csv").read_text().splitlines()[2].split(",")[1]
    bad.write_bytes(b"not a jpeg")
    dataset = datasets.get("waterbirds", data_dir=root)
    with pytest.raises(ValueError, match=str(bad)):
        export_and_load(dataset, backbone, tmp_path / "out")
    assert not (tmp_path / "out" / "meta.json").exists()
    with pytest.raises(FileNotFoundError):
        features.load(tmp_path / "out")


# ----------------------------------------------------------------------------- CelebA


def write_celeba(root, n=12, dac=False, kaggle_nested=False):
    """Kaggle CSV layout (+ DaC's celeba_split.csv when dac); returns (ids, y, male, split)."""
    rng = np.random.default_rng(0)
    images = root / "img_align_celeba" / ("img_align_celeba" if kaggle_nested else "")
    ids = [f"{i + 1:06d}.jpg" for i in range(n)]
    y = np.tile([0, 0, 1, 1], n // 4)
    male = np.tile([0, 1, 0, 1], n // 4)
    split = np.repeat([0, 1, 2], n // 3)
    attrs = ["image_id," + ",".join(CELEBA_ATTRIBUTES)]
    for i, image_id in enumerate(ids):
        write_image(images / image_id, i, size=(18, 22))
        values = rng.choice([-1, 1], len(CELEBA_ATTRIBUTES))
        values[CELEBA_ATTRIBUTES.index("Blond_Hair")] = 1 if y[i] else -1
        values[CELEBA_ATTRIBUTES.index("Male")] = 1 if male[i] else -1
        attrs.append(image_id + "," + ",".join(str(v) for v in values))
    (root / "list_attr_celeba.csv").write_text("\n".join(attrs) + "\n")
    partition = ["image_id,partition"] + [f"{a},{s}" for a, s in zip(ids, split, strict=True)]
    (root / "list_eval_partition.csv").write_text("\n".join(partition) + "\n")
    if dac:
        dac_split = (split + 1) % 3  # a different split than the official one
        rows = ["image_id,Male,Blond_Hair,split"] + [
            f"{a},{m},{b},{s}" for a, m, b, s in zip(ids, male, y, dac_split, strict=True)
        ]
        (root / "celeba_split.csv").write_text("\n".join(rows) + "\n")
        split = dac_split
    return ids, y, male, split


@pytest.mark.parametrize("dac", [False, True])
def test_celeba_export_round_trip(tmp_path, backbone, dac):
    ids, y, male, split = write_celeba(tmp_path / "celeba", dac=dac, kaggle_nested=dac)
    dataset = datasets.get("celeba", data_dir=tmp_path / "celeba")
    assert dataset.resize_policy == "resize224"
    assert dataset.describe()["split_source"] == ("dac" if dac else "official")
    for code, name in enumerate(("train", "val", "test")):
        rows = np.flatnonzero(split == code)
        assert dataset.index(name).ids == [ids[r] for r in rows]
        np.testing.assert_array_equal(dataset.index(name).labels, y[rows])
        np.testing.assert_array_equal(dataset.index(name).groups, 2 * y[rows] + male[rows])
    if dac:  # the export path is the same for both split sources: run it once
        loaded = export_and_load(dataset, backbone, tmp_path / "out")
        assert_matches(loaded, dataset)
        assert loaded.meta["split_source"] == "dac"


def test_celeba_bad_attribute_value(tmp_path):
    write_celeba(tmp_path / "celeba")
    path = tmp_path / "celeba" / "list_attr_celeba.csv"
    lines = path.read_text().splitlines()
    fields = lines[5].split(",")
    fields[1 + CELEBA_ATTRIBUTES.index("Male")] = "0"
    lines[5] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"list_attr_celeba\.csv: line 6: column 'Male' = 0"):
        datasets.get("celeba", data_dir=tmp_path / "celeba")


def test_celeba_star_counts_and_determinism(tmp_path, backbone, monkeypatch):
    write_celeba(tmp_path / "celeba", n=48)
    small = {"train": (1, 3, 3, 1), "val": (2, 2, 2, 2), "test": (2, 2, 2, 2)}
    monkeypatch.setattr(celeba_module, "CELEBA_STAR_COUNTS", small)
    a = datasets.get("celeba_star", data_dir=tmp_path / "celeba", seed=1)
    b = datasets.get("celeba_star", data_dir=tmp_path / "celeba", seed=1)
    c = datasets.get("celeba_star", data_dir=tmp_path / "celeba", seed=2)
    for split, counts in small.items():
        assert np.bincount(a.index(split).groups, minlength=4).tolist() == list(counts)
        assert a.index(split).ids == b.index(split).ids
    assert any(a.index(s).ids != c.index(s).ids for s in small)
    assert a.describe()["celeba_star"]["seed"] == 1
    loaded = export_and_load(a, backbone, tmp_path / "out")
    assert_matches(loaded, a)
    monkeypatch.setattr(celeba_module, "CELEBA_STAR_COUNTS", {**small, "train": (1, 9, 3, 1)})
    with pytest.raises(ValueError, match="train group nonblond_male has 4 images"):
        datasets.get("celeba_star", data_dir=tmp_path / "celeba")


# ----------------------------------------------------------------------------- MetaShift


def test_metashift_export_round_trip(tmp_path, backbone):
    root = tmp_path / "MetaDatasetCatDog"
    counts = {
        ("train", "cat(sofa)"): 2,
        ("train", "cat(bed)"): 3,
        ("train", "dog(bench)"): 2,
        ("train", "dog(bike)"): 2,
        ("test", "cat(shelf)"): 7,
        ("test", "dog(shelf)"): 8,
    }
    for k, ((split, folder), n) in enumerate(counts.items()):
        for i in range(n):
            write_image(root / split / folder.split("(")[0] / folder / f"{k}_{i}.jpg", 10 * k + i)
    dataset = datasets.get("metashift", data_dir=root)
    train = dataset.index("train")
    assert np.bincount(train.groups).tolist() == [2, 3, 2, 2]
    assert train.labels.tolist() == [0] * 5 + [1] * 4
    val, test = dataset.index("val"), dataset.index("test")
    n_val = 15 - math.ceil(0.85 * 15)
    assert len(val.ids) == n_val and len(test.ids) == 15 - n_val
    assert not set(val.ids) & set(test.ids)
    assert set(val.groups) | set(test.groups) <= {4, 5}
    assert all(
        ("cat(" in i) == (label == 0) for i, label in zip(test.ids, test.labels, strict=True)
    )
    other = datasets.get("metashift", data_dir=root, seed=5)
    assert sorted(other.index("val").ids + other.index("test").ids) == sorted(val.ids + test.ids)
    loaded = export_and_load(dataset, backbone, tmp_path / "out")
    assert_matches(loaded, dataset)
    assert loaded.group_names[4:] == ["cat_shelf", "dog_shelf"]


# ----------------------------------------------------------------------------- Dominoes


def write_dominoes_release(root, n=8):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    expected = {}
    for split in ("train", "val", "test"):
        y = np.tile([0, 1], n // 2)
        digit = np.tile([0, 0, 1, 1], n // 4)
        np.save(root / f"X_{split}.npy", rng.random((n, 3, 64, 32), dtype=np.float32))
        np.save(root / f"y_{split}.npy", y)
        np.save(root / f"env_{split}.npy", 2 * y + digit)
        expected[split] = (y, 2 * y + digit)
    return expected


def test_dominoes_release_export_round_trip(tmp_path, backbone):
    expected = write_dominoes_release(tmp_path / "dominoes")
    dataset = datasets.get("dominoes", data_dir=tmp_path / "dominoes")
    for split, (y, groups) in expected.items():
        np.testing.assert_array_equal(dataset.index(split).labels, y)
        np.testing.assert_array_equal(dataset.index(split).groups, groups)
    image = dataset.load_image("train", 3)
    assert image.size == (32, 64) and image.mode == "RGB"
    x = np.load(tmp_path / "dominoes" / "X_train.npy")[3].transpose(1, 2, 0)
    np.testing.assert_allclose(np.asarray(image) / 255.0, x, atol=1 / 255)
    loaded = export_and_load(dataset, backbone, tmp_path / "out")
    assert_matches(loaded, dataset)
    # analyze's contact sheet reads the same images back through meta.json's `source`
    (shown,) = image_files.load_images(loaded, "train", [3], None)
    np.testing.assert_array_equal(np.asarray(shown), np.asarray(image))
    np.save(tmp_path / "dominoes" / "y_test.npy", 1 - expected["test"][0])
    np.save(tmp_path / "dominoes" / "env_test.npy", 2 * (1 - expected["test"][0]))
    image_files._source_dataset.cache_clear()
    assert image_files.load_images(loaded, "test", [0], None) is None  # labels must match

    np.save(tmp_path / "dominoes" / "env_val.npy", np.array([0, 1, 2, 3, 3, 2, 1, 0]))
    with pytest.raises(ValueError, match=r"env_val\.npy: row 1: env 1 does not encode label 1"):
        datasets.get("dominoes", data_dir=tmp_path / "dominoes")


def _write_idx(path, array, gz=False):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)


def test_dominoes_builder_from_cifar_and_mnist(tmp_path):
    rng = np.random.default_rng(0)
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name, n in [*((f"data_batch_{i}", 40) for i in range(1, 6)), ("test_batch", 40)]:
        labels = rng.choice([0, 1, 9], n).tolist()
        batch = {b"data": rng.integers(0, 255, (n, 3072), np.uint8), b"labels": labels}
        (cifar / name).write_bytes(pickle.dumps(batch))
    mnist = tmp_path / "mnist" / "MNIST" / "raw"
    mnist.mkdir(parents=True)
    for prefix, n, gz in (("train", 400, True), ("t10k", 100, False)):
        suffix = ".gz" if gz else ""
        _write_idx(
            mnist / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 255, (n, 28, 28)), gz
        )
        _write_idx(mnist / f"{prefix}-labels-idx1-ubyte{suffix}", rng.choice([0, 1, 2], n), gz)
    sizes = build_dominoes(
        tmp_path / "out", cifar10_dir=tmp_path / "cifar", mnist_dir=tmp_path / "mnist", seed=3
    )
    dataset = datasets.get("dominoes", data_dir=tmp_path / "out")
    train = dataset.index("train")
    assert sizes["train"] == len(train.ids) > 0
    agree = (train.groups % 2) == train.labels
    for c in (0, 1):
        n_c = int(np.sum(train.labels == c))
        assert int(np.sum(agree[train.labels == c])) == round(0.9 * n_c)
    for split in ("val", "test"):
        counts = np.bincount(dataset.index(split).groups, minlength=4)
        assert counts.min() == counts.max() > 0
    assert np.load(tmp_path / "out" / "X_train.npy").shape == (sizes["train"], 3, 64, 32)
    again = build_dominoes(
        tmp_path / "out2", cifar10_dir=tmp_path / "cifar", mnist_dir=tmp_path / "mnist", seed=3
    )
    assert again == sizes
    np.testing.assert_array_equal(
        np.load(tmp_path / "out" / "X_val.npy"), np.load(tmp_path / "out2" / "X_val.npy")
    )


# ----------------------------------------------------------------------------- fine-grained


def write_cub(root, classes=3, train_per_class=4, test_per_class=2):
    lines, labels, splits, names = [], [], [], []
    image_id = 0
    for c in range(1, classes + 1):
        folder = f"{c:03d}.Bird_{c}"
        names.append(f"{c} {folder}")
        for k in range(train_per_class + test_per_class):
            image_id += 1
            rel = f"{folder}/Bird_{c}_{k:04d}_{image_id}.jpg"
            write_image(root / "images" / rel, image_id)
            lines.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            splits.append(f"{image_id} {int(k < train_per_class)}")
    for name, rows in (
        ("images.txt", lines),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", splits),
        ("classes.txt", names),
    ):
        (root / name).write_text("\n".join(rows) + "\n")


def test_cub_export_round_trip(tmp_path, backbone):
    write_cub(tmp_path / "CUB_200_2011")
    dataset = datasets.get("cub", data_dir=tmp_path / "CUB_200_2011", val_fraction=0.25)
    assert len(dataset.class_names) == 200 and dataset.class_names[0] == "001.Bird_1"
    assert dataset.group_names == []
    assert [len(dataset.index(s).ids) for s in ("train", "val", "test")] == [9, 3, 6]
    assert np.bincount(dataset.index("val").labels).tolist() == [1, 1, 1]
    assert "val_split" in dataset.describe()
    loaded = export_and_load(dataset, backbone, tmp_path / "out")
    assert_matches(loaded, dataset)
    assert loaded.num_groups == 0 and (loaded.train.groups == -1).all()
    assert "25%" in loaded.meta["val_split"]

    path = tmp_path / "CUB_200_2011" / "image_class_labels.txt"
    path.write_text(path.read_text().replace("\n2 1\n", "\n2 201\n"))
    with pytest.raises(
        ValueError, match=r"image_class_labels\.txt: line 2: column 'class_id' = 201"
    ):
        datasets.get("cub", data_dir=tmp_path / "CUB_200_2011")


def _struct(rows, fields):
    out = np.empty(len(rows), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        out[i] = tuple(row)
    return out


def test_stanford_cars_export_round_trip(tmp_path, backbone):
    from scipy.io import savemat

    root = tmp_path / "stanford_cars"
    (root / "devkit").mkdir(parents=True)
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    train = [(1, 2, 10, 12, c, f"{i + 1:05d}.jpg") for i, c in enumerate([1, 1, 2, 2, 196, 196])]
    test = [(1, 2, 10, 12, c, f"{i + 1:05d}.jpg") for i, c in enumerate([2, 196, 1])]
    for folder, rows in (("cars_train", train), ("cars_test", test)):
        for i, row in enumerate(rows):
            write_image(root / folder / row[-1], 100 + i)
    savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": _struct(train, fields)})
    savemat(root / "cars_test_annos_withlabels.mat", {"annotations": _struct(test, fields)})
    names = np.array([f"Car {c}" for c in range(1, 197)], dtype=object)
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": names[None, :]})
    dataset = datasets.get("stanford_cars", data_dir=root, val_fraction=0.5)
    assert dataset.class_names[195] == "Car 196"
    assert sorted(dataset.index("val").labels.tolist()) == [0, 1, 195]
    np.testing.assert_array_equal(dataset.index("test").labels, [1, 195, 0])
    assert dataset.index("test").ids[0] == "cars_test/00001.jpg"
    loaded = export_and_load(dataset, backbone, tmp_path / "out")
    assert_matches(loaded, dataset)

    savemat(
        root / "cars_test_annos_withlabels.mat", {"annotations": _struct([test[0][:4]], fields[:4])}
    )
    with pytest.raises(
        ValueError, match=r"cars_test_annos_withlabels\.mat: annotations lack field"
    ):
        datasets.get("stanford_cars", data_dir=root)


def test_flowers_export_round_trip(tmp_path, backbone):
    from scipy.io import savemat

    root = tmp_path / "flowers"
    labels = np.array([1, 1, 2, 2, 102, 102, 1, 2, 102])
    for n in range(1, labels.size + 1):
        write_image(root / "jpg" / f"image_{n:05d}.jpg", n)
    savemat(root / "imagelabels.mat", {"labels": labels[None, :]})
    sets = {"trnid": [1, 3, 5], "valid": [2, 4, 6], "tstid": [7, 8, 9]}
    savemat(root / "setid.mat", {k: np.array(v)[None, :] for k, v in sets.items()})
    dataset = datasets.get("flowers102", data_dir=root)
    np.testing.assert_array_equal(dataset.index("train").labels, [0, 1, 101])
    assert dataset.index("test").ids == [f"jpg/image_{n:05d}.jpg" for n in (7, 8, 9)]
    loaded = export_and_load(dataset, backbone, tmp_path / "out")
    assert_matches(loaded, dataset)
    assert loaded.num_classes == 102

    savemat(root / "setid.mat", {"trnid": [[1, 10]], "valid": [[2]], "tstid": [[3]]})
    with pytest.raises(ValueError, match=r"setid\.mat: trnid\[1\] = 10 is not an image number"):
        datasets.get("flowers102", data_dir=root)


# ----------------------------------------------------------------------------- TFDS (tests/feature_export/test_tfds.py has
# the tests that need tensorflow-datasets)


def _fake_split(examples):
    return lambda split: (len(examples[split]), examples[split].__getitem__)


def test_tfds_reader_mapping_without_tensorflow():
    """The TFDS mapping (labels, groups, seeded val) on in-memory examples, no TFDS needed."""
    rng = np.random.default_rng(0)

    def example(blond, male):
        image = rng.integers(0, 255, (10, 8, 3), np.uint8)
        return {"image": image, "attributes": {"Blond_Hair": blond, "Male": male}}

    celeb = {
        s: [example(b, m) for b in (False, True) for m in (False, True)]
        for s in ("train", "validation", "test")
    }
    dataset = TFDSDataset("celeba", None, open_split=_fake_split(celeb))
    assert dataset.index("val").groups.tolist() == [0, 1, 2, 3]
    assert dataset.index("test").labels.tolist() == [0, 0, 1, 1]
    assert dataset.load_image("train", 2).size == (8, 10)
    birds = {
        s: [{"image": rng.integers(0, 255, (6, 6, 3), np.uint8), "label": k % 3} for k in range(12)]
        for s in ("train", "test")
    }
    cub = TFDSDataset("cub", None, open_split=_fake_split(birds), val_fraction=0.25, seed=1)
    assert len(cub.index("train").ids) == 9 and len(cub.index("val").ids) == 3
    assert sorted(cub.index("val").labels.tolist()) == [0, 1, 2]
    assert cub.describe()["tfds_name"] == "caltech_birds2011"
    with pytest.raises(ValueError, match="source must be 'files' or 'tfds'"):
        datasets.get("cub", data_dir="x", source="hub")


def test_celeba_original_txt_layout(tmp_path):
    root = tmp_path / "celeba"
    ids, y, male, split = write_celeba(root)
    csv_lines = (root / "list_attr_celeba.csv").read_text().splitlines()
    txt = [str(len(ids)), " ".join(CELEBA_ATTRIBUTES)]
    txt += [row.replace(",", "  ").replace("  -1", " -1") for row in csv_lines[1:]]
    (root / "list_attr_celeba.txt").write_text("\n".join(txt) + "\n")
    partition = (root / "list_eval_partition.csv").read_text().splitlines()[1:]
    (root / "list_eval_partition.txt").write_text("\n".join(p.replace(",", " ") for p in partition))
    (root / "list_attr_celeba.csv").unlink()
    (root / "list_eval_partition.csv").unlink()
    dataset = datasets.get("celeba", data_dir=root)
    rows = np.flatnonzero(split == 2)
    assert dataset.index("test").ids == [ids[r] for r in rows]
    np.testing.assert_array_equal(dataset.index("test").groups, 2 * y[rows] + male[rows])
