"""Long epoch loops in chunks: a progress bar over epochs, checkpoints, resume after a kill.

A method whose epochs are one `lax.scan` (HSFM, NeuronTune) also offers them as a *chunk*:
``chunk(state, first_epoch) -> (state, history)`` runs `chunk_epochs` epochs from `first_epoch`,
skipping (inside the program) those past the last epoch. `first_epoch` is traced, so every chunk
of a run, the shorter last one included, is one compiled program, and chained chunks compute
exactly what the whole scan does (the methods' tests check equality). `run` drives the chunks
from Python:

- after each chunk the bar (tqdm, stderr) moves by the chunk's epochs and shows `status` of the
  last epoch (e.g. the current val WGA);
- the state and the history so far are saved with orbax (`checkpointing.ProgramCheckpoints`) after
  a chunk once `checkpoint_seconds` have passed since the last save (0: after every chunk), so
  short runs write nothing and a long one loses at most that much work when killed;
- a call that finds a checkpoint under its directory resumes from the latest one. Which directory
  belongs to which run (config and features) is the caller's choice (`hsfm_jax.runtime.experiment`,
  `hsfm_jax.sweep`).

A state spread over several devices or processes (a sweep's runs axis) says how it moves to the
host and back (`Placement`); the loop is otherwise the same for a method and a sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from hsfm_jax.runtime import checkpointing


def _host(tree: Any) -> Any:
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


class Placement(NamedTuple):
    """Where the loop's arrays live; the default keeps a state that one process holds.

    Attributes:
      to_host: device tree -> the host arrays that the history keeps and a checkpoint holds
        (a sweep gathers its runs from every process and drops the padding runs).
      host_shapes: the same on shapes (a tree of `jax.ShapeDtypeStruct`), to restore with.
      to_device: a restored state (host arrays) -> the state `chunk` takes.
      agree: what this process read from disk (whether there are checkpoints, the latest
        epoch saved) -> process 0's, so that every process resumes from the same epoch.
    """

    to_host: Callable[[Any], Any] = _host
    host_shapes: Callable[[Any], Any] = lambda shapes: shapes
    to_device: Callable[[Any], Any] = jax.device_put
    agree: Callable[[Any], Any] = lambda value: value


class Options(NamedTuple):
    """How a chunked loop reports and saves (methods that do not loop over epochs ignore it).

    Attributes:
      checkpoint_dir: where the loop saves its state and resumes from; None: no checkpoints.
      checkpoint_seconds: least time between two saves; 0 saves after every chunk.
      progress: show a tqdm bar over epochs on stderr.
      name: the bar's label and the log's (e.g. the method).
      keep_damaged: a checkpoint that cannot be read stops the loop with one error naming it
        (a sweep's, which its user resumes by hand) instead of being removed so that the loop
        starts afresh (a method's, under the run's workdir).
      after_chunk: (epochs done, epochs run by this call) -> None, called after each chunk
        (and its save); e.g. a sweep's bar over settings.
      placement: where the state lives (`Placement`).
    """

    checkpoint_dir: Path | None = None
    checkpoint_seconds: float = 60.0
    progress: bool = False
    name: str = ""
    keep_damaged: bool = False
    after_chunk: Callable[[int, int], None] | None = None
    placement: Placement = Placement()


PLAIN = Options()  # no checkpoints, no progress bar: a library call


class Outcome(NamedTuple):
    """What `run` returns.

    Attributes:
      state: the state after the last epoch (device arrays).
      history: host arrays with `epochs` along the epoch axis.
      resumed_from: the epoch the checkpoint held (0 when this call started from `init`).
    """

    state: Any
    history: dict
    resumed_from: int


def run(
    init: Callable[[], Any],
    chunk: Callable[[Any, jnp.ndarray], tuple[Any, dict]],
    *,
    epochs: int,
    chunk_epochs: int,
    options: Options = PLAIN,
    epoch_axis: int = 1,
    status: Callable[[dict], dict] | None = None,
) -> Outcome:
    """Runs (or resumes) `epochs` epochs as chunks of `chunk_epochs`.

    Args:
      init: () -> the state before the first epoch, a pytree of arrays (no typed PRNG keys:
        keep `jax.random.key_data`, so the state can be saved).
      chunk: (state, first_epoch () int32) -> (state, history), history arrays with
        `chunk_epochs` along `epoch_axis`; rows past the last epoch are dropped.
      epochs, chunk_epochs: epochs of the run and of one chunk (>= 1).
      options: checkpoints and progress.
      epoch_axis: the epoch axis of the history arrays (1 behind a leading seed axis).
      status: the history of the last epoch (host arrays, epoch axis kept, length 1) -> the
        bar's postfix, e.g. {"val wga": "0.812"}.
    """
    if chunk_epochs < 1:
        raise ValueError(f"chunk_epochs must be a positive integer, got {chunk_epochs!r}")
    directory = None if options.checkpoint_dir is None else Path(options.checkpoint_dir)
    place = options.placement
    checkpoints = None  # opened on the first save, or now when there may be one to resume
    done, state, history = 0, None, None
    if directory is not None and place.agree(directory.is_dir()):
        checkpoints, done, saved = checkpointing.restore_latest(
            directory,
            lambda epoch: place.host_shapes(_saved_shapes(init, chunk, epoch_axis, epoch)),
            agree=place.agree,
            remove_damaged=not options.keep_damaged,
        )
        if done:
            state, history = place.to_device(saved["state"]), saved["history"]
            logging.info("%s: resumed from epoch %d (%s)", options.name, done, directory)
    resumed_from = done
    if state is None:
        state = init()

    bar = tqdm(
        total=epochs, initial=done, desc=options.name, unit="epoch", disable=not options.progress
    )
    last_save = time.monotonic()
    try:
        while done < epochs:
            state, rows = chunk(state, jnp.asarray(done, jnp.int32))
            ran = min(chunk_epochs, epochs - done)
            rows = {
                k: np.take(v, np.arange(ran), epoch_axis) for k, v in place.to_host(rows).items()
            }
            history = rows if history is None else _concat(history, rows, epoch_axis)
            done += ran
            bar.update(ran)
            if status is not None:
                last = {k: np.take(v, [ran - 1], epoch_axis) for k, v in rows.items()}
                bar.set_postfix(status(last), refresh=False)
            if directory is not None and time.monotonic() - last_save >= options.checkpoint_seconds:
                checkpoints = checkpoints or checkpointing.ProgramCheckpoints(directory)
                checkpoints.save(done, {"state": place.to_host(state), "history": history})
                last_save = time.monotonic()
            if options.after_chunk is not None:
                options.after_chunk(done, done - resumed_from)
    finally:
        bar.close()
        if checkpoints is not None:
            checkpoints.close()
    return Outcome(state=state, history=history, resumed_from=resumed_from)


def _concat(history: dict, rows: dict, axis: int) -> dict:
    return {k: np.concatenate([history[k], rows[k]], axis=axis) for k in history}


def _saved_shapes(init, chunk, epoch_axis: int, epochs: int) -> dict:
    """Shapes of a checkpoint after `epochs` epochs: the state, and history of `epochs` rows."""
    state = jax.eval_shape(init)
    rows = jax.eval_shape(chunk, state, jax.ShapeDtypeStruct((), jnp.int32))[1]
    with_epochs = lambda x: jax.ShapeDtypeStruct(
        x.shape[:epoch_axis] + (epochs,) + x.shape[epoch_axis + 1 :], x.dtype
    )
    return {"state": state, "history": jax.tree_util.tree_map(with_epochs, rows)}
