r"""Rewrites the result tables of markdown pages from the runs' results.json.

A generated table sits between two markers that name the run's workdir (relative to the
directory the command runs in):

    <!-- results: runs/digit_dominoes -->
    | method | seeds | test WGA | ...
    <!-- /results -->

  python -m experiments.docs_tables README.md docs/results.md           # rewrite the tables
  python -m experiments.docs_tables --check README.md docs/results.md   # exit 1 if one differs

The table is `hsfm_jax.reporting.tables.report_table` of ``<workdir>/results.json``: the first table of the
run's results.md. A marker whose run has no results.json is left as it is, with a warning.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from absl import app, flags

from hsfm_jax.reporting import tables

_CHECK = flags.DEFINE_bool("check", False, "Write nothing; exit 1 when a table differs.")
MARKED = re.compile(r"(<!-- results: (?P<run>\S+) -->\n)(?P<table>.*?)(<!-- /results -->)", re.S)


def rewrite(text: str, root: Path = Path()) -> tuple[str, list[str]]:
    """(`text` with every marked table made from its run, the runs that have no results.json)."""
    missing = []

    def table(match: re.Match) -> str:
        path = root / match["run"] / "results.json"
        if not path.is_file():
            missing.append(match["run"])
            return match[0]
        report = json.loads(path.read_text())
        return f"{match[1]}{tables.report_table(report)}\n{match[4]}"

    return MARKED.sub(table, text), missing


def main(argv):
    differ = []
    for page in map(Path, argv[1:]):
        text = page.read_text()
        new, missing = rewrite(text)
        for run in missing:
            print(
                f"warning: {page}: {run}/results.json not found; its table is left as it is",
                file=sys.stderr,
            )
        if new != text:
            differ.append(str(page))
            if not _CHECK.value:
                page.write_text(new)
    if differ:
        print(("differs: " if _CHECK.value else "rewrote: ") + ", ".join(differ))
    if _CHECK.value and differ:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
