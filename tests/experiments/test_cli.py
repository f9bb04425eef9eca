"""experiments/main.py: writes the three result files; bad input is a one-line error."""

import json

import numpy as np
import pytest

from hsfm_jax.data import synthetic

pytestmark = pytest.mark.slow  # each test runs an entry point in a new process

SMALL = [
    "--config.methods=erm,hsfm",  # the baselines have their own tests
    "--config.num_seeds=2",
    "--config.hsfm.epochs=3",
    "--config.erm.steps=100",
    "--config.synthetic.num_train=400",
    "--config.synthetic.val_per_group=20",
    "--config.synthetic.test_per_group=20",
]


def _assert_one_line_error(proc, message):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, proc.stderr
    assert message in error_lines[0], error_lines[0]


def test_writes_results(tmp_path, main_cli):
    proc = main_cli(
        "--config=experiments/configs/synthetic.py",
        f"--config.features_dir={tmp_path / 'features'}",
        f"--workdir={tmp_path / 'run'}",
        *SMALL,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("config.json", "results.json", "results.md"):
        assert (tmp_path / "run" / name).is_file()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["methods"]) >= {"erm", "hsfm", "hsfm_last"}
    assert len(results["methods"]["hsfm"]["test"]["wga"]["per_seed"]) == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["num_seeds"] == 2
    assert "| hsfm | 2 |" in proc.stdout


def test_missing_features_dir(tmp_path, main_cli):
    proc = main_cli(
        "--config=experiments/configs/waterbirds_resnet50.py",
        f"--config.features_dir={tmp_path / 'nowhere'}",
        f"--workdir={tmp_path / 'run'}",
    )
    _assert_one_line_error(proc, "nowhere: feature directory does not exist")


def test_features_dir_not_set(tmp_path, main_cli):
    proc = main_cli("--config=experiments/configs/waterbirds_resnet50.py", f"--workdir={tmp_path}")
    _assert_one_line_error(proc, "config.features_dir is not set")


@pytest.fixture
def features_dir(tmp_path):
    path = tmp_path / "features"
    synthetic.write(path, num_train=300, val_per_group=10, test_per_group=10)
    return path


def test_corrupt_meta(features_dir, tmp_path, main_cli):
    (features_dir / "meta.json").write_text('{"format_version": 1,')
    proc = main_cli(
        "--config=experiments/configs/synthetic.py",
        f"--config.features_dir={features_dir}",
        "--config.prepare=",
        f"--workdir={tmp_path / 'run'}",
    )
    _assert_one_line_error(proc, "meta.json: not valid JSON")


def test_wrong_shapes(features_dir, tmp_path, main_cli):
    np.save(features_dir / "val" / "features.npy", np.zeros((40, 7), np.float32))
    proc = main_cli(
        "--config=experiments/configs/synthetic.py",
        f"--config.features_dir={features_dir}",
        "--config.prepare=",  # these features are not the config's to remake
        f"--workdir={tmp_path / 'run'}",
    )
    _assert_one_line_error(
        proc, "val/features.npy: expected shape (40, 32) from meta.json, got (40, 7)"
    )


def test_class_too_small_for_hard_set(features_dir, tmp_path, main_cli):
    proc = main_cli(
        "--config=experiments/configs/synthetic.py",
        f"--config.features_dir={features_dir}",
        "--config.prepare=",
        "--config.hsfm.hard_set_size=500",
        f"--workdir={tmp_path / 'run'}",
        *SMALL[:3],
    )
    _assert_one_line_error(
        proc, "val: hsfm.hard_set_size: class 0 has 20 examples, fewer than the 500"
    )


def test_unknown_method(features_dir, tmp_path, main_cli):
    proc = main_cli(
        "--config=experiments/configs/synthetic.py",
        f"--config.features_dir={features_dir}",
        "--config.methods=erm,foo",
        f"--workdir={tmp_path / 'run'}",
    )
    _assert_one_line_error(proc, "methods: unknown method(s) ['foo']")


def test_compiled_programs_are_cached_across_runs(tmp_path, main_cli):
    cache = tmp_path / "cache"
    args = (
        "--config=experiments/configs/synthetic.py",
        f"--config.features_dir={tmp_path / 'features'}",
        f"--compilation_cache_dir={cache}",
        *SMALL,
    )
    first = main_cli(*args, f"--workdir={tmp_path / 'run1'}")
    assert first.returncode == 0, first.stderr
    # a program cache entry is <name>.new.pkl until a later run has loaded and checked it
    listing = lambda: {p.name.replace(".new.pkl", ".pkl") for p in cache.rglob("*") if p.is_file()}
    entries = listing()
    assert len(entries) >= 3  # ERM, HSFM, the evaluator at least
    # whole executables too (hsfm_jax.runtime.program_cache), so a rerun neither traces nor lowers them
    assert {"fit_seeds", "run_chunk_runs", "_evaluate_seeds"} <= {  # HSFM: its rate grid
        p.name.split("-")[0] for p in (cache / "programs").glob("*.new.pkl")
    }
    second = main_cli(*args, f"--workdir={tmp_path / 'run2'}")
    assert second.returncode == 0, second.stderr
    assert listing() == entries  # all hits, none new
    assert not list(cache.glob("programs/*.new.pkl"))  # every program loaded and checked
    results = [json.loads((tmp_path / r / "results.json").read_text()) for r in ("run1", "run2")]
    for row, report in results[0]["methods"].items():
        assert report["test"] == results[1]["methods"][row]["test"], row
    off = main_cli(*args, f"--workdir={tmp_path / 'run3'}", "--nocompilation_cache")
    assert off.returncode == 0, off.stderr
