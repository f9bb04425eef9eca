"""Shared fixtures (a synthetic feature set in memory, small feature directories in the on-disk
format) and the `torch` marker of everything under tests/feature_export/."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from hsfm_jax.data import synthetic

_TORCH_TESTS = Path(__file__).resolve().parent / "feature_export"
_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Every test under tests/feature_export/ needs PyTorch: marked `torch`."""
    del config
    for item in items:
        if _TORCH_TESTS in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.torch)


def pytest_configure(config):
    """HSFM_TEST_JAX_CACHE=<dir>: every compiled program of the suite is kept in JAX's persistent
    compilation cache there, so a rerun (the fast loop after a small change) compiles only what
    changed. Unset (CI): nothing is kept."""
    del config
    cache = os.environ.get("HSFM_TEST_JAX_CACHE")
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_JAX_CACHE_FLAGS = (
    "jax_enable_compilation_cache",
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture(autouse=True)
def _process_caches_restored():
    """A test that runs an entry point in this process turns JAX's persistent compilation cache
    (and the program cache) on, into its own temporary directory: the next test starts with both
    as they were, not writing into a directory that is gone."""
    from hsfm_jax.runtime import program_cache

    before = {flag: getattr(jax.config, flag) for flag in _JAX_CACHE_FLAGS}
    programs = program_cache.directory()
    yield
    if program_cache.directory() != programs:
        program_cache.disable() if programs is None else program_cache.enable(programs)
    if {flag: getattr(jax.config, flag) for flag in _JAX_CACHE_FLAGS} != before:
        from jax.experimental.compilation_cache import compilation_cache

        for flag, value in before.items():
            jax.config.update(flag, value)
        logger = logging.getLogger("jax._src.compilation_cache")
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            compilation_cache.reset_cache()
        finally:
            logger.setLevel(level)


@pytest.fixture(autouse=True, scope="module")
def _compiled_programs_freed():
    """Each test module's compiled programs are dropped after it: the whole suite compiles
    thousands of programs in one process, and XLA:CPU keeps every one's code mapped for as long
    as JAX's caches hold it."""
    yield
    jax.clear_caches()


@pytest.fixture
def main_cli():
    """main_cli(*args, cwd=<checkout>, timeout=300) -> the finished `python -m experiments.main
    *args` on the CPU (this checkout on PYTHONPATH; stdout and stderr captured as text)."""

    def run(*args, cwd=_ROOT, timeout=300):
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(_ROOT))
        return subprocess.run(
            [sys.executable, "-m", "experiments.main", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def sweep_record():
    """sweep_record(index, meta_lr, val_wga, test_wga) -> a finished setting's record, as a sweep
    writes it to settings/<index>.json (2 seeds; WGA per seed as fractions)."""

    def record(index, meta_lr, val_wga, test_wga):
        entry = lambda values: {
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "per_seed": values,
        }
        metrics = {
            "val": {"wga": entry(val_wga)},
            "test": {
                "wga": entry(test_wga),
                "mean_acc": entry([0.9, 0.8]),
                "train_weighted_acc": entry([0.95, 0.95]),
            },
        }
        return {
            "index": index,
            "name": f"meta_lr={meta_lr}",
            "overrides": {"meta_lr": meta_lr},
            "num_seeds": 2,
            "selection_metric": "wga",
            "metrics": metrics,
        }

    return record


@pytest.fixture
def feature_set():
    """feature_set(**kw) -> a synthetic problem in memory (`synthetic.feature_set`, kw as
    `synthetic.generate`)."""
    return synthetic.feature_set


SMALL = dict(
    num_core=4, num_spurious=4, num_noise=4, num_train=600, val_per_group=20, test_per_group=50
)


@pytest.fixture(scope="session")
def small_features_dir(tmp_path_factory):
    """A small synthetic feature directory (2 classes, 4 groups, d=12)."""
    path = tmp_path_factory.mktemp("features") / "synthetic_small"
    synthetic.write(path, **SMALL)
    return path


@pytest.fixture(scope="session")
def tiny_features_dir(tmp_path_factory):
    """A tiny synthetic feature directory (200 train, d=12), shared by the sweep tests. Their
    synthetic.py config prepares it: the first sweep remakes it with that config's arguments."""
    path = tmp_path_factory.mktemp("features") / "synthetic_tiny"
    synthetic.write(
        path,
        num_train=200,
        val_per_group=20,
        test_per_group=20,
        num_core=4,
        num_spurious=4,
        num_noise=4,
    )
    return path


def _small_run_config(features_dir):
    """A small run of erm, neurontune, jtt and hsfm (2 seeds, a bootstrap) on `features_dir`."""
    from experiments.configs import synthetic as synthetic_config

    config = synthetic_config.get_config()
    config.features_dir = str(features_dir)
    config.prepare = ""
    config.methods = "erm,neurontune,jtt,hsfm"
    config.num_seeds = 2
    config.bootstrap = 20
    config.erm.steps = 50
    config.neurontune.epochs = 3
    config.neurontune.batches_per_epoch = 5
    config.neurontune.thresholds = (0.0, 0.5)
    config.jtt.steps = 40
    config.jtt.eval_every = 10
    config.jtt.identification_steps_grid = (20,)
    config.jtt.upweight_grid = (5.0, 20.0)
    config.hsfm.epochs = 4
    return config


@pytest.fixture(scope="session")
def small_run_config():
    """features_dir -> the config of a small run of erm, neurontune, jtt and hsfm."""
    return _small_run_config


@pytest.fixture(scope="session")
def small_run(small_features_dir, tmp_path_factory):
    """(workdir, report) of `small_run_config` on the small features, run once per session."""
    from experiments import train

    workdir = tmp_path_factory.mktemp("run") / "run"
    report = train.run(_small_run_config(small_features_dir), workdir)
    return workdir, report
