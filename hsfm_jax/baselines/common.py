"""What the training-set reweighting baselines (GroupDRO, JTT, AFR) share.

- config checks that raise a one-line ``ValueError`` naming ``"<method>.<field>"``, the rule and
  the value, before anything is compiled;
- the split models are selected on (``data["select"]`` when the feature set has one, else val)
  and the selection score of a head on it;
- training with checkpoints: advance a state chunk by chunk, score the head after each chunk,
  keep the best (early stopping by the validation metric, as every one of these papers tunes);
- seeds of a deterministic (full-batch) method computed once and repeated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from hsfm_jax import evaluate, heads
from hsfm_jax.features import FeatureSet, Split, SplitArrays

# ----------------------------------------------------------------------------- config checks

_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "positive": (lambda v: _is_real(v) and math.isfinite(v) and v > 0, "must be > 0 and finite"),
    "non_negative": (
        lambda v: _is_real(v) and math.isfinite(v) and v >= 0,
        "must be >= 0 and finite",
    ),
    "positive_int": (lambda v: _is_int(v) and v > 0, "must be an integer > 0"),
    "non_negative_int": (lambda v: _is_int(v) and v >= 0, "must be an integer >= 0"),
    "fraction": (lambda v: _is_real(v) and 0 < v < 1, "must be in (0, 1)"),
}


def _is_real(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _get(method: str, config: ml_collections.ConfigDict, field: str):
    if field not in config:
        raise ValueError(f"{method}.{field} is missing (see {method}.default_config())")
    return config[field]


def check_known(method: str, config: ml_collections.ConfigDict, known: Sequence[str]) -> None:
    """A field the method does not read is a typo: fail rather than silently ignore it."""
    unknown = sorted(set(config.keys()) - set(known))
    if unknown:
        raise ValueError(f"{method}: unknown config field(s) {unknown}; known: {sorted(known)}")


def check_value(method: str, config: ml_collections.ConfigDict, field: str, rule: str) -> None:
    """``config[field]`` satisfies `rule` (a key of `_RULES`)."""
    value = _get(method, config, field)
    ok, text = _RULES[rule]
    if not ok(value):
        raise ValueError(f"{method}.{field} {text}, got {value!r}")


def check_grid(method: str, config: ml_collections.ConfigDict, field: str, rule: str) -> None:
    """``config[field]`` is a non-empty sequence whose every entry satisfies `rule`."""
    value = _get(method, config, field)
    ok, text = _RULES[rule]
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{method}.{field} must be a non-empty tuple of values, got {value!r}")
    bad = [v for v in value if not ok(v)]
    if bad:
        raise ValueError(f"{method}.{field}: every value {text}, got {bad[0]!r} in {value!r}")


def check_choice(
    method: str, config: ml_collections.ConfigDict, field: str, allowed: Sequence
) -> None:
    value = _get(method, config, field)
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(f"{method}.{field} must be one of {tuple(allowed)}, got {value!r}")


def check_bool(method: str, config: ml_collections.ConfigDict, field: str) -> None:
    value = _get(method, config, field)
    if not isinstance(value, bool):
        raise ValueError(f"{method}.{field} must be True or False, got {value!r}")


def check_eval_every(method: str, config: ml_collections.ConfigDict, steps_field: str) -> None:
    """``eval_every`` is 0 (final head only) or divides the step count (fixed-size chunks)."""
    check_value(method, config, "eval_every", "non_negative_int")
    steps, every = config[steps_field], config.eval_every
    if every and steps % every:
        raise ValueError(
            f"{method}.eval_every must be 0 or divide {method}.{steps_field}={steps}, got {every}"
        )


def check_selection(method: str, config: ml_collections.ConfigDict, data: FeatureSet) -> str:
    """The selection metric's name; a bad ``selection_metric`` names the method's field."""
    _get(method, config, "selection_metric")
    try:
        return evaluate.selection_metric_name(data.num_groups, config.selection_metric)
    except ValueError as error:
        raise ValueError(f"{method}.{error}") from None


# ----------------------------------------------------------------------------- selection


def selection_split(data: FeatureSet) -> Split:
    """The split that picks models: ``select`` when the feature set has one, else val."""
    return data["select"] if "select" in data.splits else data.val


def score(
    head: heads.LinearHead, split: SplitArrays, *, num_classes: int, num_groups: int, metric: str
) -> jnp.ndarray:
    """() the selection metric of `head` on `split` (higher is better)."""
    return evaluate.evaluate_head(head, split, num_classes=num_classes, num_groups=num_groups)[
        metric
    ]


def take(tree, index: jnp.ndarray):
    """Entry `index` of every leaf's leading axis."""
    return jax.tree_util.tree_map(lambda x: x[index], tree)


def best_over_checkpoints(
    advance: Callable,
    state,
    keys: jax.Array,
    *,
    head_of: Callable,
    score_of: Callable,
) -> dict:
    """Runs ``state = advance(state, key)`` for each key, scoring the head after each call.

    Args:
      advance: (state, key) -> state, one chunk of training (e.g. ``eval_every`` steps).
      state: the initial training state (a pytree).
      keys: (K,) PRNG keys, one per chunk.
      head_of: state -> `LinearHead` to score.
      score_of: head -> () score, higher is better.

    Returns:
      dict with ``state`` (after the last chunk), ``head`` (the best-scoring checkpoint, the first
      one on ties, as ``np.argmax``), ``score`` (its score), ``checkpoint`` (its 1-based index) and
      ``scores`` (K,) every checkpoint's score.
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
        return carry, value

    head0 = head_of(state)
    carry0 = (state, head0, jnp.asarray(-jnp.inf), jnp.asarray(0), jnp.asarray(1))
    (state, head, best, checkpoint, _), scores = jax.lax.scan(chunk, carry0, keys)
    return dict(state=state, head=head, score=best, checkpoint=checkpoint, scores=scores)


def chunk_keys(key: jax.Array, steps: int, eval_every: int) -> jax.Array:
    """(K, steps // K) keys, one row per checkpoint chunk (one chunk when eval_every is 0)."""
    every = eval_every or steps
    return jax.random.split(key, steps).reshape(steps // every, every)


def repeat_seeds(tree, num_seeds: int):
    """Leaves with a leading axis of 1 -> the same values for `num_seeds` seeds."""
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, num_seeds, axis=0), tree)
