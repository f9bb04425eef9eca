"""What a method module is: the functions `hsfm_jax.methods` calls, and the record `run` returns.

Every registered method module defines

- ``NAME``: its name in `methods.REGISTRY` (and its config subtree's);
- ``default_config() -> ConfigDict``: every field, with the paper's defaults;
- ``check(config, data: FeatureSet) -> dict``: the only validator. Raises ``ValueError`` naming
  the first bad field (``"<method>.<field> must be ..."``) and returns the "auto" choices it
  resolved, by field; cheap (nothing is traced), so every method is checked before any runs;
- ``run(data, config, keys, *, loop=epoch_loop.PLAIN) -> MethodResult``: for a config that
  `check` passed, its "auto" fields resolved (`methods.resolve`); `run` trusts it and checks
  nothing again. ``keys`` (S,) are the seeds' PRNG keys. ``loop`` (progress, checkpoints,
  resume: `hsfm_jax.runtime.epoch_loop`) reaches the methods whose epochs run in chunks (HSFM,
  NeuronTune); the others have no epoch loop and ignore it;
- ``streams_train(config) -> bool``: whether the method reads a train split larger than
  ``erm.train_memory_budget_gb`` from the host (`hsfm_jax.data.stream`) rather than all on the device;
- ``group_use(config) -> {row: {"train": bool, "val": bool}}``: for a resolved config, whether
  each row reads train / val group labels (the results tables' ✓/✗, as the HSFM paper's Table 1;
  tests/methods/test_labelfree.py checks every ✗ by shuffling those labels).

`check_module` checks a module against this list (tests/methods/test_contract.py walks the registry).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from hsfm_jax.core import heads
from hsfm_jax.runtime import epoch_loop

# function -> its positional parameters, in order (keyword-only ones listed in _KEYWORDS)
FUNCTIONS = {
    "default_config": (),
    "check": ("config", "data"),
    "run": ("data", "config", "keys"),
    "streams_train": ("config",),
    "group_use": ("config",),
}
_KEYWORDS = {"run": ("loop",)}


class MethodResult(NamedTuple):
    """What a method's `run` returns.

    Attributes:
      rows: {row name: `LinearHead`} over the raw features with a leading seed axis, weight
        (S, C, d) (or (1, C, d) for a deterministic method), each row listed by `group_use`.
      report: JSON-able values that results.json puts beside each of the method's rows.
      must_be_finite: {name: array} that stay finite in a healthy run (`divergence.check_rows`).
      resumed_from: the epoch the method's loop resumed from (0: a fresh run, or no loop).
      info: arrays for inspection (selected grid points, histories, ...), not written.
      write_files: ``(workdir, run_id) -> None`` writing the method's own files, or None.
      curves: what the method recorded while it trained, per seed ({tag: (K,) values}, (K,)
        steps), for TensorBoard (`hsfm_jax.reporting.metric_writers`); () when nothing.
    """

    rows: dict[str, heads.LinearHead]
    report: Mapping[str, Any] = types.MappingProxyType({})
    must_be_finite: Mapping[str, Any] = types.MappingProxyType({})
    resumed_from: int = 0
    info: Mapping[str, Any] = types.MappingProxyType({})
    write_files: Callable[[Path, str], None] | None = None
    curves: Sequence[tuple[Mapping[str, np.ndarray], np.ndarray]] = ()


def epoch_curves(seeds: Sequence[Mapping[str, np.ndarray]]) -> list:
    """`MethodResult.curves` of per-seed {tag: (K,) values} recorded once per epoch 1..K."""
    steps = lambda curves: np.arange(1, len(next(iter(curves.values()))) + 1)
    return [(curves, steps(curves) if curves else np.zeros(0, np.int64)) for curves in seeds]


def check_module(module: types.ModuleType) -> list[str]:
    """What `module` lacks of the contract (module docstring), one line each; [] when none."""
    problems = []
    if not isinstance(getattr(module, "NAME", None), str):
        problems.append("NAME: missing or not a string")
    for name, positional in FUNCTIONS.items():
        fn = getattr(module, name, None)
        if not callable(fn):
            problems.append(f"{name}: missing")
            continue
        params = inspect.signature(fn).parameters.values()
        got = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
        keywords = tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY)
        if got != positional:
            problems.append(f"{name}: positional parameters {got}, expected {positional}")
        if keywords != _KEYWORDS.get(name, ()):
            problems.append(f"{name}: keyword-only {keywords}, expected {_KEYWORDS.get(name, ())}")
        if name == "run" and keywords == ("loop",):
            default = inspect.signature(fn).parameters["loop"].default
            if default is not epoch_loop.PLAIN:
                problems.append("run: loop must default to epoch_loop.PLAIN")
        if getattr(fn, "__doc__", None) in (None, ""):
            problems.append(f"{name}: no docstring")
    return problems
