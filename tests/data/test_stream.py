"""Train splits larger than memory: the host stream, streamed ERM equal to in-memory ERM, runs
over the memory budget equal to in-memory runs, and a 3 GB train split under a 1.5 GB limit."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import train
from experiments.configs import synthetic as synthetic_config
from hsfm_jax import methods
from hsfm_jax.data import features, stream
from hsfm_jax.methods import erm

ROOT = Path(__file__).resolve().parents[2]


def test_prefetch_keeps_order_and_raises_the_producers_error():
    assert list(stream.prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in stream.prefetch(failing()):
            got.append(item)
    assert got == [1]
    # a consumer that stops early does not hang on the producer
    assert next(iter(stream.prefetch(iter(range(10**6))))) == 0


def test_blocks_cover_every_row_once_and_pad_the_last():
    split = features.Split(np.arange(14, dtype=np.float16).reshape(7, 2), np.zeros(7), np.zeros(7))
    got = list(stream.blocks(split, 3, np.float32))
    assert [b.shape for b, _ in got] == [(3, 2)] * 3
    np.testing.assert_array_equal(np.concatenate([b[v] for b, v in got]), split.features)
    np.testing.assert_array_equal(got[-1][1], [True, False, False])
    assert stream.fits(split, 14 * 4 / 2**30, np.float32)
    assert not stream.fits(split, 0.0, np.float32)


def _toy(n=900, d=10, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    x = rng.normal(size=(n, d)) + 2.0 * np.eye(num_classes, d)[labels]
    return features.Split(x.astype(np.float16), labels, np.zeros(n, np.int32))


def _fit_and_fit_stream(split, key, settings, **stream_only):
    """(erm.fit_stream's head, erm.fit's head) with the same settings (`prefetch_depth` and
    `stream_only` go to fit_stream alone)."""
    settings = dict(settings)
    reading = erm.Reading(prefetch_depth=settings.pop("prefetch_depth", 0), **stream_only)
    rates = erm.Rates(learning_rate=1e-2, l2=settings.pop("l2", 0.0))
    arrays_only = {k: settings.pop(k) for k in ("sample_weight", "feature_mask") if k in settings}
    recipe = erm.Recipe(num_classes=3, **settings)
    arrays = split.to_arrays(jnp.float32)
    expected = erm.fit(arrays.features, arrays.labels, key, recipe, rates, **arrays_only)
    got = erm.fit_stream(split, key, recipe, rates, reading=reading, **arrays_only)
    return got, expected


@pytest.mark.parametrize(
    "settings",
    [
        dict(batch_size=32, steps=40, prefetch_depth=2),
        dict(
            batch_size=16,
            steps=30,
            class_balanced=True,
            sample_weight=True,
            feature_mask=True,
            l2=0.1,
            lr_schedule="cosine",
        ),
    ],
)
def test_minibatch_fit_stream_equals_fit_exactly(settings):
    """The same example indices (drawn from the labels with `fit`'s keys), the same steps."""
    split = _toy()
    settings = dict(settings)
    if settings.pop("sample_weight", False):
        settings["sample_weight"] = np.linspace(0.0, 2.0, split.num_examples)
    if settings.pop("feature_mask", False):
        settings["feature_mask"] = jnp.asarray(np.arange(10) % 3 != 0, jnp.float32)
    got, expected = _fit_and_fit_stream(split, jax.random.key(3), settings)
    chex.assert_trees_all_equal(got, expected)


@pytest.mark.parametrize(
    "settings",
    [
        dict(steps=30, l2=0.1, l2_bias=True, lr_schedule="cosine", prefetch_depth=2),
        # class-balanced: with Adam, near-zero gradients (balanced classes, zero head) turn
        # rounding into lr-sized steps, so this one is checked with SGD
        dict(steps=30, optimizer="sgd", class_balanced=True),
    ],
)
def test_full_batch_fit_stream_equals_fit_to_rounding(settings):
    """Blocks of 128 rows (the last one padded): the same gradient, summed in another order."""
    got, expected = _fit_and_fit_stream(_toy(), jax.random.key(0), settings, block_rows=128)
    chex.assert_trees_all_close(got, expected, atol=1e-6, rtol=1e-5)


def _run_config(features_dir, budget_gb):
    config = synthetic_config.get_config()
    config.features_dir = str(features_dir)
    config.prepare = ""  # the shared fixture directory as it is
    config.methods = "erm,hsfm"
    config.num_seeds = 2
    config.erm.batch_size = 64
    config.erm.steps = 30
    config.erm.train_memory_budget_gb = budget_gb
    config.hsfm.epochs = 3
    return config


@pytest.mark.slow  # two whole runs
def test_streamed_run_equals_in_memory_run(small_features_dir, tmp_path):
    """Budget 0 streams ERM (and HSFM's ERM initial head) and reads only HSFM's support rows;
    every metric of every row and seed equals the in-memory run's."""
    in_memory = train.run(_run_config(small_features_dir, 4.0), tmp_path / "memory")
    streamed = train.run(_run_config(small_features_dir, 0.0), tmp_path / "stream")
    assert set(streamed["methods"]) == set(in_memory["methods"]) >= {"erm", "hsfm"}
    for row, splits in in_memory["methods"].items():
        for split in ("val", "test"):
            for metric, value in splits[split].items():
                assert streamed["methods"][row][split][metric] == value, (row, split, metric)
    memory_support = np.load(tmp_path / "memory" / "support.npz")["support"]
    np.testing.assert_array_equal(
        np.load(tmp_path / "stream" / "support.npz")["support"], memory_support
    )


def test_methods_that_put_train_on_the_device_fail_over_the_budget(small_features_dir):
    config = _run_config(small_features_dir, 0.0)
    data = features.load(small_features_dir)
    for name in ("neurontune", "group_dro", "jtt", "afr"):
        with pytest.raises(ValueError, match=f"^{name} puts all of train on the device.*budget"):
            methods.check(config, [name], data)
    config.dfr.variants = ("dfr", "tr_dfr")
    with pytest.raises(ValueError, match="^dfr puts all of train"):
        methods.check(config, ["dfr"], data)


# ----------------------------------------------------------------------------- 3 GB train

_BIG_ROWS, _BIG_DIM = 3 * 2**30 // (2 * 512), 512  # 3 GiB of float16
_LIMIT_GB = 1.5

# RLIMIT_DATA, not RLIMIT_AS: the address-space limit counts the 3 GB memmap itself (and XLA's
# reservations), so no memmap-reading process fits under 1.5 GB of it. Since Linux 4.7
# RLIMIT_DATA counts private writable mappings (heap, anonymous mmaps, numpy and XLA buffers)
# but not read-only file mappings, whose pages the kernel can drop: it limits exactly the memory
# a method holds, and a copy of train (the in-memory path) exceeds it (the control below).
_CHILD = """
import json, resource, sys
limit = int({limit_gb} * 2**30)
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
from experiments import train
from experiments.configs import synthetic
config = synthetic.get_config()
config.features_dir = sys.argv[1]
config.prepare = ""  # use the directory as written
config.methods = "erm,hsfm"
config.num_seeds = 1
config.erm.update(batch_size=256, steps=40, learning_rate=1e-2)
config.erm.train_memory_budget_gb = {budget_gb}
config.hsfm.update(epochs=2, support_per_class=8, hard_set_size=8, inner_steps=5, meta_steps=2)
report = train.run(config, sys.argv[2])
# VmData: what RLIMIT_DATA counts (private writable memory), here at the end of the run
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print("VMDATA_GB", int(status["VmData"].split()[0]) / 2**20)
print("RESULT", json.dumps({{k: report["methods"][k]["test"]["mean_acc"]["mean"]
                            for k in ("erm", "hsfm")}}))
"""


def _allocate(file: Path):
    """Reserves the disk blocks of `file` (a sparse memmap) before anything is written into it:
    a full disk then fails here with an OSError, not later with a SIGBUS inside the memmap."""
    size = file.stat().st_size
    with open(file, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as error:
            file.unlink()
            pytest.skip(f"no room for a {size / 2**30:.1f} GiB file in {file.parent}: {error}")


def _write_big(path: Path, num_train: int, dim: int, chunk_rows: int = 2**18):
    """A feature directory whose float16 train split is written in chunks through a memmap:
    feature 0 carries the label, the rest is noise (one block of it, reused)."""
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(chunk_rows, dim)).astype(np.float16)
    labels = rng.integers(0, 2, num_train)
    (path / "train").mkdir(parents=True)
    out = np.lib.format.open_memmap(
        path / "train" / "features.npy", mode="w+", dtype=np.float16, shape=(num_train, dim)
    )
    _allocate(path / "train" / "features.npy")
    for start in range(0, num_train, chunk_rows):
        block = noise[: min(chunk_rows, num_train - start)].copy()
        block[:, 0] += 6.0 * labels[start : start + chunk_rows] - 3.0
        out[start : start + block.shape[0]] = block
    out.flush()
    del out
    np.save(path / "train" / "labels.npy", labels)
    np.save(path / "train" / "groups.npy", 2 * labels + (np.arange(num_train) % 2))
    for name, n in (("val", 400), ("test", 400)):
        y = np.arange(n) % 2
        x = rng.normal(size=(n, dim)).astype(np.float32)
        x[:, 0] += 6.0 * y - 3.0
        features.write_split(path, name, x, y, 2 * y + (np.arange(n) // 2) % 2)
    meta = features.make_meta(
        dataset="big",
        backbone="none",
        class_names=["a", "b"],
        group_names=["a0", "a1", "b0", "b1"],
        feature_dim=dim,
        split_sizes={"train": num_train, "val": 400, "test": 400},
        preprocessing="synthetic",
    )
    features.write_meta(path, meta)


def _child(features_dir, workdir, budget_gb):
    script = _CHILD.format(limit_gb=_LIMIT_GB, budget_gb=budget_gb)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(features_dir), str(workdir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )


@pytest.mark.slow  # writes a 3 GiB memmap
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA semantics")
def test_a_3gb_train_split_runs_erm_and_hsfm_under_a_1_5gb_limit(tmp_path):
    path = tmp_path / "big"
    need, free = _BIG_ROWS * _BIG_DIM * 2 + 2**30, shutil.disk_usage(tmp_path).free
    if free < need:  # the file plus room for the runs' outputs and compiled programs
        pytest.skip(f"needs {need / 2**30:.1f} GiB free in {tmp_path}, has {free / 2**30:.1f}")
    _write_big(path, _BIG_ROWS, _BIG_DIM)
    try:
        assert (path / "train" / "features.npy").stat().st_size > 3 * 2**30
        done = _child(path, tmp_path / "stream", budget_gb=1.0)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.split("RESULT", 1)[1])
        data_gb = float(done.stdout.split("VMDATA_GB", 1)[1].split()[0])
        print(f"3 GiB train, streamed: VmData {data_gb:.2f} GiB at the end, test acc {result}")
        assert min(result.values()) > 0.8, result  # feature 0 carries the label
        # the control: the same run with train on the device does not fit under the limit
        control = _child(path, tmp_path / "memory", budget_gb=100.0)
        assert control.returncode != 0, control.stdout[-2000:]
        assert (
            "MemoryError" in control.stderr
            or "RESOURCE_EXHAUSTED" in control.stderr
            or (control.returncode < 0)
        ), control.stderr[-3000:]
        print("control:", control.stderr.strip().splitlines()[-1])
    finally:
        (path / "train" / "features.npy").unlink(missing_ok=True)
