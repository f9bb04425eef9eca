"""What the training-set reweighting baselines (GroupDRO, JTT, AFR) share.

- the split models are selected on (``data["select"]`` when the feature set has one, else val;
  `hsfm_jax.core.selection.score` scores a head on it);
- training with checkpoints: advance a state chunk by chunk, score the head after each chunk,
  keep the best (early stopping by the validation metric, as every one of these papers tunes);
- seeds of a deterministic (full-batch) method computed once and repeated;
- the train scaler every one of them trains under (DFR's, folded into the heads);
- their `streams_train` and `group_use` (`hsfm_jax.methods.contract`): train on the device, one row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hsfm_jax.core import heads, losses, scaling
from hsfm_jax.data import buckets
from hsfm_jax.data.features import FeatureSet, Split, SplitArrays, to_device

# ----------------------------------------------------------------------------- selection


def selection_split(data: FeatureSet) -> Split:
    """The split that picks models: ``select`` when the feature set has one, else val."""
    return data["select"] if "select" in data.splits else data.val


def loss(head: heads.LinearHead, split: SplitArrays) -> jnp.ndarray:
    """() the mean cross-entropy of `head` on `split`'s own rows (the selection split's loss
    curve; padding rows, label -1, left out: `hsfm_jax.data.buckets`)."""
    logits = heads.apply(head, split.features)
    per_example = losses.per_example_cross_entropy(logits=logits, labels=split.labels)
    valid = buckets.valid(split.labels)
    return jnp.sum(jnp.where(valid, per_example, 0.0)) / jnp.sum(valid)


def take(tree, index: jnp.ndarray):
    """Entry `index` of every leaf's leading axis."""
    return jax.tree_util.tree_map(lambda x: x[index], tree)


def select_best(out: dict) -> dict:
    """Adds the best grid point per seed to a seeds x grid result: ``selected`` (S,) the argmax
    of ``score`` (S, P) and ``selected_head`` (S, C, d) that point's ``head`` (S, P, C, d)."""
    out["selected"] = jnp.argmax(out["score"], axis=1)
    out["selected_head"] = jax.vmap(take)(out["head"], out["selected"])
    return out


def best_over_checkpoints(
    advance: Callable,
    state,
    keys: jax.Array,
    *,
    head_of: Callable,
    score_of: Callable,
    loss_of: Callable | None = None,
) -> dict:
    """Runs ``state = advance(state, key)`` for each key, scoring the head after each call.

    Args:
      advance: (state, key) -> state, one chunk of training (e.g. ``eval_every`` steps).
      state: the initial training state (a pytree).
      keys: (K,) PRNG keys, one per chunk.
      head_of: state -> `LinearHead` to score.
      score_of: head -> () score, higher is better.
      loss_of: optional head -> () loss, recorded for the training curves.

    Returns:
      dict with ``state`` (after the last chunk), ``head`` (the best-scoring checkpoint, the first
      one on ties, as ``np.argmax``), ``score`` (its score), ``checkpoint`` (its 1-based index) and
      ``scores`` (K,) every checkpoint's score (and ``losses`` (K,) with `loss_of`).
    """

    def chunk(carry, key):
        state, best_head, best_score, best_index, index = carry
        state = advance(state, key)
        head = head_of(state)
        value = score_of(head)
        better = value > best_score
        best_head = jax.tree_util.tree_map(
            lambda new, old: jnp.where(better, new, old), head, best_head
        )
        carry = (
            state,
            best_head,
            jnp.where(better, value, best_score),
            jnp.where(better, index, best_index),
            index + 1,
        )
        return carry, value if loss_of is None else (value, loss_of(head))

    head0 = head_of(state)
    minus_inf = jnp.full((), -jnp.inf, jax.eval_shape(score_of, head0).dtype)
    carry0 = (state, head0, minus_inf, jnp.asarray(0), jnp.asarray(1))
    (state, head, best, checkpoint, _), scores = jax.lax.scan(chunk, carry0, keys)
    out = dict(state=state, head=head, score=best, checkpoint=checkpoint)
    if loss_of is None:
        return dict(out, scores=scores)
    return dict(out, scores=scores[0], losses=scores[1])


