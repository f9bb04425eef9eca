"""Train splits larger than memory: the budget test and host-side minibatches from the memmap.

`features.load` memory-maps every split, so a split is only read where rows are taken. A
method that would put all of train on the device (`Split.to_arrays`) first asks `fits`; when
the split is over the budget it reads it here instead:

- `rows(split, indices, dtype)`: the given rows only (a minibatch, HSFM's support set);
- `blocks(split, block_rows, dtype)`: all rows in fixed-size blocks (the last one zero-padded, so
  a jitted consumer compiles once), for full-batch passes;
- `prefetch(iterable)`: optionally, a background thread keeps the next items ready.

The reader is a plain iterator over the memmap rather than grain or tf.data: tf.data would put
TensorFlow into JAX processes (which the project keeps out, tests/methods/test_methods.py) and grain is
not among the environment's packages; reading a batch is one numpy gather and a cast. The
prefetching thread measured no gain on 2 shared cores, where the cast competes with XLA's
threads (benchmarks/results/stream_erm_cpu.json), so callers leave it off by default.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

import numpy as np

from hsfm_jax.data.features import Split

_GIB = 2**30


def device_bytes(split: Split, dtype) -> int:
    """Bytes the split's features take once on the device in `dtype` (padding rows included)."""
    d = split.features.shape[1]
    return int(split.num_rows) * int(d) * np.dtype(dtype).itemsize


def fits(split: Split, budget_gb: float, dtype) -> bool:
    """Whether the split's features (in `dtype`) fit the memory budget (GiB) for the device."""
    return device_bytes(split, dtype) <= budget_gb * _GIB


def rows(split: Split, indices: np.ndarray, dtype) -> np.ndarray:
    """(len(indices), d) features of `indices` in `dtype`: only those rows are read."""
    return np.asarray(split.features[np.asarray(indices)], dtype=dtype)


def blocks(split: Split, block_rows: int, dtype) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (features (block_rows, d) `dtype`, valid (block_rows,) bool) over all rows in
    order; the last block is zero-padded and its padding rows are not valid."""
    n, d = split.features.shape
    for start in range(0, n, block_rows):
        block = np.asarray(split.features[start : start + block_rows], dtype=dtype)
        valid = np.ones((block_rows,), bool)
        if block.shape[0] < block_rows:
            valid[block.shape[0] :] = False
            block = np.concatenate([block, np.zeros((block_rows - block.shape[0], d), dtype)])
        yield block, valid


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Iterates `items` in a background thread, at most `depth` ahead of the consumer.

    An exception in the producer is raised in the consumer at the item where it happened.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as e:  # handed to the consumer
            put((done, e))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()
