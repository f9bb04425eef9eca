"""Divergence is an error, not a row: non-finite heads, logits and histories are found and named.

A head with NaN weights predicts class 0 everywhere and would print as a plausible "50.0" row;
`check_rows` raises instead, naming the row, the seed and (for HSFM) the first epoch where the
history went non-finite, or where a loss grew past `LOSS_BOUND` (a cross-entropy that large
means logits of that size: the run diverged even though every number is still finite).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hsfm_jax.core import heads
from hsfm_jax.runtime import program_cache

# A mean cross-entropy past this is a diverged run (a uniform guess over C classes costs log C).
LOSS_BOUND = 1e6


class Diverged(ValueError):
    """A method produced non-finite heads or logits."""


@program_cache.jit
def _finite_per_seed(head: heads.LinearHead, features: jnp.ndarray) -> jnp.ndarray:
    """(S,) bool: the seed's head and its logits on `features` (N, d) are all finite."""

    def one(h):
        params = jnp.all(jnp.isfinite(h.weight)) & jnp.all(jnp.isfinite(h.bias))
        return params & jnp.all(jnp.isfinite(heads.apply(h, features)))

    return jax.vmap(one)(head)


def first_bad_epoch(history: Mapping[str, np.ndarray], seed: int) -> tuple[int, str] | None:
    """(1-based epoch, history key) of the first non-finite scalar of a seed's history, or of a
    loss (a key with "loss" in its name) past `LOSS_BOUND`."""
    first = None
    for key, values in history.items():
        values = np.asarray(values)
        if values.ndim != 2 or not np.issubdtype(values.dtype, np.floating):
            continue
        row = values[seed]
        bad_values = ~np.isfinite(row)
        if "loss" in key:
            bad_values |= np.abs(np.nan_to_num(row)) > LOSS_BOUND
        bad = np.flatnonzero(bad_values)
        if bad.size and (first is None or bad[0] + 1 < first[0]):
            first = (int(bad[0]) + 1, key)
    return first


def check_rows(
    method: str,
    rows: Mapping[str, heads.LinearHead],
    splits: Mapping[str, jnp.ndarray],
    history: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Raises `Diverged` for the first row whose head or logits on a split are non-finite.

    Args:
      method: names the method in the message.
      rows: {row: heads with a leading seed axis}.
      splits: {split name: features (N, d)} the logits are checked on.
      history: per-epoch values that must stay finite ((S, epochs) arrays, e.g. HSFM's outer
        losses and edit norm), to name the first bad epoch.
    """
    if history is not None:
        num_seeds = next(iter(rows.values())).weight.shape[0]
        for seed in range(num_seeds):
            if (bad := first_bad_epoch(history, seed)) is not None:
                raise Diverged(
                    f"{method} diverged: seed {seed}, first non-finite at epoch {bad[0]} "
                    f"({bad[1]}, or past {LOSS_BOUND:.0e} for a loss); lower the learning rates "
                    "or check the features"
                )
    for row, head in rows.items():
        for split, features in splits.items():
            finite = np.asarray(_finite_per_seed(head, features))
            if finite.all():
                continue
            seed = int(np.flatnonzero(~finite)[0])
            raise Diverged(
                f"{method} diverged: row {row!r}, seed {seed} has non-finite weights or logits "
                f"on {split}; lower the learning rates or check the features"
            )
