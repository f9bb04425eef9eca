"""The command-line programs: the console scripts ``hsfm-run``, ``hsfm-sweep``, ``hsfm-analyze``
and ``hsfm-export``, and where their code lives.

Their packages, ``experiments`` (entry points and configs) and ``feature_export`` (the PyTorch
side), are installed inside this package, under ``hsfm_jax/_apps/``, not as top-level packages:
only these programs (and the subprocesses they start, `subprocess_env`) put them on
``sys.path``, so ``import experiments`` in a user's own code finds the user's. In a checkout they
are the top-level folders, and ``python -m experiments.main`` from its root runs the same code.

``--config=NAME`` names a config of ``experiments/configs`` (``--config=synthetic``) when NAME is
not a file; a path works as with ``python -m experiments.main``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

PACKAGES = ("experiments", "feature_export")


def root() -> Path:
    """The folder holding ``experiments/`` and ``feature_export/``: ``hsfm_jax/_apps`` when
    installed, else the checkout's root."""
    package = Path(importlib.import_module("hsfm_jax").__file__).resolve().parent
    for candidate in (package / "_apps", package.parent):
        if (candidate / "experiments" / "main.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"{package}: neither {package / '_apps'} nor a checkout holds experiments/; reinstall "
        "hsfm-jax"
    )


def subprocess_env() -> dict[str, str]:
    """The environment for ``python -m feature_export...`` subprocesses: `root()` first on
    PYTHONPATH."""
    paths = [str(root()), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def config_path(name: str | os.PathLike) -> Path:
    """A config file: `name` itself when it is a file, else ``experiments/configs/<name>.py``."""
    path = Path(name)
    if path.is_file():
        return path
    named = root() / "experiments" / "configs" / f"{str(name).removesuffix('.py')}.py"
    if "/" not in str(name) and named.is_file():
        return named
    known = sorted(p.stem for p in named.parent.glob("*.py") if not p.stem.startswith("_"))
    raise FileNotFoundError(f"config {name}: no such file, nor a config named so in {known}")


def load_config(name: str | os.PathLike):
    """The ConfigDict of a config file's ``get_config()`` (`config_path`). The file is imported
    by path; one that imports ``experiments.configs`` needs a checkout's root on sys.path."""
    path = config_path(name)
    spec = importlib.util.spec_from_file_location(f"_hsfm_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _use_root() -> None:
    path = str(root())
    if path not in sys.path:
        sys.path.insert(0, path)


def resolve_config_flag(argv: list[str]) -> list[str]:
    """``--config=NAME[:ARGS]`` -> ``--config=<root>/experiments/configs/NAME.py[:ARGS]`` when NAME
    is not a file and such a config exists; every other argument as given."""
    configs = root() / "experiments" / "configs"
    out = []
    for arg in argv:
        if arg.startswith("--config="):
            name, colon, args = arg.removeprefix("--config=").partition(":")
            named = configs / f"{name.removesuffix('.py')}.py"
            if name and not Path(name).exists() and "/" not in name and named.is_file():
                arg = f"--config={named}{colon}{args}"
        out.append(arg)
    return out


HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull")


def _run_absl(main, **kwargs) -> None:
    """absl's app.run, with --help exiting 0 (absl exits 1 after printing it)."""
    from absl import app

    argv = resolve_config_flag(sys.argv)
    try:
        app.run(main, argv=argv, **kwargs)
    except SystemExit as e:
        if e.code == 1 and any(arg in HELP_FLAGS for arg in argv[1:]):
            sys.exit(0)
        raise


def _help_lists_flags_of(*modules) -> None:
    """--help lists the flags of `modules` (absl lists those of the script, sys.argv[0])."""
    from absl import flags

    for module in modules:
        for flag in flags.FLAGS.get_key_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def _absl(module: str) -> None:
    _use_root()
    main = importlib.import_module(module)
    cli = importlib.import_module("experiments.cli")
    _help_lists_flags_of(main, cli)
    _run_absl(main.main, flags_parser=cli.parse_flags)


def run() -> None:
    """``hsfm-run``: `experiments.main` (one experiment)."""
    _absl("experiments.main")


def sweep() -> None:
    """``hsfm-sweep``: `experiments.sweep` (an HSFM grid)."""
    _absl("experiments.sweep")


def analyze() -> None:
    """``hsfm-analyze``: `experiments.analyze` (what HSFM's support set learned)."""
    _use_root()
    main = importlib.import_module("experiments.analyze")
    main.define_flags()
    _help_lists_flags_of(main)
    _run_absl(main.main)


def export() -> None:
    """``hsfm-export``: `feature_export.pipeline` (build, fine-tune, export; needs ``[export]``)."""
    _use_root()
    sys.exit(importlib.import_module("feature_export.pipeline").main(sys.argv[1:]))
