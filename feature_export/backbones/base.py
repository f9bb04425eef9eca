"""The backbone interface: a frozen torch module that maps an image batch to (B, d) features.

`Backbone.head` is the backbone's own last layer as numpy (weight (C, d), bias (C,)) when it has
one for the dataset's classes, else None. `transform` maps a PIL image to a (3, H, W) tensor;
`preprocessing` describes it in words for meta.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

_REGISTRY: dict[str, Callable[..., Backbone]] = {}


@dataclasses.dataclass
class Backbone:
    name: str
    module: torch.nn.Module  # images (B, 3, H, W) -> features (B, d)
    feature_dim: int
    transform: Callable  # PIL.Image -> (3, H, W) float tensor
    preprocessing: str
    head: tuple[np.ndarray, np.ndarray] | None = None
    weights_id: str = ""  # a fingerprint of the weights (file hash, or "random_init:<seed>")


def register(name: str):
    """Decorator: `@register("resnet50")` on a factory `(**kwargs) -> Backbone`."""

    def wrap(factory):
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def get(name: str, **kwargs) -> Backbone:
    return factory(name)(**kwargs)


def factory(name: str) -> Callable:
    """The registered factory of `name`; ValueError listing the known names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted(_REGISTRY)
