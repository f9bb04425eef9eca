"""experiments.docs_tables: the marked tables of a page are made from the runs' results.json."""

import subprocess
import sys
from pathlib import Path

import hsfm_jax
from experiments import docs_tables
from hsfm_jax.data import synthetic

ROOT = Path(__file__).resolve().parents[2]
STALE = "| method | seeds |\n|---|---|\n| erm | 1 |"


def test_marked_tables_are_the_runs_results_md_tables(tmp_path):
    train, val, test = synthetic.arrays(num_train=400, val_per_group=20, test_per_group=40)
    data = hsfm_jax.FeatureSet.from_arrays(train=train, val=val, test=test)
    hsfm_jax.run(
        data, methods="erm", num_seeds=1, overrides={"erm.steps": 20}, workdir=tmp_path / "run"
    )
    first_table = (tmp_path / "run" / "results.md").read_text().split("\n\n")[1]
    assert first_table.startswith("| method | seeds | test WGA |")

    page = tmp_path / "page.md"
    text = (
        f"Intro.\n\n<!-- results: run -->\n{STALE}\n<!-- /results -->\n\n"
        f"<!-- results: missing -->\n{STALE}\n<!-- /results -->\n"
    )
    page.write_text(text)
    new, missing = docs_tables.rewrite(text, tmp_path)
    assert missing == ["missing"]
    assert new == text.replace(f"run -->\n{STALE}", f"run -->\n{first_table}", 1)

    command = [sys.executable, "-m", "experiments.docs_tables", str(page)]
    check = subprocess.run(
        [*command, "--check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"},
    )
    assert check.returncode == 1 and page.read_text() == text, check.stderr
    assert "missing/results.json not found" in check.stderr
    write = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"},
    )
    assert write.returncode == 0 and page.read_text() == new, write.stderr
    again = subprocess.run(
        [*command, "--check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"},
    )
    assert again.returncode == 0, again.stderr


def test_the_documented_pages_have_well_formed_markers():
    for page in (ROOT / "README.md", ROOT / "docs" / "results.md"):
        text = page.read_text()
        found = docs_tables.MARKED.findall(text)
        assert len(found) == text.count("<!-- results: ") == text.count("<!-- /results -->")
        for _, run, table, _ in found:
            assert run.startswith("runs/") and table.startswith("| method | seeds |"), page
