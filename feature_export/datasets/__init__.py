"""Datasets the exporter reads. Importing this package registers every dataset module below."""

# Each dataset module registers itself with @register(name); list it here once.
# (keep one import per line, sorted, so parallel additions merge cleanly)
from feature_export.datasets import (
    celeba,  # noqa: F401
    cub,  # noqa: F401
    digit_dominoes,  # noqa: F401
    dominoes,  # noqa: F401
    flowers,  # noqa: F401
    hard_spurious_imagenet,  # noqa: F401
    metashift,  # noqa: F401
    stanford_cars,  # noqa: F401
    waterbirds,  # noqa: F401
)
from feature_export.datasets.base import ExportDataset, SplitIndex, factory, get, names, register

__all__ = ["ExportDataset", "SplitIndex", "factory", "get", "names", "register"]
