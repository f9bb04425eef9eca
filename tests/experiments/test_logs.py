"""A run's log: one line per method with its time, and no line per compiled program."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole run in a new process

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("erm", "hsfm")


def test_a_synthetic_run_logs_one_line_per_method_and_none_per_program(tmp_path):
    command = [
        sys.executable,
        "-m",
        "experiments.main",
        "--config=experiments/configs/synthetic.py",
        f"--workdir={tmp_path / 'run'}",
        f"--config.features_dir={tmp_path / 'features'}",
        f"--config.methods={','.join(METHODS)}",
        "--config.synthetic.num_train=400",
        "--config.synthetic.val_per_group=20",
        "--config.synthetic.test_per_group=40",
        "--config.num_seeds=2",
        "--config.erm.steps=50",
        "--config.hsfm.epochs=2",
        "--config.hsfm.hard_set_size=10",
        "--quiet",
    ]
    # A fresh compilation cache: every program is built (and kept) by this run.
    env = {**os.environ, "HSFM_JAX_CACHE_DIR": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert not [line for line in lines if "compilation_cache" in line], proc.stderr
    for name in METHODS:
        timed = [
            line
            for line in lines
            if re.search(rf"\] {name}: \d+ row\(s\) in [\d.]+ s( \(resolved .*\))?$", line)
        ]
        assert len(timed) == 1, proc.stderr
    # A handful of lines whatever the number of programs compiled (dozens here): the cache
    # directory, the features written, a line per method, the results' place, and the methods'
    # own notes (HSFM's feature scale).
    assert len(lines) <= 10, proc.stderr
    assert list((tmp_path / "cache" / "programs").glob("*.pkl"))
