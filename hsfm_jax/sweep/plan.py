"""Sweep plans: parse a spec, expand its grid, group settings into compiled programs.

A spec such as ``'inner_steps=5,10,15 support_per_class=8,16 seeds=10'`` names the grid (its
Cartesian product, in the order given); ``seeds=N`` sets ``config.num_seeds``. A bare name is a
field of ``config.hsfm``; a dotted name (``erm.learning_rate``) is a path in the config. Settings
that differ only in `hsfm.Rates` fields (`hsfm_method.RATE_FIELDS`: learning rates, clip norm)
share one compiled *program*; any other difference makes another program.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, NamedTuple

import ml_collections

from hsfm_jax import methods
from hsfm_jax.core import checks
from hsfm_jax.data import features as features_lib
from hsfm_jax.methods.hsfm import algorithm as hsfm
from hsfm_jax.methods.hsfm import method as hsfm_method

SEEDS_NAME = "seeds"
# Top-level config entries a sweep may not vary: they change the data, the seeds or the output.
FIXED_ENTRIES = (
    "features_dir",
    "prepare",
    "stale_features",
    "synthetic",
    "export",
    "float64",
    "methods",
    "num_seeds",
    "seed",
    "val_split",
)


class Spec(NamedTuple):
    """A parsed sweep spec.

    Attributes:
      axes: ((name, values), ...) in the order given; `name` as the user wrote it.
      num_seeds: from ``seeds=N``, or None to keep ``config.num_seeds``.
    """

    axes: tuple[tuple[str, tuple], ...]
    num_seeds: int | None


class Program(NamedTuple):
    """Settings that share one compiled program (they differ at most in `hsfm.Rates`)."""

    index: int
    settings: hsfm.Settings
    setting_indices: tuple[int, ...]


def config_path(name: str) -> str:
    """'inner_steps' -> 'hsfm.inner_steps'; dotted names are config paths already."""
    return name if "." in name else f"hsfm.{name}"


def _lookup(config: ml_collections.ConfigDict, path: str):
    """(value, found) of a config path; a None placeholder gives a zero of its declared type."""
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return None, False
        node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        return None, False
    value = node[leaf]
    if value is None and node.get_type(leaf) in (int, float, str, bool):
        return node.get_type(leaf)(), True
    return value, True


def _cast(text: str, like: Any, name: str):
    try:
        if isinstance(like, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
        if isinstance(like, str):
            return text
    except ValueError:
        pass
    raise ValueError(f"sweep: {name}={text!r} is not a valid {type(like).__name__}")


def parse_spec(text: str, config: ml_collections.ConfigDict) -> Spec:
    """Parses ``'name=v1,v2 other=v3 seeds=N'``, typing each value like the config field."""
    axes, num_seeds, seen = [], None, set()
    for token in text.split():
        name, sep, values = token.partition("=")
        if not sep or not name or not values:
            raise ValueError(f"sweep: expected name=v1,v2,... but got {token!r}")
        if name in seen:
            raise ValueError(f"sweep: {name!r} is given twice")
        seen.add(name)
        if name == SEEDS_NAME:
            if not values.isdigit() or not 1 <= int(values) <= checks.MAX_SEEDS:
                raise ValueError(
                    f"sweep: seeds must be an integer >= 1 and at most {checks.MAX_SEEDS}, "
                    f"got {values!r}"
                )
            num_seeds = int(values)
            continue
        path = config_path(name)
        if name.split(".")[0] in FIXED_ENTRIES or path.split(".")[0] in FIXED_ENTRIES:
            raise ValueError(
                f"sweep: {name!r} cannot be swept (it changes the data, the seeds or the "
                f"outputs); fixed entries: {list(FIXED_ENTRIES)}"
            )
        current, found = _lookup(config, path)
        if not found:
            raise ValueError(
                f"sweep: unknown name {name!r} (config.{path} does not exist); bare names are "
                f"fields of config.hsfm: {sorted(config.hsfm.keys())}"
            )
        if isinstance(current, ml_collections.ConfigDict) or current is None:
            raise ValueError(f"sweep: config.{path} is not a scalar field")
        parsed = tuple(_cast(v, current, name) for v in values.split(","))
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"sweep: {name} has repeated values {parsed}")
        axes.append((name, parsed))
    return Spec(tuple(axes), num_seeds)


def grid(spec: Spec) -> list[dict[str, Any]]:
    """The settings of the spec: one {name: value} dict each, Cartesian product in spec order."""
    names = [name for name, _ in spec.axes]
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(v for _, v in spec.axes))
    ]


def apply(config: ml_collections.ConfigDict, overrides: dict[str, Any]):
    """A copy of `config` with the overrides of one setting."""
    config = ml_collections.ConfigDict(config.to_dict())
    for name, value in overrides.items():
        *parents, leaf = config_path(name).split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def setting_name(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "base config"


def plan(
    config: ml_collections.ConfigDict, spec: Spec, data: features_lib.FeatureSet
) -> tuple[list[dict[str, Any]], list[Program]]:
    """The settings and the programs that run them (settings equal up to rates share one)."""
    settings_list = grid(spec)
    groups: dict[str, list[int]] = {}
    statics: dict[str, hsfm.Settings] = {}
    for index, overrides in enumerate(settings_list):
        setting_config = apply(config, overrides)
        static = hsfm_method.settings(methods.checked(setting_config, "hsfm", data), data)
        rest = setting_config.to_dict()
        for field in hsfm_method.RATE_FIELDS:
            rest["hsfm"].pop(field)
        key = json.dumps([repr(static), rest], sort_keys=True, default=str)
        groups.setdefault(key, []).append(index)
        statics[key] = static
    programs = [
        Program(i, statics[key], tuple(indices)) for i, (key, indices) in enumerate(groups.items())
    ]
    return settings_list, programs
