"""HSFM in chunks of epochs (`hsfm.run_chunk_seeds` driven by `epoch_loop.run`): exactly the
numbers of one scan, one compiled program for every chunk, resume from a checkpoint, progress."""

import jax
import numpy as np
import pytest

from hsfm_jax.methods.hsfm import algorithm as hsfm
from hsfm_jax.runtime import epoch_loop

EPOCHS = 7
SETTINGS = hsfm.Settings(
    num_classes=2,
    num_groups=4,
    support_per_class=8,
    hard_set_size=10,
    inner_steps=3,
    meta_steps=2,
    epochs=EPOCHS,
)


@pytest.fixture(scope="module")
def problem(hsfm_problem):
    return (*hsfm_problem, jax.random.split(jax.random.key(1), 3))


def _chunked(problem, chunk_epochs, settings=SETTINGS, options=epoch_loop.PLAIN, stop_after=None):
    arrays, head, rates, keys = problem
    calls = []

    def chunk(state, first_epoch):
        if not isinstance(first_epoch, jax.core.Tracer):  # not the resume's shape inference
            if stop_after is not None and len(calls) == stop_after:
                raise KeyboardInterrupt  # a kill between two chunks
            calls.append(int(first_epoch))
        return hsfm.run_chunk_seeds(
            state, arrays, rates, first_epoch, settings=settings, chunk_epochs=chunk_epochs
        )

    done = epoch_loop.run(
        lambda: hsfm.init_seeds(arrays, head, rates, keys, settings=settings),
        chunk,
        epochs=settings.epochs,
        chunk_epochs=chunk_epochs,
        options=options,
        status=lambda last: {"val wga": f"{last['val_selection'].mean():.4f}"},
    )
    return hsfm.finish(done.state, done.history), done.resumed_from, calls


def _assert_equal(got: hsfm.Result, want: hsfm.Result):
    assert set(got.history) == set(want.history)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


@pytest.mark.parametrize("chunk_epochs", [1, 3, EPOCHS, EPOCHS + 2])
def test_chunks_equal_one_scan(problem, chunk_epochs):
    arrays, head, rates, keys = problem
    one_scan = hsfm.run_seeds(arrays, head, rates, keys, settings=SETTINGS)
    chunked, resumed_from, calls = _chunked(problem, chunk_epochs)
    assert calls == list(range(0, EPOCHS, chunk_epochs)) and resumed_from == 0
    assert chunked.history["val_wga"].shape == (3, EPOCHS)
    _assert_equal(chunked, one_scan)  # bit for bit: heads, support, best epoch, every history row


def test_one_program_for_every_chunk(problem):
    settings = SETTINGS._replace(epochs=8)  # a program of its own: count what this test adds
    before = hsfm.run_chunk_seeds._cache_size()
    _chunked(problem, 3, settings)  # chunks of 3, 3 and 2 epochs
    assert hsfm.run_chunk_seeds._cache_size() == before + 1
    _chunked(problem, 3, settings)
    assert hsfm.run_chunk_seeds._cache_size() == before + 1


def test_killed_run_resumes_from_its_checkpoint(problem, tmp_path):
    uninterrupted, _, _ = _chunked(problem, 2)
    options = epoch_loop.Options(checkpoint_dir=tmp_path / "ckpt", checkpoint_seconds=0)
    before = hsfm.run_chunk_seeds._cache_size()
    with pytest.raises(KeyboardInterrupt):
        _chunked(problem, 2, options=options, stop_after=2)
    resumed, resumed_from, calls = _chunked(problem, 2, options=options)
    assert resumed_from == 4 and calls == [4, 6]  # epochs 5-7 only
    assert hsfm.run_chunk_seeds._cache_size() == before  # the restored state hits the program
    _assert_equal(resumed, uninterrupted)


def test_progress_bar_shows_epochs_and_val_wga(problem, capsys):
    _chunked(problem, 3, options=epoch_loop.Options(progress=True, name="hsfm"))
    err = capsys.readouterr().err
    assert "hsfm: 100%" in err and f"{EPOCHS}/{EPOCHS}" in err and "val wga=0." in err
    _chunked(problem, 3, options=epoch_loop.Options(progress=False, name="hsfm"))
    assert capsys.readouterr().err == ""
