"""Wall time of one compiled HSFM run against N seeds vmapped, on an experiment config.

    python -m benchmarks.seeds [--config=experiments/configs/synthetic.py] [--seeds=5] [--repeats=5]

Uses the config's features (written first if the config says how), initial head and HSFM
settings, exactly as `experiments.main` would; prints compile + first run and the median of
`--repeats` compiled runs, for 1 seed and for `--seeds` seeds vmapped (`hsfm.run_seeds`).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import jax
import jax.numpy as jnp
import numpy as np

from hsfm_jax import methods
from hsfm_jax.data import inputs
from hsfm_jax.methods.hsfm import algorithm as hsfm
from hsfm_jax.methods.hsfm import method as hsfm_method


def _load_config(path: str):
    spec = importlib.util.spec_from_file_location("benchmark_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/configs/synthetic.py")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    config = _load_config(args.config)
    data = inputs.load(config)
    hsfm_config = methods.checked(config, "hsfm", data)
    arrays = hsfm_method.device_data(data, jnp.float32)
    settings = hsfm_method.settings(hsfm_config, data)
    rates = hsfm_method.rates(hsfm_config, jnp.float32)
    keys = jax.random.split(jax.random.key(0))
    init = hsfm_method.initial_head(hsfm_config, data, arrays.train, keys, dtype=jnp.float32)

    def timed(keys):
        start = time.perf_counter()
        jax.block_until_ready(hsfm.run_seeds(arrays, init, rates, keys, settings=settings))
        return time.perf_counter() - start

    print(f"{args.config}: {settings}")
    print(f"device: {jax.devices()[0].device_kind}")
    for n in (1, args.seeds):
        first = timed(jax.random.split(jax.random.key(1), n))
        runs = [timed(jax.random.split(jax.random.key(2 + r), n)) for r in range(args.repeats)]
        print(
            f"{n} seed(s) vmapped: compile + first run {first:.2f} s, "
            f"compiled run {np.median(runs):.3f} s (median of {args.repeats})"
        )


if __name__ == "__main__":
    main()
