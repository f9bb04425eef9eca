"""`benchmarks/gpu.py --quick`: the GPU benchmark script's CPU dry run, end to end, as CI runs it.

Runs as a subprocess (the command a GPU user types), so it needs PyTorch and scikit-learn, which
CI installs (the `export` and `test` extras).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, timeout=900):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.torch
def test_quick_dry_run_writes_every_section(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    out = tmp_path / "gpu_out"
    proc = _run(out, "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "gpu.json").read_text())
    assert results["complete"] and results["quick"]
    env = results["environment"]
    for field in ("jax_device", "jax", "jaxlib", "torch", "sklearn", "cpu"):
        assert env[field], field
    assert env["jax_device"].startswith("cpu")

    (size,) = results["meta_gradient"]["sizes"]
    assert size["problem"]["name"] == "smoke"
    for timing in (size["seconds"], size["cold_seconds"]):
        assert set(timing) == {"autodiff", "vjp", "gram", "auto", "torch"}
        assert all(t > 0 for t in timing.values())
    # The first call compiles: it cannot be faster than the warm median.
    assert size["cold_seconds"]["auto"] > size["seconds"]["auto"]

    run = results["whole_run"]
    assert run["jax"]["cold_s"] > run["jax"]["warm_s"] > 0
    assert run["torch"]["warm_s"] > 0
    seeds = [r["num_seeds"] for r in results["seeds"]["rows"]]
    assert seeds == [1, 2]
    assert results["seeds"]["rows"][0]["warm_over_one_seed"] == 1.0

    dfr = results["dfr"]
    assert dfr["jax"]["cold_s"] > dfr["jax"]["warm_s"] > 0 and dfr["sklearn"]["warm_s"] > 0
    assert 0.0 <= dfr["jax_test_wga"] <= 1.0 and 0.0 <= dfr["sklearn_test_wga"] <= 1.0

    precision = results["precision"]
    summary = precision["summary"]
    assert len(precision["default"]["hsfm_seeds"]) == len(precision["highest"]["hsfm_seeds"]) == 2
    # XLA:CPU runs every float32 matmul in float32: the two precisions give the same heads.
    assert summary["any_selected_head_accuracy_changed"] is False
    assert summary["hsfm_best_weight_max_relative_difference"] == 0.0
    assert summary["dfr_weight_relative_difference"] == 0.0

    log = (out / "gpu.log").read_text()
    for section in ("meta-gradient smoke", "whole run", "seeds: 2 vmapped", "DFR", "precision"):
        assert section in log, section
    assert results["table"] in log


def test_outdir_that_is_a_file_is_one_error_line(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("keep")
    proc = _run(path, "--quick", timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"error: {path}: exists and is not a directory"]
    assert path.read_text() == "keep"
