"""Config checks that run before any method does: one `ValueError` naming the field.

Every method's `check(config, data)` is built from these, so a bad setting fails in seconds with
a message such as ``hsfm.meta_gradient must be one of ('autodiff', ...), got 'vjpp'`` or
``group_dro.learning_rate must be > 0 and finite, got 0.0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import ml_collections

from hsfm_jax.data.features import FeatureSet
from hsfm_jax.reporting import evaluate

# Bounds of the run-level integers: a seed beyond 32 bits folds onto another seed when JAX runs
# in 32 bits; counts beyond these cost more memory or time than any machine has.
MAX_SEED = 2**32 - 1
MAX_SEEDS = 100_000
MAX_BOOTSTRAP = 1_000_000
MAX_INT = 2**31 - 1  # every count a method reads becomes an int32 inside a program


def bounded_int(name: str, value, low: int, high: int, *, note: str = "") -> int:
    """`value` as an int in [low, high], else a ValueError naming `name`."""
    if not _is_int(value) or not low <= value <= high:
        extra = f"; {note}" if note else ""
        raise ValueError(f"{name} must be an integer in [{low}, {high}]{extra}, got {value!r}")
    return value


_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "positive": (lambda v: _is_real(v) and math.isfinite(v) and v > 0, "must be > 0 and finite"),
    "non_negative": (
        lambda v: _is_real(v) and math.isfinite(v) and v >= 0,
        "must be >= 0 and finite",
    ),
    "finite": (lambda v: _is_real(v) and math.isfinite(v), "must be finite"),
    "positive_int": (lambda v: _is_int(v) and 0 < v <= MAX_INT, "must be an integer > 0"),
    "non_negative_int": (lambda v: _is_int(v) and 0 <= v <= MAX_INT, "must be an integer >= 0"),
    "fraction": (lambda v: _is_real(v) and 0 < v < 1, "must be in (0, 1)"),
}


def _is_real(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(rule: str, value) -> str:
    """The rule's message; for an integer past `MAX_INT`, the bound it broke."""
    text = _RULES[rule][1]
    if rule.endswith("_int") and _is_int(value) and value > MAX_INT:
        return f"{text} and at most {MAX_INT}"
    return text


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
    if not _RULES[rule][0](value):
        raise ValueError(f"{method}.{field} {_text(rule, value)}, got {value!r}")


def check_grid(method: str, config: ml_collections.ConfigDict, field: str, rule: str) -> None:
    """``config[field]`` is a non-empty sequence whose every entry satisfies `rule`."""
    value = _get(method, config, field)
    ok = _RULES[rule][0]
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{method}.{field} must be a non-empty tuple of values, got {value!r}")
    bad = [v for v in value if not ok(v)]
    if bad:
        text = _text(rule, bad[0])
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
        return evaluate.selection_metric_name(
            data.num_groups, config.selection_metric, group_labels=data.group_labels
        )
    except ValueError as error:
        raise ValueError(f"{method}.{error}") from None


def check_subset(
    method: str, config: ml_collections.ConfigDict, field: str, allowed: Iterable
) -> None:
    """``config[field]`` is a non-empty sequence of names from `allowed`."""
    allowed = tuple(allowed)
    values = tuple(_get(method, config, field))
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ValueError(
            f"{method}.{field}: unknown or no entries {unknown}; choose from {allowed}"
        )
