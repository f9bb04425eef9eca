"""A result on disk is the whole truth of one run: atomic workdirs, a lock, divergence as an
error, stale inputs refused or remade, run ids checked by analyze."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import analyze, train
from experiments.configs import synthetic as synthetic_config
from hsfm_jax.data import features as features_lib
from hsfm_jax.data import synthetic
from hsfm_jax.methods.hsfm import algorithm as hsfm
from hsfm_jax.runtime import locks

pytestmark = pytest.mark.slow  # runs killed and resumed in new processes

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(num_train=400, val_per_group=20, test_per_group=20)
# SGD steps of 1e38 with an L2 pull: the weights oscillate to inf and NaN within a few steps.
EXPLODING_ERM = {"erm.optimizer": "sgd", "erm.learning_rate": 1e38, "erm.l2": 1.0}


def small_config(features_dir, **overrides):
    config = synthetic_config.get_config()
    config.features_dir = str(features_dir)
    config.synthetic.update(SMALL)
    config.methods = "erm,hsfm"
    config.num_seeds = 2
    config.erm.steps = 50
    config.hsfm.update(epochs=3, hard_set_size=10)
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def _strict_json(path: Path):
    def refuse(constant):
        raise AssertionError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_failed_rerun_leaves_the_previous_run_whole(tmp_path):
    workdir = tmp_path / "run"
    report = train.run(small_config(tmp_path / "f"), workdir)
    files = lambda: {
        str(p.relative_to(workdir)): p.read_bytes() for p in workdir.rglob("*") if p.is_file()
    }
    before = files()
    with pytest.raises(ValueError, match="erm diverged: row 'erm', seed 0 has non-finite"):
        train.run(small_config(tmp_path / "f", **EXPLODING_ERM), workdir)
    assert files() == before
    # no partial directory, no lock held (the empty lock file stays, as flock locks want)
    assert [p.name for p in tmp_path.glob(".run.*")] == [".run.lock"]
    assert locks.is_held(workdir) is None
    for name in ("config.json", "results.json", "history.json"):
        assert _strict_json(workdir / name)["run_id"] == report["run_id"]


def test_a_rerun_with_fewer_methods_replaces_the_whole_set(tmp_path):
    workdir = tmp_path / "run"
    train.run(small_config(tmp_path / "f"), workdir)
    train.run(small_config(tmp_path / "f", methods="erm"), workdir)
    assert not (workdir / "history.json").exists() and not (workdir / "support.npz").exists()
    with pytest.raises(FileNotFoundError, match="history.json: missing"):
        analyze.load_run(workdir)


def test_analyze_refuses_files_of_two_runs(tmp_path):
    train.run(small_config(tmp_path / "f"), tmp_path / "a")
    train.run(small_config(tmp_path / "f"), tmp_path / "b")
    (tmp_path / "a" / "history.json").write_bytes((tmp_path / "b" / "history.json").read_bytes())
    with pytest.raises(ValueError, match="its files are not of one run"):
        analyze.load_run(tmp_path / "a")


def test_a_second_run_in_the_same_workdir_is_refused(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from hsfm_jax.runtime import locks\n"
            "with locks.hold(sys.argv[1], 'workdir'):\n"
            "    print('held', flush=True); time.sleep(60)",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=f"in use by another run \\(host .*, pid {holder.pid}"):
            train.run(small_config(tmp_path / "f"), tmp_path / "run")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    train.run(small_config(tmp_path / "f"), tmp_path / "run")  # the holder died: lock released


def test_sigkill_mid_run_leaves_the_previous_set(tmp_path):
    workdir = tmp_path / "run"
    features_dir = tmp_path / "f"
    train.run(small_config(features_dir), workdir)
    before = (workdir / "results.json").read_bytes()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.main",
            "--config=experiments/configs/synthetic.py",
            f"--config.features_dir={features_dir}",
            f"--workdir={workdir}",
            "--config.methods=erm,hsfm",
            "--config.hsfm.epochs=3000",  # long enough to be killed while it runs
            "--config.hsfm.hard_set_size=10",
            *[f"--config.synthetic.{k}={v}" for k, v in SMALL.items()],
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.time() + 120
    while not list(tmp_path.glob(".run.partial-*/config.json")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (workdir / "results.json").read_bytes() == before
    train.run(small_config(features_dir), workdir)  # stale lock and partial directory go
    assert [p.name for p in tmp_path.glob(".run.*")] == [".run.lock"]


# NeuronTune, then HSFM long enough to be killed between two of its checkpoints.
RESUMABLE = {
    "methods": "neurontune,hsfm",
    "checkpoint_seconds": 0,  # a checkpoint after every chunk
    "hsfm.epochs": 600,
    "hsfm.chunk_epochs": 50,
    "neurontune.epochs": 6,
    "neurontune.chunk_epochs": 4,
    "neurontune.batches_per_epoch": 20,
}


def _same_results(workdir: Path, reference: Path) -> None:
    got, want = (json.loads((d / "results.json").read_text()) for d in (workdir, reference))
    assert got["methods"] == want["methods"]
    got, want = (json.loads((d / "history.json").read_text()) for d in (workdir, reference))
    assert got["history"] == want["history"]
    got, want = (np.load(d / "support.npz") for d in (workdir, reference))
    for name in ("support", "support_indices"):
        np.testing.assert_array_equal(got[name], want[name])


def test_a_run_killed_by_sigkill_resumes_to_the_uninterrupted_results(tmp_path):
    features_dir, workdir = tmp_path / "f", tmp_path / "run"
    config = small_config(features_dir, **RESUMABLE)
    uninterrupted = train.run(config, tmp_path / "uninterrupted")
    assert uninterrupted["resumed_from_epoch"] == {}
    flags = {
        "features_dir": features_dir,
        "num_seeds": config.num_seeds,
        "erm.steps": config.erm.steps,
        "hsfm.hard_set_size": config.hsfm.hard_set_size,
        **RESUMABLE,
        **{f"synthetic.{k}": v for k, v in SMALL.items()},
    }
    command = [
        sys.executable,
        "-m",
        "experiments.main",
        "--config=experiments/configs/synthetic.py",
        f"--workdir={workdir}",
        "--quiet",
        *[f"--config.{k}={v}" for k, v in flags.items()],
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / ".run.ckpt"
    deadline = time.time() + 300
    saved = lambda: [p for p in checkpoints.glob("hsfm-*/*") if p.name.isdigit()]
    while not saved() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, stderr  # killed, not finished
    assert not workdir.exists() and saved()

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads((workdir / "results.json").read_text())
    resumed = report["resumed_from_epoch"]
    assert resumed["neurontune"] == 6 and 0 < resumed["hsfm"] < 600, resumed
    _same_results(workdir, tmp_path / "uninterrupted")
    assert not checkpoints.exists()  # removed once the run completed


def test_a_rerun_with_another_config_starts_afresh(tmp_path, monkeypatch):
    overrides = {"methods": "hsfm", "checkpoint_seconds": 0, "hsfm.epochs": 6, "hsfm.grid": "none"}
    config = small_config(tmp_path / "f", **overrides, **{"hsfm.chunk_epochs": 2})
    chunk, calls = hsfm.run_chunk_seeds, []  # the configured rates alone: hsfm.grid none

    def killed_after_two_chunks(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return chunk(*args, **kwargs)

    monkeypatch.setattr(hsfm, "run_chunk_seeds", killed_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        train.run(config, tmp_path / "run")
    monkeypatch.undo()
    (stale,) = (tmp_path / ".run.ckpt").glob("hsfm-*")
    assert max(int(p.name) for p in stale.iterdir() if p.name.isdigit()) == 4

    other = small_config(tmp_path / "f", **overrides, **{"hsfm.meta_lr": 0.5})
    report = train.run(other, tmp_path / "run")
    assert report["resumed_from_epoch"] == {}  # not from the other config's epoch 4
    train.run(other, tmp_path / "fresh")
    _same_results(tmp_path / "run", tmp_path / "fresh")
    assert not (tmp_path / ".run.ckpt").exists()


def test_bad_checkpoint_seconds_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_seconds must be a number >= 0, got -1"):
        train.run(small_config(tmp_path / "f", checkpoint_seconds=-1.0), tmp_path / "run")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (EXPLODING_ERM, "erm diverged"),
        ({"hsfm.meta_lr": 1e30}, "hsfm diverged: seed 0, first non-finite at epoch"),
    ],
)
def test_divergence_is_an_error_with_nonzero_exit(tmp_path, overrides, message):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = [f"--config.{k}={v}" for k, v in overrides.items()]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.main",
            "--config=experiments/configs/synthetic.py",
            f"--config.features_dir={tmp_path / 'f'}",
            f"--workdir={tmp_path / 'run'}",
            "--config.methods=erm,hsfm",
            "--config.num_seeds=2",
            "--config.hsfm.epochs=3",
            *[f"--config.synthetic.{k}={v}" for k, v in SMALL.items()],
            *flags,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_hsfm_divergence_names_the_first_epoch(tmp_path):
    with pytest.raises(ValueError, match=r"hsfm diverged: seed 0, first non-finite at epoch \d"):
        train.run(small_config(tmp_path / "f", **{"hsfm.meta_lr": 1e30}), tmp_path / "run")


def test_features_that_overflow_float32_are_refused_naming_the_column(tmp_path):
    synthetic.write(tmp_path / "f", **SMALL)
    x = np.load(tmp_path / "f" / "train" / "features.npy")
    x[7, 3] = 1e30
    np.save(tmp_path / "f" / "train" / "features.npy", x)
    with pytest.raises(ValueError, match=r"train/features.npy: \|value\| 1e\+30 in column 3"):
        features_lib.load(tmp_path / "f")


def test_a_huge_backbone_head_is_refused_as_diverged(tmp_path):
    synthetic.write(tmp_path / "f", **SMALL)
    features_lib.write_head(tmp_path / "f", np.full((2, 32), 3e38, np.float32), np.zeros(2))
    with pytest.raises(ValueError, match="backbone head.npz diverged"):
        train.run(small_config(tmp_path / "f", prepare=""), tmp_path / "run")


def test_stale_synthetic_features_are_remade_or_refused(tmp_path):
    train.run(small_config(tmp_path / "f"), tmp_path / "run")
    assert features_lib.load(tmp_path / "f").num_classes == 2
    config = small_config(tmp_path / "f", **{"synthetic.num_classes": 3})
    config.stale_features = "refuse"
    with pytest.raises(ValueError, match="made with other synthetic arguments"):
        train.run(config, tmp_path / "run")
    config.stale_features = "regenerate"
    report = train.run(config, tmp_path / "run")
    assert features_lib.load(tmp_path / "f").num_classes == 3
    assert len(report["class_names"]) == 3


def test_groups_declared_but_all_unknown_run_without_groups(tmp_path):
    synthetic.write(tmp_path / "f", **SMALL)
    for split in ("train", "val", "test"):
        groups = tmp_path / "f" / split / "groups.npy"
        np.save(groups, np.full(np.load(groups).shape, -1, np.int64))
    report = train.run(small_config(tmp_path / "f", prepare=""), tmp_path / "run")
    assert report["methods"]["hsfm"]["resolved"]["selection_metric"] == "mean_acc"
    assert "test worst-class acc" in (tmp_path / "run" / "results.md").read_text()


def test_unusable_workdir_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        train.run(small_config(tmp_path / "f"), tmp_path / "file")


def test_a_sweep_does_not_resume_on_regenerated_features(tmp_path):
    from hsfm_jax.sweep import execute

    config = small_config(tmp_path / "f")
    run = lambda **hooks: execute.run(
        config, "meta_lr=0.1,1", tmp_path / "sweep", checkpoint_every=2, progress=False, **hooks
    )
    with pytest.raises(execute.Interrupted):
        run(max_settings=1)
    time.sleep(0.01)
    synthetic.write(tmp_path / "f", **config.synthetic.to_dict())  # same arguments, new files
    with pytest.raises(ValueError, match="features: '[0-9a-f]+' in the workdir"):
        run()
