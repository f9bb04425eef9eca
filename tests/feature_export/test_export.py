"""feature_export.export: round trip through hsfm_jax.data.features, resume after a kill, staleness, CLI."""

import json

import numpy as np
import pytest
import torch

from feature_export import backbones, export
from feature_export.backbones import digit_cnn
from feature_export.datasets.digit_dominoes import DigitDominoes
from hsfm_jax.data import features

CHUNK_SIZE = 64
EXPORT_KWARGS = dict(batch_size=32, chunk_size=CHUNK_SIZE, show_progress=False, num_threads=1)


@pytest.fixture(scope="module")
def dataset():
    return DigitDominoes(train_copies=1)


@pytest.fixture(scope="module")
def backbone(dataset):
    return backbones.get("digit_cnn", dataset=dataset, epochs=1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dataset, backbone):
    """An uninterrupted export."""
    out = tmp_path_factory.mktemp("reference")
    export.export_features(dataset, backbone, out, **EXPORT_KWARGS)
    return features.load(out, mmap=False)


class Interrupt(Exception):
    pass


def _num_chunks(dataset, split):
    return -(-len(dataset.index(split).ids) // CHUNK_SIZE)


def _interrupt_after(num_chunks):
    calls = []

    def on_chunk(split, chunk):
        calls.append((split, chunk))
        if len(calls) == num_chunks:
            raise Interrupt

    return on_chunk, calls


def test_round_trip(dataset, backbone, reference, tmp_path):
    assert reference.meta["fingerprint"] == export.export_fingerprint(dataset, backbone)
    assert reference.meta["preprocessing"] == backbone.preprocessing
    assert reference.class_names == dataset.class_names
    assert reference.group_names == dataset.group_names
    assert reference.feature_dim == digit_cnn.FEATURE_DIM
    for split in dataset.splits:
        index = dataset.index(split)
        np.testing.assert_array_equal(reference[split].labels, index.labels)
        np.testing.assert_array_equal(reference[split].groups, index.groups)
        assert reference[split].ids == index.ids
    # The features are the backbone's forward pass, and head.npz is its last layer.
    images, _ = digit_cnn.load_split_tensor(dataset, "val")
    with torch.no_grad():
        direct = backbone.module(images).numpy()
    np.testing.assert_allclose(reference.val.features, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(reference.head_weight, backbone.head[0])
    np.testing.assert_array_equal(reference.head_bias, backbone.head[1])
    # Nothing but the format's files (and the marker saying hsfm_jax made them) is left behind.
    assert sorted(p.name for p in reference.path.iterdir()) == [
        ".hsfm_jax.json",
        "head.npz",
        "meta.json",
        "test",
        "train",
        "val",
    ]


def test_interrupted_export_is_not_done_and_resumes(dataset, backbone, reference, tmp_path):
    num_train_chunks = _num_chunks(dataset, "train")
    on_chunk, calls = _interrupt_after(num_train_chunks + 1)  # dies after val's first chunk
    with pytest.raises(Interrupt):
        export.export_features(dataset, backbone, tmp_path, on_chunk=on_chunk, **EXPORT_KWARGS)
    assert not export.is_exported(tmp_path, dataset, backbone)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        features.load(tmp_path)

    on_chunk, calls = _interrupt_after(-1)  # never raises: records the chunks computed
    export.export_features(dataset, backbone, tmp_path, on_chunk=on_chunk, **EXPORT_KWARGS)
    assert calls[0] == ("val", 1)  # the saved chunks were not recomputed
    total_chunks = sum(_num_chunks(dataset, split) for split in dataset.splits)
    assert len(calls) == total_chunks - num_train_chunks - 1
    assert export.is_exported(tmp_path, dataset, backbone)
    resumed = features.load(tmp_path, mmap=False)
    for split in dataset.splits:
        np.testing.assert_array_equal(resumed[split].features, reference[split].features)
    assert not list(tmp_path.glob(".partial-*")) and not list(tmp_path.glob(".tmp-*"))


def test_stale_fingerprint_is_detected_and_reexported(dataset, backbone, reference, tmp_path):
    export.export_features(dataset, backbone, tmp_path, **EXPORT_KWARGS)
    other_backbone = backbones.get("digit_cnn", dataset=dataset, random_init=True)
    other_dataset = DigitDominoes(train_copies=1, seed=1)
    assert export.is_exported(tmp_path, dataset, backbone)
    assert not export.is_exported(tmp_path, dataset, other_backbone)
    assert not export.is_exported(tmp_path, other_dataset, backbone)
    assert not export.is_exported(tmp_path, dataset, backbone, dtype="float16")

    # A re-export with another backbone that dies leaves no loadable directory behind, and
    # its chunks are not mixed into a later export of the first backbone.
    on_chunk, _ = _interrupt_after(2)
    with pytest.raises(Interrupt):
        export.export_features(
            dataset, other_backbone, tmp_path, on_chunk=on_chunk, **EXPORT_KWARGS
        )
    assert not export.is_exported(tmp_path, dataset, backbone)
    with pytest.raises(FileNotFoundError):
        features.load(tmp_path)
    meta = export.export_features(dataset, backbone, tmp_path, **EXPORT_KWARGS)
    assert meta["fingerprint"] == reference.meta["fingerprint"]
    np.testing.assert_array_equal(features.load(tmp_path).train.features, reference.train.features)


def test_done_export_is_not_redone(dataset, backbone, tmp_path):
    export.export_features(dataset, backbone, tmp_path, **EXPORT_KWARGS)
    on_chunk, calls = _interrupt_after(-1)
    export.export_features(dataset, backbone, tmp_path, on_chunk=on_chunk, **EXPORT_KWARGS)
    assert calls == []
    export.export_features(
        dataset, backbone, tmp_path, on_chunk=on_chunk, force=True, **EXPORT_KWARGS
    )
    assert len(calls) == sum(_num_chunks(dataset, split) for split in dataset.splits)


class _BrokenImage(DigitDominoes):
    def load_image(self, split, i):
        if split == "val" and i == 5:
            raise ValueError("/data/val/5.png: unreadable image (truncated)")
        return super().load_image(split, i)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_unreadable_image_is_a_one_line_error(backbone, tmp_path, num_workers):
    dataset = _BrokenImage(train_copies=1)
    with pytest.raises(ValueError, match=r"val row 5: ValueError: /data/val/5.png") as info:
        export.export_features(
            dataset,
            backbone,
            tmp_path,
            num_workers=num_workers,
            multiprocessing_context="spawn",  # this pytest process has JAX's threads running
            **EXPORT_KWARGS,
        )
    assert "\n" not in str(info.value)
    assert not (tmp_path / "meta.json").exists()


def test_cli(tmp_path, capsys, dataset):
    out, weights = tmp_path / "features", tmp_path / "cnn.pt"
    argv = [
        "--dataset=digit_dominoes", "--backbone=digit_cnn", f"--out={out}", f"--weights={weights}",
        "--dataset_arg", "train_copies=1", "--backbone_arg", "epochs=1", "--quiet",
        "--num_threads=1",
    ]  # fmt: skip
    assert export.main(argv) == 0
    assert weights.is_file()  # trained, then saved for the next run
    first = json.loads((out / "meta.json").read_text())
    assert first["digit_dominoes"]["train_copies"] == 1
    assert features.load(out).train.num_examples == dataset.index("train").labels.shape[0]
    capsys.readouterr()
    assert export.main(argv) == 0  # loads the weights: same fingerprint, nothing to do
    assert "already exported" in capsys.readouterr().out
    assert json.loads((out / "meta.json").read_text())["fingerprint"] == first["fingerprint"]

    assert export.main([*argv[:-1], "--dataset_arg", "seed=3", "--quiet"]) == 1  # weights stale
    assert "trained on dataset fingerprint" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dataset=nope"], "unknown dataset 'nope'"),
        (["--dataset_arg", "bogus=1"], "takes no argument 'bogus'"),
        (["--data_dir=/x"], "takes no argument 'data_dir'"),
        (["--dataset_arg", "core_classes=(0,3)"], "overlap"),
        (["--weights=WEIGHTS"], "not a readable digit_cnn checkpoint"),
        (["--dataset_arg", "train_copies"], "expects key=value"),
        pytest.param(
            ["--device=cuda"],
            "no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA"),
        ),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, capsys, extra, message):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    argv = [
        "--dataset=digit_dominoes", "--backbone=digit_cnn", f"--out={tmp_path / 'f'}",
        "--random_init", "--quiet",
    ]  # fmt: skip
    extra = [e.replace("WEIGHTS", str(bad)) for e in extra]
    if any(e.startswith("--weights") for e in extra):
        argv.remove("--random_init")
    assert export.main(argv + extra) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_digit_cnn_deterministic_and_head_is_last_layer(dataset, backbone, tmp_path):
    again = backbones.get("digit_cnn", dataset=dataset, epochs=1)
    assert again.weights_id == backbone.weights_id
    assert backbones.get("digit_cnn", dataset=dataset, epochs=1, seed=1).weights_id != (
        backbone.weights_id
    )
    weights = tmp_path / "cnn.pt"
    trained = backbones.get("digit_cnn", dataset=dataset, epochs=1, weights=weights)
    loaded = backbones.get("digit_cnn", dataset=dataset, weights=weights)
    assert trained.weights_id == loaded.weights_id == backbone.weights_id
    model, _ = digit_cnn.load_checkpoint(weights)
    images, _ = digit_cnn.load_split_tensor(dataset, "test")
    with torch.no_grad():
        logits = model(images).numpy()
        features_ = loaded.module(images).numpy()
    np.testing.assert_allclose(
        features_ @ loaded.head[0].T + loaded.head[1], logits, rtol=1e-5, atol=1e-5
    )


