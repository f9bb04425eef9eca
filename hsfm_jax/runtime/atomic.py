"""Atomic file writes: a temporary file beside the target, renamed into place when complete.

Every writer of results, features, checkpoints and manifests uses `atomic_write`, so a killed
process leaves either the old file or the new one, never half of one. Temporary files start with
".tmp-", a name no loader reads. Files end with the permissions the umask gives (`chmod_as_umask`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_as_umask(path: str | os.PathLike, mode: int = 0o666) -> None:
    """Gives `path` the permissions a plain ``open``/``mkdir`` would (`mode` less the umask):
    `tempfile` makes its files 0600 and directories 0700 whatever the umask, which would leave a
    shared feature or results directory unreadable to the rest of a group."""
    os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Yields a file open on a temporary beside `path`; renames it to `path` on success.

    On an exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
        chmod_as_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
