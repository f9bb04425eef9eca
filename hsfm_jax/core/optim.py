"""Optimizers by name, so configs stay plain data."""

from __future__ import annotations

import optax

OPTIMIZERS = ("sgd", "adam", "momentum")


def make(name: str, learning_rate: float | optax.Schedule) -> optax.GradientTransformation:
    """'sgd' (plain gradient descent), 'adam', or 'momentum' (SGD with momentum 0.9)."""
    if name == "sgd":
        return optax.sgd(learning_rate)
    if name == "adam":
        return optax.adam(learning_rate)
    if name == "momentum":
        return optax.sgd(learning_rate, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
