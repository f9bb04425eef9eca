"""A run's outputs are one atomic set: staged in a fresh directory, swapped in whole at the end.

Layout for ``--workdir=runs/wb``::

  runs/.wb.lock                 pid of the run writing runs/wb (a second run is refused)
  runs/.wb.partial-<run id>/    the run being written; removed if the run fails
  runs/.wb.ckpt/<method>-<fp>/  checkpoints of a method's epoch loop (`hsfm_jax.epoch_loop`),
                                fp a fingerprint of what the loop computes (`loop_checkpoints`);
                                kept when a run dies, removed once a run completes
  runs/wb/                      the last complete run: config.json, results.*, ... (run_id inside)

A killed or failed run leaves the previous complete set untouched, and nothing a reader could take
for results: partial directories are hidden, and the next run in the same workdir removes them.
The swap is two renames (old set aside, new set in) followed by removing the old set; between the
renames the workdir briefly does not exist, never half-written. Every file of a run carries its
run id (config.json and results.json as ``run_id``, history.json and support.npz beside their
arrays), so `experiments.analyze` can refuse a mix of two runs.

Checkpoints live outside the staging directory, which the next run removes: a rerun of the same
command after a kill finds them under a stable name and resumes each method's loop where it was
saved. A rerun with another config or other features finds no directory of its fingerprint and
starts that method afresh (removing the other's checkpoints), never resuming a stale one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from absl import logging

RUN_ID_KEY = "run_id"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _lock_path(workdir: Path) -> Path:
    return workdir.parent / f".{workdir.name}.lock"


def checkpoints_dir(workdir: str | os.PathLike) -> Path:
    """Where the runs of `workdir` keep the checkpoints of their epoch loops."""
    workdir = Path(workdir)
    return workdir.parent / f".{workdir.name}.ckpt"


def loop_checkpoints(workdir: str | os.PathLike, method: str, fingerprint: str) -> Path:
    """The checkpoint directory of `method`'s loop for the inputs `fingerprint` identifies.

    Checkpoints of the same method with another fingerprint (another config or other features)
    are removed: the run starts that method afresh and says so in the log.
    """
    root = checkpoints_dir(workdir)
    directory = root / f"{method}-{fingerprint}"
    for stale in root.glob(f"{method}-*"):
        if stale != directory:
            logging.warning(
                "%s: starting afresh; removing checkpoints %s of another config or other features",
                method,
                stale,
            )
            shutil.rmtree(stale, ignore_errors=True)
    return directory


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def check_usable(workdir: Path) -> None:
    """One-line errors for a workdir that is a file or whose parent cannot be written."""
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"workdir {workdir} exists and is not a directory")
    parent = workdir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"workdir {workdir}: cannot create {parent} ({e.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"workdir {workdir}: {parent} is not writable")


@contextlib.contextmanager
def _locked(workdir: Path) -> Iterator[None]:
    lock = _lock_path(workdir)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _pid_alive(pid):
                raise ValueError(
                    f"workdir {workdir} is in use by another run (pid {pid}, lock {lock})"
                ) from None
            lock.unlink(missing_ok=True)  # the holder died: a stale lock
    else:
        raise ValueError(f"workdir {workdir}: could not take the lock {lock}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


def _remove_stale_partials(workdir: Path) -> None:
    for stale in workdir.parent.glob(f".{workdir.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in workdir.parent.glob(f".{workdir.name}.previous-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _swap_in(stage: Path, workdir: Path, run_id: str) -> None:
    previous = workdir.parent / f".{workdir.name}.previous-{run_id}"
    if workdir.exists():
        os.rename(workdir, previous)
    os.rename(stage, workdir)
    shutil.rmtree(previous, ignore_errors=True)


@contextlib.contextmanager
def staged(workdir: str | os.PathLike, run_id: str | None = None) -> Iterator[tuple[Path, str]]:
    """Locks `workdir`, yields (staging directory, run id); swaps the staging directory in when
    the block ends without an exception (and removes the loop checkpoints, `checkpoints_dir`),
    else removes it and leaves `workdir` and the checkpoints as they were."""
    workdir = Path(workdir)
    check_usable(workdir)
    run_id = run_id or new_run_id()
    with _locked(workdir):
        _remove_stale_partials(workdir)
        stage = workdir.parent / f".{workdir.name}.partial-{run_id}"
        stage.mkdir()
        try:
            yield stage, run_id
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        _swap_in(stage, workdir, run_id)
        shutil.rmtree(checkpoints_dir(workdir), ignore_errors=True)
