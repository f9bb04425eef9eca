"""A run's outputs are one atomic set: staged in a fresh directory, swapped in whole at the end.

Layout for ``--workdir=runs/wb``::

  runs/.wb.lock, .wb.lock.holder  the lock of runs/wb and who holds it (`hsfm_jax.runtime.locks`)
  runs/.wb.partial-<run id>/      the run being written; removed if the run fails
  runs/.wb.ckpt/<method>-<fp>/    checkpoints of a method's epoch loop (`hsfm_jax.runtime.epoch_loop`),
                                  fp a fingerprint of what the loop computes (`loop_checkpoints`);
                                  kept when a run dies, removed once a run completes
  runs/wb/                        the last complete run: config.json, results.*, ... (run_id
                                  inside) and its marker `ownership.MARKER` listing those files

Only a missing path, an empty directory or a directory hsfm_jax made (its marker) is ever
replaced: anything else at the workdir is refused with a one-line error before the run starts,
and again, under the lock, just before the swap. Entries a user added to a previous set are
carried into the new one; an analysis of the previous run moves with it as
``analysis-<run id>/``.

A killed or failed run leaves the previous complete set untouched, and nothing a reader could take
for results: partial directories are hidden, and the next run in the same workdir removes them.
The swap is two renames (old set aside, new set in) followed by removing the old set; between the
renames the workdir briefly does not exist, never half-written. A kill between the renames is
repaired by the next run before it removes anything (`recover`: the complete new set is moved in,
else the old set is moved back), so the last complete set is never lost. Every file of a run
carries its run id (config.json and results.json as ``run_id``, history.json and support.npz
beside their arrays), so `experiments.analyze` can refuse a mix of two runs.

Checkpoints live outside the staging directory, which the next run removes: a rerun of the same
command after a kill finds them under a stable name and resumes each method's loop where it was
saved. A rerun with another config or other features finds no directory of its fingerprint and
starts that method afresh (removing the other's checkpoints), never resuming a stale one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from absl import logging

from hsfm_jax.runtime import locks, ownership

RUN_ID_KEY = "run_id"
RUN_KIND = "run"
ANALYSIS_KIND = "analysis"
ANALYSIS_DIR = "analysis"
# The files of a run written before runs listed their files in their marker.
LEGACY_RUN_FILES = ("config.json", "results.json", "results.md", "history.json", "support.npz")


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


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


def check_usable(workdir: Path, *, kind: str = RUN_KIND, what: str = "workdir") -> None:
    """One-line errors for a workdir that is a file, is not an hsfm_jax directory of `kind`, is
    the current directory, or whose parent cannot be written. `what` names it in messages."""
    workdir = Path(workdir)
    ownership.check_not_cwd(workdir, what)
    ownership.check_ours(workdir, (kind,), what)
    parent = Path(os.path.abspath(workdir)).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{what} {workdir}: cannot create {parent} ({e.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {workdir}: {parent} is not writable")


def check_run_paths(workdir: str | os.PathLike, features_dir: str | os.PathLike | None) -> None:
    """Before a run starts: `workdir` usable (`check_usable`) and apart from `features_dir`
    (not it, not inside it, not containing it: the swap replaces the workdir whole)."""
    check_usable(Path(workdir))
    ownership.check_apart(workdir, "workdir", features_dir=features_dir)


def _partial(workdir: Path, run_id: str) -> Path:
    return workdir.parent / f".{workdir.name}.partial-{run_id}"


def _previous(workdir: Path, run_id: str) -> Path:
    return workdir.parent / f".{workdir.name}.previous-{run_id}"


def _remove_ours(directory: Path) -> None:
    """Removes a staging or set-aside directory: only one that is empty or hsfm_jax's."""
    if not os.path.lexists(directory):
        return
    if ownership.is_empty(directory) or ownership.kind_of(directory) is not None:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        logging.warning("%s: not an hsfm_jax run directory; left in place", directory)


