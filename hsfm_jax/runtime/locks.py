"""Locks on shared directories: one writer per workdir, sweep workdir or feature directory.

`hold(directory, what)` takes an exclusive `filelock.FileLock` on ``<parent>/.<name>.lock`` (an
OS lock, ``flock``: released when the holder exits or dies, also on NFS, where the server
expires a dead client's locks) and writes who holds it (host, pid, since) to
``<parent>/.<name>.lock.holder``. A second program asking for the same directory is refused at
once with a one-line error naming the holder; it never waits and never breaks a live lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import filelock


class Busy(ValueError):
    """The directory is locked by another live program."""


def lock_path(directory: str | os.PathLike) -> Path:
    directory = Path(os.path.abspath(directory))
    return directory.parent / f".{directory.name}.lock"


def _holder_path(lock: Path) -> Path:
    return lock.with_name(lock.name + ".holder")


def _describe_holder(lock: Path) -> str:
    try:
        holder = json.loads(_holder_path(lock).read_text())
        return f"host {holder['host']}, pid {holder['pid']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


@contextlib.contextmanager
def hold(directory: str | os.PathLike, what: str) -> Iterator[None]:
    """Holds the lock of `directory` for the block; raises `Busy` at once if another holds it.

    `what` names the directory in the message ("workdir", "features_dir", "sweep workdir").
    """
    lock = lock_path(directory)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"{what} {directory}: cannot create {lock.parent} ({e.strerror})"
        ) from None
    file_lock = filelock.FileLock(lock, timeout=0)
    try:
        file_lock.acquire()
    except filelock.Timeout:
        raise Busy(
            f"{what} {directory} is in use by another run ({_describe_holder(lock)}; lock {lock}); "
            "wait for it to finish or use another path"
        ) from None
    try:
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        with contextlib.suppress(OSError):
            _holder_path(lock).write_text(json.dumps(holder))
        yield
    finally:
        with contextlib.suppress(OSError):
            _holder_path(lock).unlink()
        file_lock.release()


def is_held(directory: str | os.PathLike, *, patience_s: float = 0.5) -> str | None:
    """Who holds `directory`'s lock (a description), or None when nobody does.

    The question is asked by taking the lock for an instant, so two programs asking at once
    (the processes of a multi-process sweep reading the same features) can each find the other's
    instant: a lock that comes free within `patience_s` is not held.
    """
    lock = lock_path(directory)
    if not lock.exists():
        return None
    file_lock = filelock.FileLock(lock, timeout=0)
    deadline = time.monotonic() + patience_s
    while True:
        try:
            file_lock.acquire()
        except filelock.Timeout:
            if time.monotonic() >= deadline:
                return _describe_holder(lock)
            time.sleep(0.02)
            continue
        except OSError:
            return None
        file_lock.release()
        return None
