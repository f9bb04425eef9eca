"""README is a front door that works: its Python example runs as written and prints the table,
its links lead somewhere, and neither it nor docs/ narrates the project's history."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # README's example, every method it names

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_LINES = 200
# Narration of past work: rounds or sessions of work, the machines it ran on before, issue numbers.
NARRATION = re.compile(
    r"\bissue \d+|\bworkplace\b|\b(this|previous|earlier|last) (session|round)\b|\bround of work\b",
    re.IGNORECASE,
)


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_the_python_example_runs_as_written_and_prints_the_table(tmp_path):
    (snippet,) = _python_blocks(README.read_text())
    assert len([line for line in snippet.splitlines() if line.strip()]) <= 4  # import + 3 lines
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout
    assert printed.startswith("# arrays / arrays: 3 seed(s)\n")
    # The README shows the rows the example prints.
    shown = re.findall(r"^\| (\w+) \| \d+ \|", README.read_text(), flags=re.MULTILINE)
    for row in ("erm", "dfr", "tr_dfr", "hsfm", "hsfm_last"):
        assert f"\n| {row} | " in printed
        assert row in shown
    assert "Wall time (compile + run): erm" in printed
    assert not list(tmp_path.iterdir())  # no workdir given: nothing written


def test_readme_is_short_and_its_links_exist():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_LINES
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link
    assert "python -m pytest -q" in text  # .ci/run's command
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()


def test_docs_links_exist():
    for page in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if not link.startswith("http"):
                assert (page.parent / link).exists(), f"{page.name}: {link}"


def test_nothing_narrates_the_projects_history():
    files = [README, ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md")]
    for folder in ("hsfm_jax", "experiments", "feature_export", "benchmarks", "tests"):
        files += (ROOT / folder).rglob("*.py")
    found = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if NARRATION.search(line) and path != Path(__file__).resolve():
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
