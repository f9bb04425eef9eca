"""Backbones the exporter runs. Importing this package registers every backbone module below."""

from feature_export.backbones.base import Backbone, get, names, register

# Each backbone module registers itself with @register(name); list it here once.
# (keep one import per line, sorted, so parallel additions merge cleanly)

__all__ = ["Backbone", "get", "names", "register"]
