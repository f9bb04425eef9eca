"""ProgramCheckpoints: round trip, and a clear error for a checkpoint of another state layout."""

import numpy as np
import pytest

from hsfm_jax.core import heads
from hsfm_jax.runtime import checkpointing


def _tree(with_logits: bool):
    state = {"head": heads.LinearHead(np.ones((2, 3)), np.zeros(2)), "support": np.ones((4, 3))}
    if with_logits:
        state["val_logits"] = np.zeros((5, 2))
    return {"state": state, "history": {"val_wga": np.arange(3.0)}}


def test_round_trip(tmp_path):
    checkpoints = checkpointing.ProgramCheckpoints(tmp_path / "ckpt")
    tree = _tree(with_logits=True)
    checkpoints.save(3, tree)
    restored = checkpointing.ProgramCheckpoints(tmp_path / "ckpt").restore(3, tree)  # as on resume
    np.testing.assert_array_equal(restored["state"]["head"].weight, tree["state"]["head"].weight)
    np.testing.assert_array_equal(restored["history"]["val_wga"], tree["history"]["val_wga"])


def test_zero_size_leaves_round_trip(tmp_path):
    """A run without groups has an (S, E, 0) per-group history; orbax alone refuses to save it."""
    tree = _tree(with_logits=True)
    tree["history"]["hard_set_group_counts"] = np.zeros((3, 4, 0), np.int32)
    checkpointing.ProgramCheckpoints(tmp_path / "ckpt").save(3, tree)
    restored = checkpointing.ProgramCheckpoints(tmp_path / "ckpt").restore(3, tree)
    empty = restored["history"]["hard_set_group_counts"]
    assert empty.shape == (3, 4, 0) and empty.dtype == np.int32
    np.testing.assert_array_equal(restored["history"]["val_wga"], tree["history"]["val_wga"])


def test_other_layout_is_named(tmp_path):
    checkpoints = checkpointing.ProgramCheckpoints(tmp_path / "ckpt")
    checkpoints.save(3, _tree(with_logits=False))  # as written before State had val_logits
    resumed = checkpointing.ProgramCheckpoints(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"missing: state/val_logits; not expected: none.*delete"):
        resumed.restore(3, _tree(with_logits=True))


def test_check_record_without_write_only_checks(tmp_path):
    """The processes other than 0 of a multi-process sweep check the record but never write it."""
    path = tmp_path / "sweep_config.json"
    checkpointing.check_record(path, {"a": 1}, write=False)
    assert not path.exists()
    checkpointing.check_record(path, {"a": 1})
    checkpointing.check_record(path, {"a": 1}, write=False)
    with pytest.raises(ValueError, match=r"different configuration \(a: 1 in the workdir, 2 now"):
        checkpointing.check_record(path, {"a": 2}, write=False)
