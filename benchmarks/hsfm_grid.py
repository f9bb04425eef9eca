"""HSFM with its val-selected rate grid (`hsfm.grid`) against the fixed configured rates, ERM, DFR
and GroupDRO, on every feature set of the project; and the grid's wall time over one setting's.

    python -m benchmarks.hsfm_grid --workdir=/tmp/hsfm_grid --out=benchmarks/results/hsfm_grid.json

Feature sets (`--sets`, comma-separated; default all):
  synthetic        experiments/configs/synthetic.py (features written under --workdir)
  unit_waterbirds  the same synthetic (unit-scale) features with the Waterbirds ResNet-50 config
                   (Table 11 rates), as a user with other features would first try
  unit_waterbirds_rms  the same, with hsfm.rate_units=feature_rms
  digit_dominoes   experiments/configs/digit_dominoes.py (exported under --workdir)
  mfd_pre, mfd_ft  the MobileNetV2 Fashion-MNIST dominoes configs on the features in
                   --mfd_pre / --mfd_ft (read-only)

For each set: one `experiments.train.run` with --methods (erm,dfr,group_dro,hsfm) and the config's
seeds (5) — rows erm, dfr, group_dro, hsfm (grid-selected), hsfm_fixed (configured rates) —
then the wall time of HSFM's compiled program for the configured rates alone (S seeds) and for
the grid (K x S runs), interleaved, best of --repeats: their ratio is the grid's cost. Writes the
JSON (--out) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import train
from experiments.configs import (
    digit_dominoes,
    mnist_fashion_dominoes_mobilenet_v2,
    synthetic,
    waterbirds_resnet50,
)
from hsfm_jax import methods
from hsfm_jax.data import inputs
from hsfm_jax.methods.hsfm import algorithm as hsfm
from hsfm_jax.methods.hsfm import grid as hsfm_grid
from hsfm_jax.methods.hsfm import method as hsfm_method

SETS = (
    "synthetic",
    "unit_waterbirds",
    "unit_waterbirds_rms",
    "digit_dominoes",
    "mfd_pre",
    "mfd_ft",
)
ROWS = ("erm", "dfr", "group_dro", "hsfm_fixed", "hsfm")


def _config(name: str, args):
    workdir = Path(args.workdir)
    if name in ("synthetic", "unit_waterbirds", "unit_waterbirds_rms"):
        config = synthetic.get_config() if name == "synthetic" else waterbirds_resnet50.get_config()
        config.features_dir = str(workdir / "synthetic_features")
        config.prepare = "synthetic"
        flags = f"--config.features_dir={config.features_dir} --config.prepare=synthetic"
        path = "synthetic.py" if name == "synthetic" else "waterbirds_resnet50.py"
    elif name == "digit_dominoes":
        config = digit_dominoes.get_config()
        config.features_dir = str(workdir / "digit_dominoes_features")
        config.export.weights = str(workdir / "digit_dominoes_digit_cnn.pt")
        flags = (
            f"--config.features_dir={config.features_dir} "
            f"--config.export.weights={config.export.weights}"
        )
        path = "digit_dominoes.py"
    else:
        config = mnist_fashion_dominoes_mobilenet_v2.mobilenet_v2_config(name == "mfd_ft")
        config.features_dir = args.mfd_ft if name == "mfd_ft" else args.mfd_pre
        config.prepare = ""
        flags = f"--config.features_dir={config.features_dir} --config.prepare="
        path = (
            "mnist_fashion_dominoes_mobilenet_v2.py"
            if name == "mfd_ft"
            else "mnist_fashion_dominoes_mobilenet_v2_pretrained.py"
        )
    if name.endswith("_rms"):
        config.hsfm.rate_units = "feature_rms"
        flags += " --config.hsfm.rate_units=feature_rms"
    config.num_seeds = 5
    config.methods = args.methods
    command = (
        f"python -m experiments.main --config=experiments/configs/{path} "
        f"--workdir=runs/{name} {flags} --config.methods={config.methods}"
    )
    return config, command


def _summary(entry: dict) -> dict:
    out = {}
    for split in ("val", "test"):
        for metric in ("wga", "mean_acc"):
            if metric in entry.get(split, {}):
                m = entry[split][metric]
                out[f"{split}_{metric}"] = {"mean": m["mean"], "std": m["std"]}
    out["test_wga_per_seed"] = entry["test"]["wga"]["per_seed"]
    return out


def run_set(name: str, args) -> dict:
    config, command = _config(name, args)
    workdir = Path(args.workdir) / "runs" / name
    report = train.run(config, workdir / "all")
    hsfm_report = report["methods"]["hsfm"]
    record = {
        "command": command,
        "grid": config.hsfm.grid,
        "rate_units": config.hsfm.rate_units,
        "rows": {row: _summary(report["methods"][row]) for row in ROWS if row in report["methods"]},
        "selected": hsfm_report["grid"]["selected"],
        "selected_rates": hsfm_report["grid"]["selected_rates"],
        "settings": hsfm_report["grid"]["settings"],
        "feature_scale": hsfm_report["feature_scale"],
        "timings_s": report["timings_s"],
    }
    record["hsfm_program_s"] = program_times(config, args.repeats)
    return record


def program_times(config, repeats: int) -> dict:
    """Wall time of HSFM's compiled program (init and every epoch) for the configured rates
    (S seeds) and for the grid (K settings x S seeds), interleaved, best of `repeats`."""
    data = inputs.load(config)
    hsfm_config = methods.method_config(config, "hsfm")
    hsfm_config.update(hsfm_method.check(hsfm_config, data))
    arrays = hsfm_method.device_data(data)
    static = hsfm_method.settings(hsfm_config, data)
    keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    head = hsfm_method.initial_head(hsfm_config, data, arrays.train, keys)
    grid_rates = hsfm_grid.settings(hsfm_config)
    rates = hsfm_grid.stack(grid_rates, config.num_seeds, data.dtype)
    runs = keys[np.tile(np.arange(config.num_seeds), len(grid_rates))]
    first = jnp.asarray(0, jnp.int32)

    def fixed():
        return hsfm.run_seeds(
            arrays, head, hsfm_method.rates(hsfm_config, data.dtype), keys, settings=static
        )

    def grid():
        state = hsfm.init_runs(arrays, head, rates, runs, settings=static)
        return hsfm.run_chunk_runs(
            state, arrays, rates, first, settings=static, chunk_epochs=static.epochs
        )

    times = {"fixed": [], "grid": []}
    jax.block_until_ready((fixed(), grid()))  # compiled
    for _ in range(repeats):
        for name, fn in (("fixed", fixed), ("grid", grid)):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in times.items()}
    return {
        **best,
        "grid_over_fixed": best["grid"] / best["fixed"],
        "settings": len(grid_rates),
        "seeds": config.num_seeds,
        "repeats": repeats,
        "times": times,
    }


def _cell(entry: dict | None, key: str = "test_wga") -> str:
    if entry is None or entry.get(key) is None or entry[key]["mean"] is None:
        return "-"
    return f"{100 * entry[key]['mean']:.1f} ± {100 * entry[key]['std']:.1f}"


def markdown(results: dict) -> str:
    lines = [
        "| features | ERM | DFR | GroupDRO | HSFM fixed | HSFM grid | grid / fixed wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, record in results["sets"].items():
        rows = record["rows"]
        wall = record["hsfm_program_s"]
        ratio = f"{wall['grid_over_fixed']:.1f}x ({wall['grid']:.1f} / {wall['fixed']:.1f} s)"
        cells = [_cell(rows.get(row)) for row in ROWS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", default="benchmarks/results/hsfm_grid.json")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="erm,dfr,group_dro,hsfm")
    parser.add_argument("--mfd_pre", default="runs/mfd_mobilenet_v2_pretrained_features")
    parser.add_argument("--mfd_ft", default="runs/mfd_mobilenet_v2_features")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.sets.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETS]
    if unknown:
        parser.error(f"--sets: unknown {unknown}; choose from {list(SETS)}")
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"sets": {}}
    for name in names:
        start = time.perf_counter()
        results["sets"][name] = run_set(name, args)
        results["sets"][name]["set_wall_s"] = time.perf_counter() - start
        results["environment"] = {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "jax_device": str(jax.devices()[0]),
            "note": "2-core Intel Xeon VM, shared with other jobs",
        }
        out.write_text(json.dumps(results, indent=1))
        print(markdown(results), flush=True)


if __name__ == "__main__":
    main()
