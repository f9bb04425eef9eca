r"""The event-file writer of `hsfm_jax.reporting.metric_writers` against tensorboardX on the same scalars.

  PYTHONPATH=<dir with tensorboardX> python -m benchmarks.metric_writers \
      --out=benchmarks/results/metric_writers_cpu.json

The curves of one main-job-sized run: 7 methods x 5 seeds, 12 tags x 40 steps each (HSFM's
history is ~14 tags x 40 epochs per seed). Times (best of `--repeats`) the import and the
writing of all runs by each writer, and records each writer's installed size. tensorboardX is
optional: without it only this project's writer is timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS, SEEDS, TAGS, STEPS = 7, 5, 12, 40


def _curves(rng) -> dict[str, np.ndarray]:
    return {f"tag_{t}/value": rng.normal(size=STEPS).astype(np.float32) for t in range(TAGS)}


def _import_seconds(module: str) -> float:
    """Seconds to import `module` in a fresh interpreter that has imported hsfm_jax (and so
    jax and numpy, as a run has), best of 3."""
    code = (
        "import hsfm_jax, time; t = time.perf_counter(); "
        f"import {module}; print(time.perf_counter() - t)"
    )
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(3)
    ]
    return min(runs)


def _size_bytes(module: str) -> int:
    spec = importlib.util.find_spec(module)
    root = Path(spec.origin).parent
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def write_ours(root: Path, curves) -> None:
    from hsfm_jax.reporting import metric_writers

    steps = np.arange(1, STEPS + 1)
    for m in range(METHODS):
        for s in range(SEEDS):
            metric_writers.write_scalars(
                root / f"m{m}" / f"seed_{s}", curves, dict.fromkeys(curves, steps)
            )


def write_tensorboardx(root: Path, curves) -> None:
    from tensorboardX import SummaryWriter

    for m in range(METHODS):
        for s in range(SEEDS):
            with SummaryWriter(str(root / f"m{m}" / f"seed_{s}")) as writer:
                for step in range(STEPS):
                    for tag, values in curves.items():
                        writer.add_scalar(tag, float(values[step]), step + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    curves = _curves(np.random.default_rng(0))
    writers = {
        "hsfm_jax.reporting.metric_writers": ("hsfm_jax.reporting.metric_writers", write_ours)
    }
    if importlib.util.find_spec("tensorboardX") is not None:
        writers["tensorboardX"] = ("tensorboardX", write_tensorboardx)
    result = {
        "command": "python -m benchmarks.metric_writers",
        "machine": platform.processor() or platform.machine(),
        "workload": f"{METHODS} methods x {SEEDS} seeds, {TAGS} tags x {STEPS} steps each",
        "writers": {},
    }
    for name, (module, write) in writers.items():
        times = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                write(Path(tmp), curves)
                times.append(time.perf_counter() - start)
        result["writers"][name] = {
            "write_s": min(times),
            "import_s": _import_seconds(module),
            "package_bytes": _size_bytes(module.split(".")[0])
            if name == "tensorboardX"
            else Path(importlib.util.find_spec(module).origin).stat().st_size,
            "extra_dependencies": ["protobuf"] if name == "tensorboardX" else [],
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
