"""The dataset interface every exporter input implements, and the registry of datasets.

A dataset is read from a local directory in its published layout (nothing is downloaded).
It lists, per split, the examples' ids, labels and groups, and loads one image on demand;
`feature_export.export` does the batching, the backbone forward pass and the writing.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class SplitIndex:
    """What a split contains, without pixels.

    Attributes:
      ids: N strings (relative image paths or ids), written to `<split>/ids.txt`.
      labels: (N,) int in [0, C).
      groups: (N,) int in [0, G), -1 where unknown.
    """

    ids: list[str]
    labels: np.ndarray
    groups: np.ndarray

    def __post_init__(self):
        n = len(self.ids)
        if self.labels.shape != (n,) or self.groups.shape != (n,):
            raise ValueError(
                f"SplitIndex: {n} ids but labels {self.labels.shape}, groups {self.groups.shape}"
            )


class ExportDataset(abc.ABC):
    """A dataset the exporter can read. Subclasses set the attributes in __init__."""

    name: str
    class_names: list[str]
    group_names: list[str]  # [] for datasets without groups
    splits: tuple[str, ...] = ("train", "val", "test")
    # Resize policy hint for backbones: "resize256_crop224" (paper default) or "resize224"
    # (CelebA, as the authors' code).
    resize_policy: str = "resize256_crop224"

    @abc.abstractmethod
    def index(self, split: str) -> SplitIndex:
        """Ids, labels and groups of a split."""

    @abc.abstractmethod
    def load_image(self, split: str, i: int) -> Image.Image:
        """Row i of the split as an RGB PIL image. Raises ValueError naming the file if unreadable."""

    def source_files(self) -> Iterable[Path]:
        """Metadata files whose contents identify the dataset version (for the fingerprint)."""
        return ()

    def fingerprint(self) -> str:
        """A short hash of the metadata files and the split indices."""
        h = hashlib.sha256(self.name.encode())
        for path in sorted(Path(p) for p in self.source_files()):
            h.update(str(path.name).encode())
            h.update(path.read_bytes())
        for split in self.splits:
            idx = self.index(split)
            h.update("\n".join(idx.ids).encode())
            h.update(np.asarray(idx.labels, np.int64).tobytes())
            h.update(np.asarray(idx.groups, np.int64).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        """Extra fields for meta.json (e.g. how the val split was drawn). Override to add."""
        return {}


_REGISTRY: dict[str, Callable[..., ExportDataset]] = {}


def register(name: str):
    """Class/function decorator: `@register("waterbirds")` makes `get("waterbirds", ...)` work."""

    def wrap(factory):
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def get(name: str, **kwargs) -> ExportDataset:
    return factory(name)(**kwargs)


def factory(name: str) -> Callable:
    """The registered factory of `name`; ValueError listing the known names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted(_REGISTRY)


def require_file(path: str | os.PathLike, what: str = "") -> Path:
    """Returns `path` if it is a file, else FileNotFoundError naming it (and what it is for)."""
    path = Path(path)
    if not path.is_file():
        hint = f" ({what})" if what else ""
        raise FileNotFoundError(f"{path}: missing{hint}")
    return path


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Opens an image as RGB; a missing or unreadable file is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file missing")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable image ({e})") from None
