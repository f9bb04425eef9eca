"""Every config loads, and the paper configs hold the values printed in the paper's tables."""

import importlib
import re
from pathlib import Path

import pytest

from experiments.configs import paper

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT.parent / "shared" / "papers" / "hsfm_eccv2026.txt"
CONFIGS = sorted(
    p.stem for p in (ROOT / "experiments" / "configs").glob("*.py")
    if p.stem not in ("__init__", "common", "paper", "finegrained")
)  # fmt: skip
ROWS = {
    "support_per_class": "Support set size per class",
    "inner_steps": "T",
    "inner_lr": "Inner learning rate",
    "meta_lr": "Outer learning rate",
    "meta_steps": "KH",
    "hard_set_size": "Khard",
    "epochs": "epochs",
}
NUMBER = re.compile(r"(\d+(?:\.\d+)?)(?:\s*×\s*10\s*[−-]\s*(\d+))?")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads(name):
    config = importlib.import_module(f"experiments.configs.{name}").get_config()
    assert config.num_seeds >= 1 and config.hsfm.inner_steps >= 1


def _paper_table(text: str, number: int) -> dict[str, dict[str, float]]:
    """{dataset: {row label: value}} parsed from the text of Table `number`."""
    start = text.index(f"Table {number}: Hyperparameters")
    lines = text[start:].splitlines()
    header = next(line for line in lines if line.startswith("Hyperparameter "))
    datasets = header.split()[1:]
    table = {d: {} for d in datasets}
    for label in ROWS.values():
        line = next(
            line for line in lines
            if re.match(rf"{re.escape(label)}\s+\d", line, flags=re.IGNORECASE)
        )  # fmt: skip
        values = [
            float(m) * 10 ** -int(e) if e else float(m)
            for m, e in NUMBER.findall(line[len(label) :])
        ]
        assert len(values) == len(datasets), line
        for dataset, value in zip(datasets, values, strict=True):
            table[dataset][label] = value
    return table


@pytest.mark.skipif(
    not PAPER.is_file(), reason="the paper text (../shared/papers) is not beside the repo"
)
@pytest.mark.parametrize("number, backbone", [(11, "resnet50"), (12, "vit_b16"), (13, "convnext")])
def test_paper_hyperparameters_match_the_paper_text(number, backbone):
    table = _paper_table(PAPER.read_text(), number)
    for dataset, rows in table.items():
        config = importlib.import_module(
            f"experiments.configs.{dataset.lower()}_{backbone}"
        ).get_config()
        assert config.paper.hyperparameters == f"Table {number}"
        for field, label in ROWS.items():
            assert config.hsfm[field] == pytest.approx(rows[label]), (dataset, field)


def test_every_paper_entry_has_a_config():
    for dataset, backbone in paper.HYPERPARAMETERS:
        assert f"{dataset}_{backbone}" in CONFIGS
