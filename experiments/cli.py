"""What every entry point shares: flag parsing whose errors are one line, and one-line errors for
bad input (`error: ...` on stderr, exit code 1)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import flags, logging


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


def fail(message: str) -> None:
    logging.flush()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def guarded(fn: Callable[[], object]) -> object:
    """Runs `fn`, turning bad input (FileNotFoundError, ValueError) into one `error:` line."""
    try:
        return fn()
    except (FileNotFoundError, ValueError) as e:
        fail(_one_line(e))
