"""Datasets the exporter reads. Importing this package registers every dataset module below."""

from feature_export.datasets.base import ExportDataset, SplitIndex, get, names, register

# Each dataset module registers itself with @register(name); list it here once.
# (keep one import per line, sorted, so parallel additions merge cleanly)

__all__ = ["ExportDataset", "SplitIndex", "get", "names", "register"]
