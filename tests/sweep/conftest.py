"""The sweep tests' command line: `experiments.sweep` on the synthetic config in a subprocess."""

import sys

import pytest


@pytest.fixture
def sweep_cli():
    """sweep_cli(features_dir, workdir, hsfm={field: value}, spec=..., checkpoint_every=...,
    *extra flags) -> argv of `python -m experiments.sweep` (warnings as errors)."""

    def command(features_dir, workdir, hsfm, spec, checkpoint_every, *extra):
        return [
            sys.executable,
            "-W",
            "error",
            "-W",  # ml_collections loads the config file with the deprecated importlib API
            "ignore:the load_module() method is deprecated:DeprecationWarning",
            "-m",
            "experiments.sweep",
            "--config=experiments/configs/synthetic.py",
            f"--config.features_dir={features_dir}",
            "--config.erm.steps=50",
            *(f"--config.hsfm.{k}={v}" for k, v in hsfm.items()),
            f"--workdir={workdir}",
            f"--sweep={spec}",
            f"--checkpoint_every={checkpoint_every}",
            *extra,
        ]

    return command
