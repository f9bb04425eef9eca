"""What hsfm_jax made: a marker in every directory it creates, checked before anything is replaced.

Every directory a program creates and may later replace or delete (a run's workdir, an analysis
directory, a sweep workdir, a feature directory made by ``config.prepare`` or the exporter, a
split directory of a feature set) holds a small JSON file, `MARKER`, saying which kind of
directory it is and which files the program wrote into it. Before a program replaces or writes
into a directory that already exists and is not empty, it asks `check_ours`: a directory without
the marker (the user's thesis, a dataset, features made elsewhere) is an error naming the path,
and nothing in it is touched.

`check_apart` refuses output paths that are, contain or sit inside the inputs (a workdir equal to
the feature directory, features inside the workdir a run replaces, an exporter writing into its
own dataset), before anything runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from hsfm_jax.runtime import atomic

MARKER = ".hsfm_jax.json"
# Directories hsfm_jax wrote before markers existed are recognised by their exact contents.
_LEGACY_SPLIT_FILES = frozenset({"features.npy", "labels.npy", "groups.npy", "ids.txt"})


def read(directory: str | os.PathLike) -> dict | None:
    """The marker of `directory`, or None when it has none (or an unreadable one)."""
    try:
        found = json.loads((Path(directory) / MARKER).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return found if isinstance(found, dict) and "kind" in found else None


def mark(directory: str | os.PathLike, kind: str, **info) -> None:
    """Writes `directory`'s marker (atomically): `kind` plus JSON-able `info` (run id, files)."""
    with atomic.atomic_write(Path(directory) / MARKER, "w") as f:
        json.dump({"kind": kind, **info}, f, indent=2)


def is_empty(directory: Path) -> bool:
    """Whether `directory` is a directory with no entries."""
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is None
    except (NotADirectoryError, FileNotFoundError):
        return False


def _legacy_kind(directory: Path) -> str | None:
    """The kind of a directory hsfm_jax wrote before it wrote markers, judged by its contents."""
    names = {p.name for p in directory.iterdir()}
    if names and names <= _LEGACY_SPLIT_FILES and "features.npy" in names:
        return "split"
    if "meta.json" in names:
        try:
            if "format_version" in json.loads((directory / "meta.json").read_text()):
                return "features"
        except (OSError, ValueError, RecursionError, TypeError):
            return None
    if (directory / "sweep_config.json").is_file() and names <= {
        "sweep_config.json",
        "settings",
        "checkpoints",
        "sweep.md",
        "sweep.csv",
        "sweep.json",
        "sweep.png",
    }:
        return "sweep"
    if {"analysis.json", "report.md"} <= names:
        return "analysis"
    run_files = {"config.json", "results.json", "results.md", "history.json", "support.npz"}
    if {"config.json", "results.json"} <= names and names <= run_files | {"analysis"}:
        try:
            if "run_id" in json.loads((directory / "config.json").read_text()):
                return "run"
        except (OSError, ValueError, RecursionError, TypeError):
            return None
    return None


def kind_of(directory: str | os.PathLike) -> str | None:
    """Which kind of hsfm_jax directory `directory` is (marker or legacy contents), else None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = read(directory)
    return found["kind"] if found else _legacy_kind(directory)


def check_ours(path: str | os.PathLike, kinds: Iterable[str], what: str) -> None:
    """Raises ValueError unless `path` is missing, an empty directory, or an hsfm_jax directory of
    one of `kinds`. `what` names the role in the message ("workdir", "--out")."""
    path = Path(path)
    kinds = tuple(kinds)
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise ValueError(f"{what} {path} exists and is not a directory")
    if is_empty(path):
        return
    found = kind_of(path)
    if found in kinds:
        return
    made = (
        f"is an hsfm_jax {found} directory" if found else f"was not made by hsfm_jax (no {MARKER})"
    )
    raise ValueError(
        f"{what} {path} is not empty and {made}; refusing to replace or write into it: "
        "choose another path, or move its contents away yourself"
    )


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def check_apart(
    output: str | os.PathLike, output_name: str, *, inside_ok: bool = False, **inputs
) -> None:
    """Raises ValueError when `output` is one of the `inputs` paths ({name: path}; empty ones
    skipped), contains one, or (unless `inside_ok`) lies inside one (symlinks followed)."""
    out = _resolved(output)
    for name, path in inputs.items():
        if not path:
            continue
        other = _resolved(path)
        if out == other:
            relation = "is"
        elif other in out.parents and not inside_ok:
            relation = "is inside"
        elif out in other.parents:
            relation = "contains"
        else:
            continue
        raise ValueError(
            f"{output_name} {output} {relation} {name} {path}: the output would overwrite or "
            f"delete the input; choose an {output_name} apart from it"
        )


def check_not_cwd(path: str | os.PathLike, what: str) -> None:
    """A directory that is replaced whole must not be the working directory or one above it."""
    here = _resolved(os.getcwd())
    target = _resolved(path)
    if target == here or target in here.parents:
        raise ValueError(
            f"{what} {path} is the current directory or contains it; a run replaces its {what} "
            f"whole: pass a subdirectory, e.g. {what}=runs/<name>"
        )
