"""Training curves as TensorBoard event files, the comparison figure and report.html of a run."""

import json
import math
import re

import numpy as np
import pytest

from experiments import train
from hsfm_jax.reporting import figures, metric_writers


def test_crc32c_known_value():
    # RFC 3720 B.4: CRC-32C of 32 zero bytes, and the classic check string
    assert metric_writers.crc32c(bytes(32)) == 0x8A9136AA
    assert metric_writers.crc32c(b"123456789") == 0xE3069283


def test_events_read_back_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    values = {
        "loss": np.asarray([2.5, 1.25, float("nan"), 0.5], np.float32),
        "group/a=1": np.asarray([0.0, 1.0, -3.0, 1e-8], np.float32),
    }
    steps = {"loss": np.arange(1, 5), "group/a=1": np.asarray([10, 20, 30, 40])}
    metric_writers.write_scalars(tmp_path, values, steps)
    accumulator = event_accumulator.EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert sorted(accumulator.Tags()["scalars"]) == sorted(values)
    for tag, expected in values.items():
        events = accumulator.Scalars(tag)
        assert [e.step for e in events] == steps[tag].tolist()
        np.testing.assert_array_equal(np.asarray([e.value for e in events], np.float32), expected)
    ours = metric_writers.read_scalars(tmp_path)
    for tag, expected in values.items():
        np.testing.assert_array_equal(ours[tag][0], steps[tag])
        np.testing.assert_array_equal(ours[tag][1], expected)


def test_mismatched_steps_fail(tmp_path):
    with pytest.raises(ValueError, match="loss: 3 values for 2 steps"):
        metric_writers.write_scalars(tmp_path, {"loss": np.zeros(3)}, {"loss": np.arange(2)})


def test_corrupt_event_file_fails(tmp_path):
    path = metric_writers.write_scalars(tmp_path, {"x": np.ones(3)}, {"x": np.arange(3)})
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad record checksum"):
        metric_writers.read_scalars(tmp_path)


def _float(x):
    return math.nan if x is None else float(x)


def test_hsfm_events_equal_history_json(small_run):
    workdir, report = small_run
    history = json.loads((workdir / "history.json").read_text())["history"]
    group_names = report["group_names"]
    scalar_keys = [k for k, v in history.items() if np.ndim(v) == 2]
    assert {"outer_loss_before", "outer_loss_after", "edit_norm", "val_wga", "test_wga"} <= set(
        scalar_keys
    )
    for seed in range(2):
        events = metric_writers.read_scalars(workdir / "tensorboard" / "hsfm" / f"seed_{seed}")
        for key in scalar_keys:
            expected = np.asarray([_float(v) for v in history[key][seed]], np.float32)
            steps, values = events[key]
            np.testing.assert_array_equal(steps, np.arange(1, len(expected) + 1))
            np.testing.assert_array_equal(values, expected)
        counts = np.asarray(history["hard_set_group_counts"][seed], np.float32)  # (E, G)
        for g, name in enumerate(group_names):
            np.testing.assert_array_equal(events[f"hard_set/{name}"][1], counts[:, g])


def test_baselines_record_checkpoint_curves(small_run):
    workdir, _ = small_run
    root = workdir / "tensorboard"
    assert sorted(p.name for p in root.iterdir()) == ["hsfm", "jtt", "neurontune"]  # ERM: none
    for seed in range(2):
        jtt = metric_writers.read_scalars(root / "jtt" / f"seed_{seed}")
        point = "identification_steps=20,upweight=5"
        steps, scores = jtt[f"{point}/val_selection"]
        np.testing.assert_array_equal(steps, [10, 20, 30, 40])
        assert np.all((scores >= 0) & (scores <= 1))
        assert np.all(np.isfinite(jtt[f"{point}/val_loss"][1]))
        tune = metric_writers.read_scalars(root / "neurontune" / f"seed_{seed}")
        for threshold in ("0", "0.5"):
            for tag in ("val_selection", "val_sfit", "tune_loss"):
                steps, values = tune[f"threshold={threshold}/{tag}"]
                np.testing.assert_array_equal(steps, [1, 2, 3])
                assert np.all(np.isfinite(values)), tag
        assert np.all(tune["threshold=0/tune_loss"][1] > 0)


def test_run_writes_figure_and_page(small_run):
    workdir, report = small_run
    for name in ("results.png", "results.svg", "report.html"):
        assert (workdir / name).stat().st_size > 1000, name
    assert (workdir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (workdir / "report.html").read_text()
    assert page.count("<svg") == 1  # the comparison figure, inline
    assert 'alt="HSFM curves" src="data:image/png;base64,' in page
    assert re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page) is None  # all inline
    assert "<script" not in page
    for row in report["methods"]:
        assert f"<td>{row}</td>" in page, row
    # group-label use beside each row (hsfm selects by val WGA; erm reads no group label)
    labels = [t.get_text() for t in figures.results_figure(report).axes[0].get_yticklabels()]
    assert "hsfm  [✗ / ✓]" in labels and "erm  [✗ / ✗]" in labels


def test_tensorboard_off(small_features_dir, small_run_config, tmp_path):
    config = small_run_config(small_features_dir)
    config.methods = "erm"
    config.tensorboard = False
    train.run(config, tmp_path / "run")
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert (tmp_path / "run" / "report.html").is_file()
    del config.tensorboard  # a config built from JSON may hold any type
    config.tensorboard = "yes"
    with pytest.raises(ValueError, match="tensorboard must be True or False, got 'yes'"):
        train.run(config, tmp_path / "run2")
