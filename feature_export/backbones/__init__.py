"""Backbones the exporter runs. Importing this package registers every backbone module below."""

# Each backbone module registers itself with @register(name) on import.
from feature_export.backbones import clip, digit_cnn, torchvision_models  # noqa: F401
from feature_export.backbones.base import Backbone, factory, get, names, register

__all__ = ["Backbone", "factory", "get", "names", "register"]
