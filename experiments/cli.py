"""What every entry point shares: flag parsing whose errors are one line, and one-line errors for
bad input (`error: ...` on stderr, exit code 1)."""

from __future__ import annotations

import logging as py_logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import jax
from absl import flags, logging

from hsfm_jax.runtime import program_cache

CACHE_ENV = "HSFM_JAX_CACHE_DIR"
_DEFAULT_CACHE = os.environ.get(CACHE_ENV) or str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hsfm_jax" / "jax"
)
_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir",
    _DEFAULT_CACHE,
    f"JAX's persistent compilation cache (default ${CACHE_ENV}, else ~/.cache/hsfm_jax/jax).",
)
_CACHE = flags.DEFINE_bool(
    "compilation_cache", True, "Cache compiled programs across runs (--nocompilation_cache: off)."
)


def _one_line(e: BaseException) -> str:
    """The message of `e` on one line (KeyError / AttributeError messages come quoted)."""
    text = str(e).strip()
    while len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].replace("\\n", "\n").replace("\\'", "'").replace('\\"', '"').strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag or config override (e.g. a misspelled
    ``--config.hsfm.inner_stepz``) reported as one ``error:`` line instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        fail(f"bad flag: {_one_line(e)}")


def enable_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache (every program, however small or quick to
    compile: the programs here compile in well under JAX's default 1 s threshold) and, in its
    ``programs/`` subdirectory, `hsfm_jax.runtime.program_cache` (whole executables, so that a rerun
    also skips tracing and lowering). Returns the cache directory, or None with
    --nocompilation_cache."""
    if not _CACHE.value:
        return None
    try:
        Path(_CACHE_DIR.value, "programs").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--compilation_cache_dir {_CACHE_DIR.value}: cannot be used ({e.strerror})")
    jax.config.update("jax_compilation_cache_dir", _CACHE_DIR.value)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    programs = program_cache.enable(Path(_CACHE_DIR.value) / "programs")
    logging.info("JAX compilation cache: %s (programs: %s)", _CACHE_DIR.value, programs)
    return _CACHE_DIR.value


class _QuietOrbax(py_logging.Filter):
    """Drops orbax's INFO lines (about ten per checkpoint), which bury the progress bar."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname


def quiet_orbax() -> None:
    """Orbax's warnings and errors only, in the absl log."""
    logging.get_absl_handler().addFilter(_QuietOrbax())


def fail(message: str) -> None:
    logging.flush()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def guarded(fn: Callable[[], object]) -> object:
    """Runs `fn`, turning bad input (ValueError, FileNotFoundError) and what the system refused
    (OSError: a full disk, a missing permission, a path that is a file) into one `error:` line.
    Anything else (a bug, here or in JAX) keeps its traceback."""
    try:
        return fn()
    except ValueError as e:
        fail(_one_line(e))
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        fail(f"{where}{e.strerror or _one_line(e)}")
