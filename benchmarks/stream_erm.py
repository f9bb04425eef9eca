"""ERM-head epochs per second: train streamed from the host memmap against train on the device.

    python -m benchmarks.stream_erm [--rows=200000] [--dim=512] [--batch_size=1024] [--epochs=3] [--repeats=5]
        [--out=benchmarks/results/stream_erm_cpu.json]

Writes a float16 train split of `rows` x `dim` (a memmap in a temp dir, which fits both ways),
then times (median of `repeats`, after a call that compiles) `epochs` epochs of the ERM head:
`erm.fit` on device arrays (in memory) and `erm.fit_stream` (streamed), without and with the
prefetching thread (`prefetch_depth=2`), in minibatch (`batch_size`) and full batch (one step per epoch).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hsfm_jax.data import features
from hsfm_jax.methods import erm


def _write(path: Path, rows: int, dim: int) -> features.Split:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, rows).astype(np.int32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, dim))
    for start in range(0, rows, 65536):
        block = rng.normal(size=(min(65536, rows - start), dim)).astype(np.float16)
        block[:, 0] += 2.0 * labels[start : start + block.shape[0]] - 1.0
        out[start : start + block.shape[0]] = block
    out.flush()
    del out
    return features.Split(np.load(path, mmap_mode="r"), labels, np.zeros(rows, np.int32))


def _processor() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls after one that compiles."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/stream_erm_cpu.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        split = _write(Path(tmp) / "features.npy", args.rows, args.dim)
        key = jax.random.key(0)
        steps_per_epoch = -(-args.rows // args.batch_size)
        modes = {
            "minibatch": dict(batch_size=args.batch_size, steps=args.epochs * steps_per_epoch),
            "full_batch": dict(batch_size=0, steps=args.epochs),
        }
        on_device = split.to_arrays(jnp.float32)
        timings = {}
        for mode, settings in modes.items():
            recipe, rates = erm.Recipe(num_classes=2, **settings), erm.Rates()
            fit = functools.partial(
                erm.fit, on_device.features, on_device.labels, key, recipe, rates
            )
            streamed = functools.partial(erm.fit_stream, split, key, recipe, rates)
            prefetched = functools.partial(streamed, reading=erm.Reading(prefetch_depth=2))
            timings[f"{mode}/in_memory"] = _seconds(fit, args.repeats)
            timings[f"{mode}/stream"] = _seconds(streamed, args.repeats)
            timings[f"{mode}/stream_prefetch_2"] = _seconds(prefetched, args.repeats)
    record = {
        "rows": args.rows,
        "dim": args.dim,
        "dtype_on_disk": "float16",
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "processor": _processor(),
        "cpu_cores": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "epochs_per_second": {k: args.epochs / v for k, v in timings.items()},
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    for name, rate in record["epochs_per_second"].items():
        print(f"{name:32s} {rate:8.2f} epochs/s")


if __name__ == "__main__":
    main()
