"""ERM fine-tuning: a killed run resumes to the same weights; its checkpoint exports with a head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from feature_export import backbones, datasets
from feature_export.export import export_features
from feature_export.train_erm import RECIPES, main, train
from hsfm_jax.data import features

TINY = [
    "--arch=resnet50",
    "--random_init",
    "--image_size=32",
    "--batch_size=4",
    "--lr=1e-5",
    "--num_threads=1",
    "--quiet",
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def waterbirds_dir(tmp_path_factory):
    """A Waterbirds-layout fixture: 6 train, 4 val, 4 test images."""
    root = tmp_path_factory.mktemp("waterbirds")
    rows = ["img_id,img_filename,y,split,place,place_filename"]
    rng = np.random.default_rng(0)
    specs = [(y, p, 0) for y in (0, 1) for p in (0, 1, y)] + [
        (y, p, s) for s in (1, 2) for y in (0, 1) for p in (0, 1)
    ]
    for i, (y, place, split) in enumerate(specs):
        name = f"{y:03d}.Bird/img_{i}.jpg"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), np.uint8)).save(root / name)
        rows.append(f"{i + 1},{name},{y},{split},{place},x.jpg")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def _state(workdir):
    return torch.load(workdir / "checkpoint.pt", weights_only=True)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, waterbirds_dir):
    data = f"--data_dir={waterbirds_dir}"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["--dataset=waterbirds", data, f"--workdir={straight}", "--epochs=2", *TINY]) == 0
    # A run killed after its first epoch, then the same command rerun with the full budget.
    assert main(["--dataset=waterbirds", data, f"--workdir={resumed}", "--epochs=1", *TINY]) == 0
    assert _state(resumed)["epoch"] == 1
    assert main(["--dataset=waterbirds", data, f"--workdir={resumed}", "--epochs=2", *TINY]) == 0

    a, b = _state(straight), _state(resumed)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    history = json.loads((resumed / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and "wga" in history[-1]["val"]
    config = json.loads((straight / "config.json").read_text())
    assert config["weight_decay"] == RECIPES["waterbirds"]["weight_decay"] and config["lr"] == 1e-5

    # The checkpoint is a --weights file for the exporter, with the fine-tuned fc as head.npz.
    dataset = datasets.get("waterbirds", data_dir=waterbirds_dir)
    backbone = backbones.get(
        "resnet50", dataset=dataset, weights=straight / "checkpoint.pt", image_size=32
    )
    export_features(dataset, backbone, tmp_path / "features", batch_size=8, show_progress=False)
    loaded = features.load(tmp_path / "features")
    np.testing.assert_allclose(loaded.head_weight, a["model"]["fc.weight"].numpy())


def test_workdir_of_another_recipe_is_refused(tmp_path, waterbirds_dir):
    dataset = datasets.get("waterbirds", data_dir=waterbirds_dir)
    kwargs = dict(arch="resnet50", random_init=True, image_size=32, batch_size=8, epochs=1)
    train(dataset, workdir=tmp_path, evaluate_val=False, show_progress=False, **kwargs)
    with pytest.raises(ValueError, match=r"checkpoint\.pt: was trained with lr=0\.001"):
        train(dataset, workdir=tmp_path, lr=0.1, show_progress=False, **kwargs)
    assert (
        main(["--dataset=waterbirds", "--data_dir=/nonexistent", f"--workdir={tmp_path}", *TINY])
        == 1
    )


def test_robust_objectives_train_end_to_end(tmp_path, waterbirds_dir):
    """--objective=group_dro|jtt|lisa: each trains; GroupDRO's q resumes; JTT upsamples."""
    data = f"--data_dir={waterbirds_dir}"
    run = lambda workdir, *extra: main(
        ["--dataset=waterbirds", data, f"--workdir={workdir}", *TINY, *extra]
    )
    # GroupDRO: a kill after epoch 1 and a rerun equal the uninterrupted run, q included.
    dro = ["--objective=group_dro", "--dro_step_size=0.5"]
    assert run(tmp_path / "dro", "--epochs=2", *dro) == 0
    assert run(tmp_path / "dro_resumed", "--epochs=1", *dro) == 0
    assert run(tmp_path / "dro_resumed", "--epochs=2", *dro) == 0
    a, b = _state(tmp_path / "dro"), _state(tmp_path / "dro_resumed")
    torch.testing.assert_close(b["objective_state"]["q"], a["objective_state"]["q"])
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    q = json.loads((tmp_path / "dro" / "group_dro_q.json").read_text())["q"]
    assert sum(q) == pytest.approx(1.0) and max(q) > 0.25 + 1e-4  # moved off uniform
    assert a["config"]["objective_settings"] == {"dro_step_size": 0.5, "dro_adjustment": 0.0}
    # A workdir of another objective is refused.
    assert run(tmp_path / "dro", "--epochs=2", "--objective=lisa") == 1

    # JTT: identification for T epochs, then every error appears lambda_up times.
    assert run(tmp_path / "jtt", "--epochs=1", "--objective=jtt", "--jtt_epochs=1",
               "--jtt_up_weight=4") == 0  # fmt: skip
    errors = json.loads((tmp_path / "jtt" / "jtt_errors.json").read_text())
    assert (tmp_path / "jtt" / "jtt_identify" / "checkpoint.pt").is_file()
    history = json.loads((tmp_path / "jtt" / "history.json").read_text())
    assert history[-1]["train_examples"] == len(errors["rows"]) + 3 * errors["num_errors"]

    # LISA: trains on mixed, group-balanced batches.
    assert run(tmp_path / "lisa", "--epochs=1", "--objective=lisa") == 0
    assert _state(tmp_path / "lisa")["config"]["objective"] == "lisa"