def chunk_keys(key: jax.Array, steps: int, eval_every: int) -> jax.Array:
    """(K, steps // K) keys, one row per checkpoint chunk (one chunk when eval_every is 0)."""
    every = eval_every or steps
    return jax.random.split(key, steps).reshape(steps // every, every)


def repeat_seeds(tree, num_seeds: int):
    """Leaves with a leading axis of 1 -> the same values for `num_seeds` seeds."""
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, num_seeds, axis=0), tree)


class Inputs(NamedTuple):
    """The arrays a reweighting baseline's program reads (a pytree).

    Attributes:
      features: (N, d) train features; labels, groups: (N,) int32.
      select: the selection split (`selection_split`) on raw features.
      mean, scale: (d,) train's scaler (`train_scaler`), folded into every returned head.
    """

    features: jnp.ndarray
    labels: jnp.ndarray
    groups: jnp.ndarray
    select: SplitArrays
    mean: jnp.ndarray
    scale: jnp.ndarray


def inputs(data: FeatureSet, standardize: bool) -> Inputs:
    """`Inputs` of `data` on the device, in its dtype: train's features raw (`standardized`
    standardizes them inside the program that reads them)."""
    train = data.train.to_arrays()
    mean, scale = train_scaler(data, standardize)
    select = selection_split(data).to_arrays()
    return Inputs(train.features, train.labels, train.groups, select, mean, scale)


def standardized(inputs: Inputs) -> Inputs:
    """`inputs` with train's features standardized by its scaler."""
    return inputs._replace(features=(inputs.features - inputs.mean) / inputs.scale)


def train_scaler(data: FeatureSet, standardize: bool) -> tuple[jax.Array, jax.Array]:
    """(d,) mean and scale of train's features (`scaling.host_scaler`), or 0 and 1 when the method
    does not standardize, on the device in the data's dtype."""
    if standardize:
        mean, scale = scaling.host_scaler(data.train.features)
    else:
        mean, scale = np.zeros(data.feature_dim), np.ones(data.feature_dim)
    return to_device(mean, data.dtype), to_device(scale, data.dtype)


# ----------------------------------------------------------------------------- contract


def streams_train(config) -> bool:
    """`streams_train` of GroupDRO, JTT and AFR: they put all of train on the device, so a train
    split over the memory budget is refused rather than streamed (`hsfm_jax.methods`)."""
    del config
    return False


def one_row_group_use(name: str, config, *, train: bool) -> dict[str, dict[str, bool]]:
    """`group_use` of a method with the one row `name`: train's group labels when `train`, val's
    when the resolved config selects by WGA."""
    return {name: {"train": train, "val": config.selection_metric == "wga"}}


def checkpoint_curves(out: dict, eval_every: int, steps: int) -> list:
    """`MethodResult.curves` of a grid of checkpointed trainings (GroupDRO, JTT, AFR): per seed,
    per grid point, the selection score and val loss at each checkpoint, from ``scores`` and
    ``losses`` (S, P, K) and ``grid`` ({name: (P,) values}) of `run`'s ``info``."""
    scores = np.asarray(out["scores"])
    losses = np.asarray(out["losses"]) if "losses" in out else None
    names = list(out["grid"])
    points = [
        ",".join(f"{n}={np.asarray(out['grid'][n])[p]:g}" for n in names)
        for p in range(scores.shape[1])
    ]
    at = (eval_every or steps) * np.arange(1, scores.shape[-1] + 1)
    seeds = []
    for s in range(scores.shape[0]):
        per_checkpoint = {}
        for p, point in enumerate(points):
            per_checkpoint[f"{point}/val_selection"] = scores[s, p]
            if losses is not None:
                per_checkpoint[f"{point}/val_loss"] = losses[s, p]
        seeds.append((per_checkpoint, at))
    return seeds
