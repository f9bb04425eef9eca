"""A fine-grained-size HSFM run killed with SIGKILL, resumed by rerunning the command, against
the same run uninterrupted: the resumed run must give the same results, with progress visible
while it runs.

    python -m benchmarks.resume_finegrained [--epochs=4] [--kill_after=2] [--seeds=1]
        [--out=benchmarks/results/resume_finegrained_cpu.json]

The problem has the paper's fine-grained sizes (Sec. 8.2 with ResNet-50 features): C = 200
classes, d = 2048, 16 support embeddings per class (S = 3200), a hard set of k = 64 per class
(|Q| = 12,800), T = 15, KH = 15. The features are `hsfm_jax.data.synthetic` ones of that shape (the
benchmark needs no CUB / Cars / Flowers features): 30 train images per class, 200 val and
200 test per class, no group labels; val is split 50/50 as the protocol says. The config is
`experiments/configs/cub_resnet50_pretrained.py` (finegrained.py's CUB "pretrained" row) with its values untouched except
``hsfm.epochs`` (the paper's 40 take about an hour per run on a 2-core CPU; the chunked loop is
the same program whatever the count), ``hsfm.hard_set_size = 64`` (the paper's k; the CUB config
lowers it to the largest class of CUB's val half), ``num_seeds`` and a checkpoint after every
chunk (``checkpoint_seconds = 0``; ``chunk_epochs`` is the fine-grained default, 1).

Three runs of ``python -m experiments.main`` in subprocesses: uninterrupted; the same command in
another workdir, sent SIGKILL once `kill_after` epochs are checkpointed; then that command again,
which resumes. The resumed run's results.json rows, history.json and support.npz must equal the
uninterrupted run's exactly. The killed run's progress bar (stderr, tqdm) is kept as it was
printed when it was killed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.stream_erm import _processor

ROOT = Path(__file__).resolve().parents[1]
SIZES = dict(num_classes=200, num_core=512, num_spurious=512, num_noise=1024)


def _command(features_dir: Path, workdir: Path, args) -> list[str]:
    overrides = {
        "features_dir": features_dir,
        "prepare": "synthetic",
        "methods": "erm,hsfm",
        "num_seeds": args.seeds,
        "checkpoint_seconds": 0,
        "hsfm.epochs": args.epochs,
        "hsfm.hard_set_size": 64,
        "synthetic.with_groups": False,
        "synthetic.num_train": 30 * SIZES["num_classes"],
        "synthetic.val_per_group": 1,  # C x C groups of one: 200 per class
        "synthetic.test_per_group": 1,
        **{f"synthetic.{k}": v for k, v in SIZES.items()},
    }
    return [
        sys.executable,
        "-m",
        "experiments.main",
        "--config=experiments/configs/cub_resnet50_pretrained.py",
        f"--workdir={workdir}",
        *[f"--config.{k}={v}" for k, v in overrides.items()],
    ]


def _run(command, log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as err:
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    if done.returncode:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{tail}")
    return time.perf_counter() - start


def _checkpointed_epochs(workdir: Path) -> list[int]:
    root = workdir.parent / f".{workdir.name}.ckpt"
    return sorted(int(p.name) for p in root.glob("hsfm-*/*") if p.name.isdigit())


def _kill_after(command, workdir: Path, epochs: int, log: Path) -> tuple[float, list[int]]:
    start = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        while proc.poll() is None and not any(e >= epochs for e in _checkpointed_epochs(workdir)):
            time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit(f"the run ended before epoch {epochs} was checkpointed; see {log}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return time.perf_counter() - start, _checkpointed_epochs(workdir)


def _last_progress_line(log: Path) -> str:
    """The last tqdm refresh of the hsfm bar in a log (tqdm rewrites its line with \\r)."""
    frames = [f.strip() for f in log.read_text().replace("\r", "\n").splitlines()]
    return next((f for f in reversed(frames) if f.startswith("hsfm:")), "")


def _differences(got: Path, want: Path) -> list[str]:
    out = []
    results = [json.loads((d / "results.json").read_text()) for d in (got, want)]
    if results[0]["methods"] != results[1]["methods"]:
        out.append("results.json methods")
    history = [json.loads((d / "history.json").read_text())["history"] for d in (got, want)]
    if history[0] != history[1]:
        out.append("history.json")
    support = [np.load(d / "support.npz") for d in (got, want)]
    for name in ("support", "support_indices"):
        if not np.array_equal(support[0][name], support[1][name]):
            out.append(f"support.npz {name}")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--kill_after", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/resume_finegrained_cpu.json")
    args = parser.parse_args(argv)
    if not 0 < args.kill_after < args.epochs:
        raise SystemExit(f"--kill_after must be in [1, --epochs), got {args.kill_after}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        features_dir = tmp / "features"
        uninterrupted, resumed = tmp / "uninterrupted", tmp / "resumed"
        logs = {name: tmp / f"{name}.log" for name in ("uninterrupted", "killed", "resumed")}
        # The first run also writes the features; time the three runs on existing ones.
        subprocess.run(
            [*_command(features_dir, tmp / "prepare", args), "--config.methods=erm"],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = {
            "uninterrupted": _run(
                _command(features_dir, uninterrupted, args), logs["uninterrupted"]
            )
        }
        command = _command(features_dir, resumed, args)
        seconds["killed"], checkpoints = _kill_after(
            command, resumed, args.kill_after, logs["killed"]
        )
        seconds["resumed"] = _run(command, logs["resumed"])
        report = json.loads((resumed / "results.json").read_text())
        meta = json.loads((features_dir / "meta.json").read_text())
        record = {
            "processor": _processor(),
            "cpu_count": os.cpu_count(),
            "problem": {k: meta[k] for k in ("num_classes", "feature_dim", "splits")},
            "split_sizes": report["split_sizes"],
            "command": " ".join(str(c) for c in command[1:]),
            "epochs": args.epochs,
            "seeds": args.seeds,
            "checkpointed_epochs_at_kill": checkpoints,
            "resumed_from_epoch": report["resumed_from_epoch"],
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "progress_when_killed": _last_progress_line(logs["killed"]),
            "progress_when_resumed_run_ended": _last_progress_line(logs["resumed"]),
            "differences": _differences(resumed, uninterrupted),
        }
    record["same_results"] = not record["differences"]
    print(json.dumps(record, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    if not record["same_results"]:
        raise SystemExit(
            f"the resumed run differs from the uninterrupted one: {record['differences']}"
        )


if __name__ == "__main__":
    main()
