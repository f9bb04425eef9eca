"""Config checks that run before any method does: one `ValueError` naming the field.

Every method's `check(config, data)` is built from these, so a bad setting fails in seconds with
a message such as ``hsfm.meta_gradient must be one of ('autodiff', ...), got 'vjpp'``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections


def _value(config: ml_collections.ConfigDict, field: str) -> Any:
    return config[field]


def one_of(config: ml_collections.ConfigDict, prefix: str, field: str, allowed: Sequence) -> None:
    """`config.<field>` is one of `allowed`."""
    value = _value(config, field)
    if value not in allowed:
        raise ValueError(f"{prefix}.{field} must be one of {tuple(allowed)}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def at_least(config: ml_collections.ConfigDict, prefix: str, field: str, low: int) -> None:
    """`config.<field>` is an integer >= `low`."""
    value = _value(config, field)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{prefix}.{field} must be an integer >= {low}, got {value!r}")


def positive(config: ml_collections.ConfigDict, prefix: str, field: str) -> None:
    """`config.<field>` is a finite number > 0 (learning rates, step sizes)."""
    value = _value(config, field)
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{prefix}.{field} must be a finite number > 0, got {value!r}")


def non_negative(config: ml_collections.ConfigDict, prefix: str, field: str) -> None:
    """`config.<field>` is a finite number >= 0 (penalties)."""
    value = _value(config, field)
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{prefix}.{field} must be a finite number >= 0, got {value!r}")


def all_positive(config: ml_collections.ConfigDict, prefix: str, field: str) -> None:
    """`config.<field>` is a non-empty sequence of finite numbers > 0 (grids)."""
    values = _value(config, field)
    values = (values,) if _is_number(values) else tuple(values)
    if not values or any(not _is_number(v) or not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(
            f"{prefix}.{field} must be a non-empty list of finite numbers > 0, got {values!r}"
        )


def all_finite(config: ml_collections.ConfigDict, prefix: str, field: str) -> None:
    """`config.<field>` is a non-empty sequence of finite numbers (thresholds)."""
    values = _value(config, field)
    values = (values,) if _is_number(values) else tuple(values)
    if not values or any(not _is_number(v) or not math.isfinite(v) for v in values):
        raise ValueError(
            f"{prefix}.{field} must be a non-empty list of finite numbers, got {values!r}"
        )


def subset_of(
    config: ml_collections.ConfigDict, prefix: str, field: str, allowed: Iterable
) -> None:
    """`config.<field>` is a non-empty sequence of names from `allowed`."""
    allowed = tuple(allowed)
    values = tuple(_value(config, field))
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ValueError(
            f"{prefix}.{field}: unknown or no entries {unknown}; choose from {allowed}"
        )


def selection_metric(
    config: ml_collections.ConfigDict, prefix: str, num_groups: int, field: str = "selection_metric"
) -> str:
    """Resolves `config.<field>` ("auto" or a name in `evaluate.SELECTION_METRICS`)."""
    from hsfm_jax import evaluate

    try:
        return evaluate.selection_metric_name(num_groups, _value(config, field))
    except ValueError as e:
        raise ValueError(f"{prefix}.{e}") from None
