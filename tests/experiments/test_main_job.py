"""The README's main job (digit dominoes), end to end on the same code path, small settings."""

import json
from pathlib import Path

import pytest

from experiments import train
from experiments.configs import digit_dominoes

pytestmark = pytest.mark.slow  # every method on the main job


def test_main_job_exports_and_every_row_equals_its_golden_per_seed_values(tmp_path):
    config = digit_dominoes.get_config()
    config.features_dir = str(tmp_path / "features")
    config.export.weights = str(tmp_path / "digit_cnn.pt")
    config.export.dataset_args = {"train_copies": 1}
    config.export.backbone_args = {"epochs": 2}
    config.num_seeds = 2
    config.hsfm.epochs = 3
    config.hsfm.grid = "none"  # the configured rates alone, as the golden values
    config.dfr.num_retrains = 2
    config.neurontune.epochs = 2
    report = train.run(config, tmp_path / "run")
    # exported (with head.npz, so the backbone's own head is a row), then every method ran
    assert (tmp_path / "features" / "meta.json").is_file()
    assert (tmp_path / "digit_cnn.pt").is_file()
    expected = {
        "backbone_head",
        "erm",
        "dfr",
        "tr_dfr",
        "neurontune_wga",
        "neurontune_sfit",
        "hsfm",
    }
    assert expected <= set(report["methods"])
    assert report["dataset"] == "digit_dominoes" and report["backbone"] == "digit_cnn"
    assert "| hsfm | 2 |" in (tmp_path / "run" / "results.md").read_text()
    # every row, per seed, equals tests/golden/digit_dominoes_reference.json
    reference = Path(__file__).parents[1] / "golden" / "digit_dominoes_reference.json"
    for row, splits in json.loads(reference.read_text())["rows"].items():
        for split, metrics in splits.items():
            for metric, per_seed in metrics.items():
                got = report["methods"][row][split][metric]["per_seed"]
                assert got == per_seed, (row, split, metric)
    # a second run reuses the export (same fingerprint) and the trained weights
    meta = json.loads((tmp_path / "features" / "meta.json").read_text())
    train.run(config, tmp_path / "run2")
    assert json.loads((tmp_path / "features" / "meta.json").read_text()) == meta