def recover(workdir: Path) -> None:
    """Finishes or undoes a swap a kill interrupted, then removes what killed runs left.

    Called with the lock held, before a run starts. A kill between the swap's two renames leaves
    no workdir, the previous set as ``.previous-<id>`` and the new complete set as
    ``.partial-<id>``: the new set is moved in (the swap completed), else the previous set is
    moved back. Only then are the other staging and set-aside directories removed, so the last
    complete set is never among them.
    """
    if not os.path.lexists(workdir):
        for previous in sorted(workdir.parent.glob(f".{workdir.name}.previous-*")):
            run_id = previous.name.rsplit("-", 1)[1]
            stage = _partial(workdir, run_id)
            if (ownership.read(stage) or {}).get("complete"):
                logging.warning("%s: completing the swap a kill interrupted", workdir)
                os.rename(stage, workdir)
            else:
                logging.warning("%s: restoring the set a kill left aside", workdir)
                os.rename(previous, workdir)
            break
        else:
            complete = [
                p
                for p in workdir.parent.glob(f".{workdir.name}.partial-*")
                if (ownership.read(p) or {}).get("complete")
            ]
            if complete:  # killed after setting the empty workdir aside: never lose a whole set
                newest = max(complete, key=lambda p: p.stat().st_mtime)
                logging.warning("%s: moving in the complete set %s", workdir, newest)
                os.rename(newest, workdir)
    for stale in workdir.parent.glob(f".{workdir.name}.partial-*"):
        _remove_ours(stale)
    for stale in workdir.parent.glob(f".{workdir.name}.previous-*"):
        _remove_ours(stale)


def _carry_over(old: Path, stage: Path) -> None:
    """Moves what the previous set holds beyond its run's own files into the new set: files a
    user added, and an analysis of that run (as ``analysis-<run id>``, so that it is never read
    as the new run's)."""
    marker = ownership.read(old) or {}
    written = set(marker.get("files", LEGACY_RUN_FILES)) | {ownership.MARKER}
    locks_of_analysis = {f".{ANALYSIS_DIR}.lock", f".{ANALYSIS_DIR}.lock.holder"}
    for entry in old.iterdir():
        if entry.name in written or entry.name in locks_of_analysis:
            continue
        target = stage / entry.name
        if entry.name == ANALYSIS_DIR and ownership.kind_of(entry) == ANALYSIS_KIND:
            target = stage / f"{ANALYSIS_DIR}-{marker.get(RUN_ID_KEY, 'previous')}"
        if os.path.lexists(target):
            target = stage / f"{entry.name}.previous-{marker.get(RUN_ID_KEY, 'run')}"
        logging.info("%s: carried into the new set as %s", entry, target.name)
        os.rename(entry, target)


def _swap_in(stage: Path, workdir: Path, run_id: str, kind: str, what: str) -> None:
    previous = _previous(workdir, run_id)
    files = sorted(p.name for p in stage.iterdir() if p.name != ownership.MARKER)
    if os.path.lexists(workdir):
        ownership.check_ours(workdir, (kind,), what)  # what may have appeared since the start
        if workdir.is_dir():
            _carry_over(workdir, stage)
    ownership.mark(stage, kind, run_id=run_id, files=files, complete=True)
    if os.path.lexists(workdir):
        os.rename(workdir, previous)
    os.rename(stage, workdir)
    _remove_ours(previous)


@contextlib.contextmanager
def staged(
    workdir: str | os.PathLike,
    run_id: str | None = None,
    *,
    kind: str = RUN_KIND,
    what: str = "workdir",
) -> Iterator[tuple[Path, str]]:
    """Locks `workdir`, yields (staging directory, run id); swaps the staging directory in when
    the block ends without an exception (and removes the loop checkpoints, `checkpoints_dir`),
    else removes it and leaves `workdir` and the checkpoints as they were.

    A `workdir` that is not empty and was not made by hsfm_jax is refused (`ownership`); entries
    a user added to a previous set are carried into the new one (`_carry_over`). `kind` is the
    marker's kind (``"run"``, ``"analysis"``), `what` names the directory in messages.
    """
    workdir = Path(os.path.abspath(workdir))
    run_id = run_id or new_run_id()
    with locks.hold(workdir, what):
        recover(workdir)
        check_usable(workdir, kind=kind, what=what)
        stage = _partial(workdir, run_id)
        stage.mkdir()
        try:
            ownership.mark(stage, kind, run_id=run_id, complete=False)
            yield stage, run_id
            _swap_in(stage, workdir, run_id, kind, what)
        except BaseException:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
            raise
        shutil.rmtree(checkpoints_dir(workdir), ignore_errors=True)