def test_resume_with_another_chunk_size_starts_over(dataset, backbone, tmp_path):
    on_chunk, _ = _interrupt_after(2)
    resumed_dir, fresh_dir = tmp_path / "resumed", tmp_path / "fresh"
    with pytest.raises(Interrupt):
        export.export_features(dataset, backbone, resumed_dir, on_chunk=on_chunk, **EXPORT_KWARGS)
    # Chunks of the other size are discarded: the result is that of an uninterrupted export
    # with chunk size 50 (batches follow chunks, and a conv's float sums may depend on the
    # batch it runs in, so exports with different chunk sizes need not agree to the last bit).
    other = {**EXPORT_KWARGS, "chunk_size": 50}
    export.export_features(dataset, backbone, resumed_dir, **other)
    export.export_features(dataset, backbone, fresh_dir, **other)
    resumed, fresh = features.load(resumed_dir, mmap=False), features.load(fresh_dir, mmap=False)
    for split in dataset.splits:
        np.testing.assert_array_equal(resumed[split].features, fresh[split].features)


def test_mixed_precision_is_recorded_and_close(dataset, backbone, reference, tmp_path):
    amp = export.with_mixed_precision(backbone, "cpu")
    assert "mixed precision (bfloat16)" in amp.preprocessing
    assert export.export_fingerprint(dataset, amp) != export.export_fingerprint(dataset, backbone)
    export.export_features(dataset, amp, tmp_path, **EXPORT_KWARGS)
    loaded = features.load(tmp_path)
    assert "mixed precision" in loaded.meta["preprocessing"]
    np.testing.assert_allclose(loaded.val.features, reference.val.features, rtol=0.05, atol=0.05)


def test_source_flags_reach_the_dataset(tmp_path, capsys):
    argv = [
        "--dataset=digit_dominoes", "--backbone=digit_cnn", f"--out={tmp_path}", "--random_init",
        "--source=tfds", "--quiet",
    ]  # fmt: skip
    assert export.main(argv) == 1  # digit_dominoes has no `source` argument: said, not ignored
    assert "takes no argument 'source'" in capsys.readouterr().err
