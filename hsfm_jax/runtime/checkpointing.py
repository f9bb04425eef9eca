"""Checkpoints and atomic result files, so that a killed sweep resumes where it stopped.

- `ProgramCheckpoints`: an orbax `CheckpointManager` over the state of one compiled sweep program
  (a vmapped `hsfm.State` plus the history so far), one checkpoint per saved epoch. Checkpoints
  hold host (NumPy) arrays of the real runs only, so a sweep killed on one device count resumes
  on another.
- `write_json_atomic`: a finished setting's results appear whole or not at all.
- `check_record`: a workdir remembers what it was started with; a restart with another config is
  a clear error instead of a silent mix of two sweeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from hsfm_jax.runtime.atomic import atomic_write


class LayoutMismatch(ValueError):
    """A checkpoint that holds another layout of the run state (another hsfm_jax version)."""


class ProgramCheckpoints:
    """Saves and restores a pytree of arrays by epoch under `directory` (orbax, synchronous).

    Saves are synchronous: a chunk of epochs costs far more than its save, and a save that has
    returned is on disk, which is what resuming after a kill needs. Orbax writes each step to a
    temporary directory and renames it when complete, so a kill during a save leaves the
    previous step readable.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_handlers=ocp.StandardCheckpointHandler(),  # so a new process can read metadata
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
            ),
        )

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def save(self, epoch: int, tree: Any) -> None:
        """Saves `tree` (moved to host first) as the checkpoint of `epoch`."""
        host = jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
        host = jax.tree_util.tree_map(_stand_in_for_empty, host)
        self._manager.save(epoch, args=ocp.args.StandardSave(host))
        self._manager.wait_until_finished()

    def restore(self, epoch: int, like: Any) -> Any:
        """The checkpoint of `epoch` as NumPy arrays, in the structure (and shapes) of `like`.

        Raises ValueError naming the arrays that differ when the checkpoint holds another
        layout (e.g. written by a version of hsfm_jax whose run state had other fields).
        """
        saved, wanted = _leaf_names(self._manager.item_metadata(epoch)), _leaf_names(like)
        if saved != wanted:
            missing = ", ".join("/".join(n) for n in sorted(wanted - saved)[:3]) or "none"
            extra = ", ".join("/".join(n) for n in sorted(saved - wanted)[:3]) or "none"
            raise LayoutMismatch(
                f"checkpoint {self.directory / str(epoch)} does not hold this version's run state "
                f"(missing: {missing}; not expected: {extra}); it was written by another version "
                f"of hsfm_jax: delete {self.directory} to run this program from its start"
            )
        target = jax.tree_util.tree_map(
            lambda x: _stand_in_for_empty(np.zeros(x.shape, x.dtype)), like
        )
        restored = self._manager.restore(epoch, args=ocp.args.StandardRestore(target))
        return jax.tree_util.tree_map(
            lambda got, x: np.zeros(x.shape, x.dtype) if np.size(x) == 0 else got, restored, like
        )

    def close(self) -> None:
        self._manager.close()


@contextlib.contextmanager
def reading(directory: str | os.PathLike) -> Iterator[None]:
    """Turns whatever orbax raises on checkpoint files it cannot parse into one ValueError that
    names `directory` (a layout of another version stays a `LayoutMismatch`)."""
    try:
        yield
    except LayoutMismatch:
        raise
    except Exception as e:  # noqa: BLE001  (orbax's errors on damaged files vary)
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(
            f"checkpoint {directory} cannot be read ({type(e).__name__}: {first}); remove it to "
            "run this program from its start"
        ) from None


def _latest(
    checkpoints: ProgramCheckpoints, like: Callable[[int], Any], agree: Callable[[int], int]
) -> tuple[ProgramCheckpoints, int, Any]:
    """`restore_latest`'s answer from open `checkpoints` (the tree None when nothing is saved)."""
    epoch = agree(checkpoints.latest_epoch() or 0)
    return checkpoints, epoch, checkpoints.restore(epoch, like(epoch)) if epoch else None


def restore_latest(
    directory: str | os.PathLike,
    like: Callable[[int], Any],
    *,
    agree: Callable[[int], int] = lambda epoch: epoch,
    remove_damaged: bool = True,
) -> tuple[ProgramCheckpoints | None, int, Any]:
    """(open checkpoints, latest epoch, its tree restored in the shapes ``like(epoch)`` gives) of
    `directory`; (None, 0, None) when it holds nothing to resume. `agree` turns the latest epoch
    this process sees into the one every process restores (`distributed.agreed`).

    A checkpoint that cannot be read (truncated or corrupted files) is removed with a warning
    and (None, 0, None) returned: the loop starts afresh and reaches the same result. The
    directory is the loop's own (`hsfm_jax.runtime.workdir.loop_checkpoints`), never a user's.
    With `remove_damaged` False it stays, and one ValueError names it (`reading`).
    """
    if not remove_damaged:
        with reading(directory):
            return _latest(ProgramCheckpoints(directory), like, agree)
    checkpoints = None
    try:
        checkpoints = ProgramCheckpoints(directory)
        return _latest(checkpoints, like, agree)
    except LayoutMismatch:
        raise
    except Exception as e:  # noqa: BLE001  (whatever orbax raises on files it cannot parse)
        logging.warning(
            "checkpoint %s cannot be read (%s: %s); removing it and starting afresh",
            directory,
            type(e).__name__,
            str(e).strip().splitlines()[0] if str(e).strip() else "",
        )
        if checkpoints is not None:
            with contextlib.suppress(Exception):
                checkpoints.close()
        remove(directory)
        return None, 0, None


def _stand_in_for_empty(x: np.ndarray) -> np.ndarray:
    """Orbax cannot save zero-size arrays (e.g. the per-group history of a run without groups,
    (S, E, 0)): such a leaf is saved as one zero of its dtype, and `restore` gives back the empty
    array of the wanted shape, which holds no data to lose."""
    return np.zeros((1,), x.dtype) if x.size == 0 else x


def remove(directory: str | os.PathLike) -> None:
    """Deletes the checkpoints under `directory` (once the results they led to are written)."""
    shutil.rmtree(directory, ignore_errors=True)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as JSON to `path` via a temporary file and `os.replace` (atomic on POSIX)."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


def check_record(path: str | os.PathLike, record: dict, *, write: bool = True) -> None:
    """Writes `record` (JSON data) to `path`, or checks it equals the one already there.

    With `write` False (the processes of a multi-process run other than process 0) a missing
    record is left for process 0 to write; one already there is checked all the same.

    Raises:
      ValueError: naming the fields that differ, when `path` holds another record.
    """
    path = Path(path)
    record = json.loads(json.dumps(record))
    if not path.exists():
        if write:
            write_json_atomic(path, record)
        return
    saved = json.loads(path.read_text())
    if saved == record:
        return
    old, new = _flatten(saved), _flatten(record)
    diffs = [
        f"{k}: {old.get(k, '<missing>')!r} in the workdir, {new.get(k, '<missing>')!r} now"
        for k in sorted(old.keys() | new.keys())
        if old.get(k, "<missing>") != new.get(k, "<missing>")
    ]
    shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    raise ValueError(
        f"{path.parent} already holds a sweep started with a different configuration ({shown}). "
        "Rerun with the same --config/--sweep flags to resume it, or use a new --workdir."
    )


def _leaf_names(tree: Any) -> set[tuple[str, ...]]:
    """Paths of a pytree's leaves as tuples of names (dict keys, attribute names, indices)."""
    return {
        tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
        for path, _ in jax.tree_util.tree_leaves_with_path(tree)
    }
