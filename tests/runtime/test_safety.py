"""Adversarial cases: the programs never delete or change what hsfm_jax did not make, refuse
stale or mislabelled inputs, hold locks on shared directories, and answer bad input with one
``error:`` line. Every test plants user files (thesis.tex, sub/data.csv) where a careless program
would delete them and checks they survive byte for byte."""

from __future__ import annotations

import errno
import hashlib
import json
import logging as py_logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import analyze, cli, train
from experiments.configs import synthetic as synthetic_config
from hsfm_jax.data import features as features_lib
from hsfm_jax.data import inputs, synthetic
from hsfm_jax.runtime import atomic, locks, ownership
from hsfm_jax.runtime import workdir as workdir_lib
from hsfm_jax.sweep import execute

pytestmark = pytest.mark.slow  # the entry points run as a user runs them, in new processes

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(num_train=200, val_per_group=10, test_per_group=10)


# ----------------------------------------------------------------------------- helpers


def plant_user_files(directory: Path) -> dict[str, str]:
    """A user's files in `directory` (thesis.tex, sub/data.csv); returns their hashes."""
    (directory / "sub").mkdir(parents=True, exist_ok=True)
    (directory / "thesis.tex").write_text("\\documentclass{article} my thesis\n")
    (directory / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return hashes(directory)


def hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory` (relative path -> digest)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def small_config(features_dir, **overrides):
    config = synthetic_config.get_config()
    config.features_dir = str(features_dir)
    config.prepare = ""
    config.synthetic.update(SMALL)
    config.methods = "erm"
    config.num_seeds = 2
    config.erm.steps = 20
    config.hsfm.update(epochs=2, hard_set_size=10, support_per_class=4, inner_steps=2)
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    """A small synthetic feature directory, read (never prepared) by the tests here."""
    path = tmp_path_factory.mktemp("safety") / "features"
    synthetic.write(path, **SMALL)
    return path


@pytest.fixture(scope="module")
def hsfm_run(tmp_path_factory, features) -> Path:
    """A finished run with an HSFM row (what analyze reads)."""
    workdir = tmp_path_factory.mktemp("safety_run") / "run"
    train.run(small_config(features, methods="erm,hsfm"), workdir)
    return workdir


def copy_run(run: Path, to: Path) -> Path:
    to.mkdir(parents=True)
    for p in run.iterdir():
        if p.is_file():
            (to / p.name).write_bytes(p.read_bytes())
    return to


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


def hold_lock_in_subprocess(directory: Path) -> subprocess.Popen:
    """Another process holding `directory`'s lock (until killed)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom hsfm_jax.runtime import locks\n"
            "with locks.hold(sys.argv[1], 'directory'):\n"
            "    print('held', flush=True)\n    time.sleep(120)",
            str(directory),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def stop(holder: subprocess.Popen) -> None:
    holder.kill()
    holder.wait()
    holder.stdout.close()


# ----------------------------------------------------------------------------- deleted, exit 0


def test_workdir_holding_user_files_is_refused_untouched(tmp_path, features):
    """MAIN --workdir=DIR where DIR holds thesis.tex and sub/data.csv."""
    before = plant_user_files(tmp_path / "dir")
    with pytest.raises(ValueError, match="was not made by hsfm_jax"):
        train.run(small_config(features), tmp_path / "dir")
    assert hashes(tmp_path / "dir") == before
    assert not list(tmp_path.glob(".dir.partial-*"))


def test_cli_workdir_holding_user_files_is_one_error_line(tmp_path, features, main_cli):
    before = plant_user_files(tmp_path / "dir")
    proc = main_cli(
        "--config=experiments/configs/synthetic.py",
        f"--config.features_dir={features}",
        "--config.prepare=",
        f"--workdir={tmp_path / 'dir'}",
        "--config.num_seeds=2",
        "--config.methods=erm",
        "--quiet",
    )
    assert proc.returncode != 0
    assert len(error_lines(proc)) == 1 and "was not made by hsfm_jax" in proc.stderr
    assert hashes(tmp_path / "dir") == before


def test_workdir_equal_to_features_dir_is_refused(tmp_path):
    """MAIN --config.features_dir=F --workdir=F."""
    synthetic.write(tmp_path / "f", **SMALL)
    before = hashes(tmp_path / "f")
    with pytest.raises(ValueError, match="workdir .* is an hsfm_jax features directory"):
        train.run(small_config(tmp_path / "f"), tmp_path / "f")
    assert hashes(tmp_path / "f") == before
    # the same directory through a symlink
    (tmp_path / "link").symlink_to(tmp_path / "f")
    with pytest.raises(ValueError):
        train.run(small_config(tmp_path / "f"), tmp_path / "link")
    assert hashes(tmp_path / "f") == before


def test_features_inside_the_workdir_are_refused(tmp_path):
    """--config.prepare=synthetic --config.features_dir=WD/features --workdir=WD."""
    config = small_config(tmp_path / "wd" / "features", prepare="synthetic")
    with pytest.raises(ValueError, match="workdir .* contains features_dir"):
        train.run(config, tmp_path / "wd")
    assert not (tmp_path / "wd").exists()  # refused before anything was made


def test_workdir_inside_the_features_is_refused(tmp_path):
    synthetic.write(tmp_path / "f", **SMALL)
    before = hashes(tmp_path / "f")
    with pytest.raises(ValueError, match="workdir .* is inside features_dir"):
        train.run(small_config(tmp_path / "f"), tmp_path / "f" / "run")
    assert hashes(tmp_path / "f") == before


def test_prepare_refuses_a_directory_of_user_files(tmp_path):
    """--config.prepare=synthetic --config.features_dir=DIR, DIR holding train/img_0001.png."""
    (tmp_path / "dir" / "train").mkdir(parents=True)
    (tmp_path / "dir" / "train" / "img_0001.png").write_bytes(b"\x89PNG fake image")
    before = hashes(tmp_path / "dir")
    config = small_config(tmp_path / "dir", prepare="synthetic")
    with pytest.raises(ValueError, match="holds files that no run prepared"):
        train.run(config, tmp_path / "run")
    assert hashes(tmp_path / "dir") == before
    assert not (tmp_path / "run").exists()


def test_prepare_never_regenerates_features_it_did_not_make(tmp_path):
    """Features without prepare.json (meta says waterbirds x resnet50) are never overwritten."""
    split = features_lib.Split(
        np.ones((4, 3), np.float32), np.array([0, 1, 0, 1]), np.array([0, 1, 2, 3]), None
    )
    features_lib.save(
        tmp_path / "wb",
        splits={"train": split, "val": split, "test": split},
        dataset="waterbirds",
        backbone="resnet50",
        class_names=["land", "water"],
        group_names=["a", "b", "c", "d"],
        preprocessing="user",
    )
    (tmp_path / "wb" / ownership.MARKER).unlink()  # as exported by another tool
    before = hashes(tmp_path / "wb")
    for stale in ("regenerate", "refuse"):
        config = small_config(tmp_path / "wb", prepare="synthetic", stale_features=stale)
        with pytest.raises(ValueError, match="holds features that no run prepared"):
            inputs.prepare_features(config)
    assert hashes(tmp_path / "wb") == before


def test_prepare_remakes_what_it_made_after_a_kill(tmp_path):
    """A prepare killed halfway (marker, no prepare.json, no meta.json) is made again."""
    config = small_config(tmp_path / "f", prepare="synthetic")
    inputs.prepare_features(config)
    (tmp_path / "f" / inputs.PREPARE_FILE).unlink()
    (tmp_path / "f" / features_lib.META_FILE).unlink()
    inputs.prepare_features(config)
    assert features_lib.load(tmp_path / "f").meta["dataset"] == "synthetic"


def test_write_split_refuses_a_directory_it_did_not_make(tmp_path):
    """The split writer replaced <out>/<split> whatever it held (export --data_dir=D --out=D)."""
    before = plant_user_files(tmp_path / "out" / "train")
    with pytest.raises(ValueError, match="split directory .*train .*was not made by hsfm_jax"):
        features_lib.write_split(tmp_path / "out", "train", np.ones((2, 3)), [0, 1], [0, 1])
    assert hashes(tmp_path / "out" / "train") == before
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["train"]  # no temporary left
    # its own split directory is replaced
    features_lib.write_split(tmp_path / "out", "val", np.ones((2, 3)), [0, 1], [0, 1])
    features_lib.write_split(tmp_path / "out", "val", np.zeros((3, 3)), [0, 1, 1], [0, 1, 1])
    assert np.load(tmp_path / "out" / "val" / "features.npy").shape == (3, 3)


def test_export_out_equal_to_data_dir_is_refused(tmp_path, capsys):
    """python -m feature_export.export ... --data_dir=D --out=D."""
    export = pytest.importorskip("feature_export.export")
    before = plant_user_files(tmp_path / "d")
    code = export.main(
        ["--dataset=waterbirds", "--backbone=resnet50", f"--data_dir={tmp_path / 'd'}"]
        + [f"--out={tmp_path / 'd'}"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: --out")
    assert hashes(tmp_path / "d") == before
    (tmp_path / "empty").mkdir()
    code = export.main(
        ["--dataset=waterbirds", "--backbone=resnet50", f"--data_dir={tmp_path / 'd'}"]
        + [f"--out={tmp_path / 'd' / 'features'}"]
    )
    assert code == 1 and "is inside --data_dir" in capsys.readouterr().err
    assert hashes(tmp_path / "d") == before


def test_export_out_an_existing_file_is_one_line(tmp_path, capsys):
    export = pytest.importorskip("feature_export.export")
    (tmp_path / "file").write_text("keep me")
    code = export.main(
        ["--dataset=waterbirds", "--backbone=resnet50", f"--out={tmp_path / 'file'}"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [f"error: --out {tmp_path / 'file'} exists and is not a directory"]
    assert (tmp_path / "file").read_text() == "keep me"


def test_analyze_out_equal_to_the_run_is_refused(tmp_path, hsfm_run):
    """python -m experiments.analyze --workdir=RUN --out=RUN."""
    run = copy_run(hsfm_run, tmp_path / "run")
    before = hashes(run)
    with pytest.raises(ValueError, match="--out .* is workdir"):
        analyze.analyze(run, run)
    with pytest.raises(ValueError, match="--out .* contains workdir"):
        analyze.analyze(run, tmp_path)
    assert hashes(run) == before


def test_analyze_out_holding_user_files_is_refused(tmp_path, hsfm_run):
    """--out=DIR holding draft.tex."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "draft.tex").write_text("draft")
    before = hashes(tmp_path / "dir")
    with pytest.raises(ValueError, match="--out .* was not made by hsfm_jax"):
        analyze.analyze(hsfm_run, tmp_path / "dir")
    assert hashes(tmp_path / "dir") == before


def test_a_rerun_keeps_the_previous_analysis_and_user_files(tmp_path, features):
    """A rerun of main deleted <workdir>/analysis/ (analyze's default output)."""
    workdir = tmp_path / "run"
    first = train.run(small_config(features, methods="erm,hsfm"), workdir)
    analyze.analyze(workdir)
    analysis_before = hashes(workdir / "analysis")
    (workdir / "notes.txt").write_text("my notes on this run")
    train.run(small_config(features, methods="erm,hsfm"), workdir)
    kept = workdir / f"analysis-{first['run_id']}"
    assert hashes(kept) == analysis_before
    assert not (workdir / "analysis").exists()  # never read as the new run's analysis
    assert (workdir / "notes.txt").read_text() == "my notes on this run"


def test_a_kill_between_the_swap_renames_then_a_failed_rerun_keeps_a_set(tmp_path, features):
    """A kill right after the swap's first rename, then a failed rerun: both sets were lost."""
    workdir = tmp_path / "run"
    old = train.run(small_config(features), workdir)
    script = (
        "import os, sys\n"
        "from experiments import train\n"
        "from experiments.configs import synthetic\n"
        "from hsfm_jax.runtime import workdir as w\n"
        "config = synthetic.get_config()\n"
        "config.update(features_dir=sys.argv[1], prepare='', methods='erm', num_seeds=2)\n"
        "config.erm.steps = 20\n"
        "real, calls = os.rename, []\n"
        "def rename(a, b):\n"
        "    real(a, b); calls.append(a)\n"
        "    if str(a) == sys.argv[2]: os._exit(9)  # killed right after the first rename\n"
        "w.os.rename = rename\n"
        "train.run(config, sys.argv[2])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(features), str(workdir)],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert not workdir.exists()  # killed between the renames
    new_id = next(tmp_path.glob(".run.previous-*")).name.rsplit("-", 1)[1]
    with pytest.raises(ValueError, match="diverged"):
        train.run(
            small_config(
                features, **{"erm.optimizer": "sgd", "erm.learning_rate": 1e38, "erm.l2": 1.0}
            ),
            workdir,
        )
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["run_id"] == new_id != old["run_id"]  # the swap was completed
    assert not list(tmp_path.glob(".run.p*"))


def test_recovery_moves_the_old_set_back_when_the_new_one_is_incomplete(tmp_path):
    workdir = tmp_path / "run"
    previous = tmp_path / ".run.previous-abc"
    previous.mkdir()
    ownership.mark(previous, "run", run_id="old", files=["results.json"], complete=True)
    (previous / "results.json").write_text("{}")
    partial = tmp_path / ".run.partial-abc"
    partial.mkdir()
    ownership.mark(partial, "run", run_id="abc", complete=False)
    workdir_lib.recover(workdir)
    assert (workdir / "results.json").read_text() == "{}"
    assert not previous.exists() and not partial.exists()


def test_recovery_leaves_foreign_directories_alone(tmp_path):
    before = plant_user_files(tmp_path / ".run.partial-xyz")
    workdir_lib.recover(tmp_path / "run")
    assert hashes(tmp_path / ".run.partial-xyz") == before


# ----------------------------------------------------------------------------- stale, mislabelled


def test_fingerprint_follows_symlinked_split_directories(tmp_path):
    """A split directory that is a symlink was outside the features fingerprint."""
    synthetic.write(tmp_path / "real", **SMALL)
    (tmp_path / "f").mkdir()
    for name in ("train", "val", "test"):
        (tmp_path / "f" / name).symlink_to(tmp_path / "real" / name)
    (tmp_path / "f" / "meta.json").write_bytes((tmp_path / "real" / "meta.json").read_bytes())
    before = features_lib.fingerprint(tmp_path / "f")
    time.sleep(0.01)
    synthetic.write(tmp_path / "real", **SMALL)  # the linked features change
    (tmp_path / "f" / "meta.json").write_bytes((tmp_path / "real" / "meta.json").read_bytes())
    assert features_lib.fingerprint(tmp_path / "f") != before


def test_results_record_the_features_fingerprint_and_analyze_checks_it(tmp_path, features):
    """analyze on run A after the features were regenerated by run B mixed them silently."""
    synthetic.write(tmp_path / "f", **SMALL)
    workdir = tmp_path / "run"
    report = train.run(small_config(tmp_path / "f", methods="erm,hsfm"), workdir)
    assert report["features_fingerprint"] == features_lib.fingerprint(tmp_path / "f")
    time.sleep(0.01)
    synthetic.write(tmp_path / "f", **SMALL)
    with pytest.raises(ValueError, match="the features changed since the run"):
        analyze.load_run(workdir)
    analyze.load_run(workdir, tmp_path / "f")  # asked for explicitly: a warning


def test_extra_test_split_val_with_a_val_fraction_is_refused(features, tmp_path):
    """--config.val_split.fraction=0.5 --config.extra_test_splits=val reported the fitting half."""
    config = small_config(features, **{"val_split.fraction": 0.5, "extra_test_splits": "val"})
    with pytest.raises(ValueError, match="extra_test_splits='val' names \\['val'\\]"):
        train.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("split", ["val", "test"])
def test_an_empty_split_is_one_error_within_seconds(tmp_path, split):
    """An empty val or test split ran every method, then failed on JSON inf."""
    synthetic.write(tmp_path / "f", **SMALL)
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    d = meta["feature_dim"]
    features_lib.write_split(tmp_path / "f", split, np.zeros((0, d), np.float32), [], [])
    meta["splits"][split] = 0
    (tmp_path / "f" / "meta.json").write_text(json.dumps(meta))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"{split}: the split is empty"):
        train.run(small_config(tmp_path / "f", methods="erm,hsfm"), tmp_path / "run")
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "indices, message",
    [
        (-1, "support_indices must be in \\[0, "),
        (10**6, "support_indices must be in \\[0, "),
        (0.5, "support_indices must be a 2-D integer array"),
    ],
)
def test_analyze_refuses_bad_support_indices(tmp_path, hsfm_run, indices, message):
    """support.npz with negative (or float, or too large) indices: analyze used other rows."""
    run = copy_run(hsfm_run, tmp_path / "run")
    with np.load(run / "support.npz") as npz:
        arrays = dict(npz)
    bad = arrays["support_indices"].astype(type(indices))
    bad[0, 0] = indices
    np.savez(run / "support.npz", **{**arrays, "support_indices": bad})
    with pytest.raises(ValueError, match=message):
        analyze.load_run(run)


def test_a_second_sweep_on_the_same_workdir_is_refused(tmp_path, features):
    """Three sweeps at once into one workdir gave orbax tracebacks."""
    holder = hold_lock_in_subprocess(tmp_path / "sweep")
    try:
        with pytest.raises(locks.Busy, match=f"sweep workdir .* in use .*pid {holder.pid}"):
            execute.run(small_config(features), "meta_lr=0.1", tmp_path / "sweep")
    finally:
        stop(holder)
    assert not (tmp_path / "sweep").exists()


def test_a_sweep_refuses_a_workdir_of_user_files(tmp_path, features):
    before = plant_user_files(tmp_path / "sweep")
    with pytest.raises(ValueError, match="sweep workdir .* was not made by hsfm_jax"):
        execute.run(small_config(features), "meta_lr=0.1", tmp_path / "sweep")
    assert hashes(tmp_path / "sweep") == before


def test_features_being_prepared_are_not_read(tmp_path, features):
    """A features directory being prepared by one run was read half-written by another."""
    holder = hold_lock_in_subprocess(features)
    try:
        with pytest.raises(ValueError, match="is being prepared by another run \\(host"):
            train.run(small_config(features), tmp_path / "run")
        config = small_config(features, prepare="synthetic")
        with pytest.raises(locks.Busy, match="features_dir .* in use by another run"):
            inputs.prepare_features(config)
    finally:
        stop(holder)


# ----------------------------------------------------------------------------- one error: line


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"seed": 10**23}, "seed must be an integer in \\[0, 4294967295\\]"),
        ({"bootstrap": 10**12}, "bootstrap must be an integer in \\[0, 1000000\\]"),
        ({"num_seeds": 10**20}, "num_seeds must be an integer in \\[1, 100000\\]"),
        ({"erm.steps": 10**20}, "erm.steps must be an integer > 0 and at most 2147483647"),
    ],
)
def test_huge_integers_are_one_line_before_anything_runs(tmp_path, features, overrides, message):
    """--config.seed=10**23, --config.bootstrap=10**12: OverflowError after every method ran."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        train.run(small_config(features, **overrides), tmp_path / "run")
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "run").exists()


def test_sweep_spec_with_huge_seeds_is_one_line(tmp_path, features):
    """seeds=99999999999999999999 in a sweep spec."""
    with pytest.raises(ValueError, match="sweep: seeds must be an integer >= 1 and at most 100000"):
        execute.run(small_config(features), "seeds=99999999999999999999", tmp_path / "sweep")


def test_cli_missing_config_and_cache_dir_a_file_are_one_line(tmp_path, features, main_cli):
    """--config=nope.py and --compilation_cache_dir=<a file>."""
    proc = main_cli("--config=nope.py", f"--workdir={tmp_path / 'run'}", "--quiet")
    assert proc.returncode == 1 and len(error_lines(proc)) == 1 and "nope.py" in proc.stderr
    (tmp_path / "file").write_text("keep")
    proc = main_cli(
        "--config=experiments/configs/synthetic.py",
        f"--config.features_dir={features}",
        "--config.prepare=",
        f"--workdir={tmp_path / 'run'}",
        f"--compilation_cache_dir={tmp_path / 'file'}",
    )
    assert proc.returncode == 1 and error_lines(proc) == [
        f"error: --compilation_cache_dir {tmp_path / 'file'}: cannot be used (Not a directory)"
    ]
    assert (tmp_path / "file").read_text() == "keep"


def test_workdir_dot_is_refused_before_anything_runs(tmp_path, features, monkeypatch):
    """--workdir=. failed with EBUSY after every method ran, results stranded."""
    (tmp_path / "here").mkdir()
    ownership.mark(tmp_path / "here", "run", run_id="x", files=[])  # even an hsfm_jax run
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(ValueError, match="workdir . is the current directory or contains it"):
        train.run(small_config(features), ".")
    with pytest.raises(ValueError, match="is the current directory or contains it"):
        train.run(small_config(features), "..")


def test_a_full_disk_is_one_line(capsys):
    """A full disk for the workdir or the features."""

    def write():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/wb/results.json")

    with pytest.raises(SystemExit) as exit_info:
        cli.guarded(write)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: /runs/wb/results.json: No space left on device"
    ]


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        cli.guarded(lambda: 1 / 0)


@pytest.mark.parametrize("damage", ["truncated", "not a zip"])
def test_a_damaged_head_npz_is_one_line(tmp_path, damage):
    """A truncated or non-zip head.npz."""
    synthetic.write(tmp_path / "f", **SMALL)
    d = json.loads((tmp_path / "f" / "meta.json").read_text())["feature_dim"]
    features_lib.write_head(tmp_path / "f", np.zeros((2, d)), np.zeros(2))
    head = tmp_path / "f" / "head.npz"
    head.write_bytes(head.read_bytes()[:100] if damage == "truncated" else b"not a zip file")
    with pytest.raises(ValueError, match="head.npz: not a readable .npz"):
        features_lib.load(tmp_path / "f")


def test_a_deeply_nested_meta_json_is_one_line(tmp_path):
    """A meta.json nested 200k levels deep."""
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "meta.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match="meta.json: nested too deeply"):
        features_lib.load(tmp_path / "f")


def test_analyze_refuses_a_config_json_that_is_not_an_object(tmp_path, hsfm_run):
    """config.json that is []."""
    run = copy_run(hsfm_run, tmp_path / "run")
    (run / "config.json").write_text("[]")
    with pytest.raises(ValueError, match="config.json: expected a JSON object, got list"):
        analyze.load_run(run)


# ----------------------------------------------------------------------------- also seen


def test_written_files_and_directories_follow_the_umask(tmp_path):
    """mkstemp / mkdtemp made 0600 / 0700 files, unreadable to colleagues."""
    old = os.umask(0o022)
    try:
        synthetic.write(tmp_path / "f", **SMALL)
        with atomic.atomic_write(tmp_path / "x.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "f" / "meta.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "f" / "train").stat().st_mode & 0o777 == 0o755


def test_a_test_group_with_no_example_warns(tmp_path, caplog):
    synthetic.write(tmp_path / "f", **SMALL)
    groups = np.load(tmp_path / "f" / "test" / "groups.npy")
    np.save(tmp_path / "f" / "test" / "groups.npy", np.where(groups == 3, 2, groups))
    with caplog.at_level(py_logging.WARNING):
        inputs.load(small_config(tmp_path / "f"))
    assert "no example of group(s)" in caplog.text


def test_degenerate_features_warn(tmp_path, caplog):
    """Features at 1e-20 gave WGA 0.0 with no warning."""
    synthetic.write(tmp_path / "f", **SMALL)
    for split in ("train", "val", "test"):
        path = tmp_path / "f" / split / "features.npy"
        np.save(path, (np.load(path) * 1e-20).astype(np.float32))
    with caplog.at_level(py_logging.WARNING):
        inputs.load(small_config(tmp_path / "f"))
    assert "features are degenerate" in caplog.text


def test_a_corrupted_loop_checkpoint_starts_afresh(tmp_path, caplog):
    """A corrupted orbax checkpoint gave an orbax-internal line and 'Event loop is closed'."""
    import jax.numpy as jnp

    from hsfm_jax.runtime import epoch_loop

    options = epoch_loop.Options(
        checkpoint_dir=tmp_path / "ckpt", checkpoint_seconds=0, progress=False, name="loop"
    )
    init = lambda: {"w": jnp.zeros(3)}
    chunk = lambda state, epoch: ({"w": state["w"] + 1}, {"loss": jnp.ones((1, 2))})
    epoch_loop.run(init, chunk, epochs=4, chunk_epochs=2, options=options)
    for path in (tmp_path / "ckpt").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    with caplog.at_level(py_logging.WARNING):
        out = epoch_loop.run(init, chunk, epochs=6, chunk_epochs=2, options=options)
    assert out.resumed_from == 0 and out.state["w"].tolist() == [3.0, 3.0, 3.0]
    assert "cannot be read" in caplog.text


def test_the_program_cache_never_unpickles_an_entry_it_did_not_write(tmp_path, caplog):
    """The program cache unpickled .pkl files from ~/.cache: whoever could write there ran code."""
    import jax.numpy as jnp

    from hsfm_jax.core import heads
    from hsfm_jax.runtime import divergence, program_cache

    program_cache.enable(tmp_path / "programs")
    try:
        head = heads.LinearHead(jnp.ones((2, 2, 3)), jnp.zeros((2, 2)))
        x = jnp.ones((4, 3))
        divergence._finite_per_seed(head, x)
        (entry,) = (tmp_path / "programs").glob("*.pkl")
        marker = tmp_path / "pwned"

        class Exploit:
            def __reduce__(self):
                return (Path.touch, (marker,))

        import pickle

        entry.write_bytes(pickle.dumps(Exploit()))  # a planted entry under the right name
        fresh = program_cache.Program(divergence._finite_per_seed.__wrapped__)
        with caplog.at_level(py_logging.WARNING):
            assert fresh(head, x).tolist() == [True, True]
        assert not marker.exists()
        assert "not signed by this cache" in caplog.text
        key = tmp_path / "programs" / ".key"
        assert key.stat().st_mode & 0o777 == 0o600
    finally:
        program_cache.disable()


def test_a_finite_but_exploding_loss_is_divergence():
    """Huge-but-finite learning rates gave a normal-looking table with losses around 1e29."""
    import jax.numpy as jnp

    from hsfm_jax.core import heads
    from hsfm_jax.runtime import divergence

    rows = {"hsfm": heads.LinearHead(jnp.ones((2, 2, 3)), jnp.zeros((2, 2)))}
    splits = {"val": jnp.ones((4, 3))}
    history = {"outer_loss_after": np.array([[0.7, 0.6, 0.5], [0.7, 3e4, 1e29]])}
    with pytest.raises(divergence.Diverged, match="seed 1, first non-finite at epoch 3"):
        divergence.check_rows("hsfm", rows, splits, history)
    divergence.check_rows("hsfm", rows, splits, {"edit_norm": np.full((2, 3), 1e29)})


def test_a_corrupted_sweep_checkpoint_is_one_line(tmp_path, features):
    """A corrupted orbax checkpoint of a sweep program: one error naming it, nothing removed."""
    config = small_config(features, **{"hsfm.epochs": 4})
    run = lambda **hooks: execute.run(
        config, "meta_lr=0.1", tmp_path / "sweep", checkpoint_every=2, progress=False, **hooks
    )
    with pytest.raises(execute.Interrupted):
        run(stop_after_epochs=2)
    checkpoints = tmp_path / "sweep" / execute.CHECKPOINTS_DIR
    for path in checkpoints.rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    before = hashes(tmp_path / "sweep")
    with pytest.raises(ValueError, match="checkpoint .*program_000 cannot be read"):
        run()
    assert hashes(tmp_path / "sweep") == before


def test_two_programs_asking_whether_features_are_locked_do_not_see_each_other(tmp_path):
    """3-process sweeps: processes 1 and 2 both probe the features lock; one saw the other's
    probe and stopped with "being prepared by another run (holder unknown)"."""
    import threading

    import filelock

    from hsfm_jax.runtime import locks

    directory = tmp_path / "features"
    directory.mkdir()
    probe = filelock.FileLock(locks.lock_path(directory), timeout=0, thread_local=False)
    probe.acquire()  # another program's probe, held for an instant
    threading.Timer(0.1, probe.release).start()
    assert locks.is_held(directory) is None
    with locks.hold(directory, "features_dir"):  # a run preparing them: reported, with its pid
        holder = locks.is_held(directory, patience_s=0.05)
    assert holder is not None and f"pid {os.getpid()}" in holder
