"""Row buckets: every split goes on the device padded to one of a few row counts.

Every compiled program is keyed by its shapes, so a new dataset of the same backbone (same d and
C, other split sizes) would compile every program again. With buckets a split of N rows is sent
as `rows(N)` rows: its own, then padding rows with label -1, group -1 and zero features. Every
method, metric and selection counts only the rows with ``labels >= 0`` (`valid`), so padding
changes no result beyond rounding (tests/methods/test_padding.py runs every method both ways in
float64; in float32 sums over more rows round otherwise, which a selection can amplify:
docs/compile_time.md), and two datasets whose splits fall in the same buckets share every
compiled program.

Sizes: every N up to `FLOOR` rows pads to `FLOOR`; above, the next of `PER_OCTAVE` evenly spaced
sizes in N's octave ``(2**(k-1), 2**k]`` (with 2: 768 and 1024, 1536 and 2048, ...), so padding
adds less than half of the rows and each bucket holds the sizes of the quarter to third of its
rows below it. A split whose size leaves its bucket compiles the programs that read it once more.
Fewer, wider buckets reuse more programs but make every warm run pay for more padding rows
(benchmarks/compile_time.py measures both).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

FLOOR = 256
PER_OCTAVE = 2


def rows(n: int, floor: int = FLOOR) -> int:
    """The bucket of a split of `n` rows: ``floor`` up to it, else the next multiple of
    ``2**(k-1) / PER_OCTAVE`` where ``2**(k-1) < n <= 2**k``."""
    if n <= floor:
        return floor
    step = max(1, 2 ** ((n - 1).bit_length() - 1) // PER_OCTAVE)
    return -(-n // step) * step


def pad(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, size: int):
    """Host arrays with ``size - N`` padding rows appended: zero features, label and group -1.

    Args:
      features: (N, d); labels, groups: (N,) int. size: >= N.
    Returns:
      (features (size, d), labels (size,), groups (size,)), the inputs when ``size == N``.
    """
    extra = size - labels.shape[0]
    if extra < 0:
        raise ValueError(f"cannot pad {labels.shape[0]} rows to {size}")
    if extra == 0:
        return features, labels, groups
    features = np.concatenate([features, np.zeros((extra, *features.shape[1:]), features.dtype)])
    minus_one = lambda a: np.concatenate([a, np.full((extra,), -1, a.dtype)])
    return features, minus_one(labels), minus_one(groups)


def valid(labels: jnp.ndarray) -> jnp.ndarray:
    """(N,) bool, the rows that are the split's own (not padding): ``labels >= 0``."""
    return labels >= 0


def count(labels: jnp.ndarray) -> jnp.ndarray:
    """() int32, the split's own rows (traced: the same program serves every size of a bucket)."""
    return jnp.sum(valid(labels), dtype=jnp.int32)
