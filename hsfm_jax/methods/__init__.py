"""The one registry of methods, and the calls the experiment makes on them.

Every method is a module with the functions of `hsfm_jax.methods.contract` (``NAME``, ``default_config``,
``check``, ``run(data, config, keys, *, loop) -> MethodResult``, ``streams_train``,
``group_use``); `check` here checks every named method before any runs, `resolve` fills in the
"auto" choices `check` resolved, and `run` runs one method on such a config.

A method whose default config has an ``erm`` subtree starts from the experiment's ERM recipe:
`method_config` puts the top-level ``config.erm`` there, so there is one ERM recipe per run.

Adding a method is one module and one line in `REGISTRY` (docs/architecture.md).
"""

from __future__ import annotations

import importlib
import types

import jax
import ml_collections

from hsfm_jax.data import stream
from hsfm_jax.data.features import FeatureSet
from hsfm_jax.methods import erm
from hsfm_jax.methods.contract import MethodResult
from hsfm_jax.runtime import epoch_loop

# name -> module, in the order results tables list the rows.
REGISTRY = {
    "erm": "hsfm_jax.methods.erm",
    "dfr": "hsfm_jax.methods.dfr",
    "neurontune": "hsfm_jax.methods.neurontune",
    "group_dro": "hsfm_jax.methods.group_dro",
    "jtt": "hsfm_jax.methods.jtt",
    "afr": "hsfm_jax.methods.afr",
    "hsfm": "hsfm_jax.methods.hsfm.method",
}


def get(name: str) -> types.ModuleType:
    """The module of method `name`."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose from {list(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])


def parse(methods: str) -> list[str]:
    """'erm, dfr,hsfm' -> ['erm', 'dfr', 'hsfm'], each a registered method."""
    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in REGISTRY]
    if unknown or not names:
        raise ValueError(f"methods: unknown method(s) {unknown}; choose from {list(REGISTRY)}")
    return names


def default_configs() -> dict[str, ml_collections.ConfigDict]:
    """Every registered method's default config, by name, without the `erm` subtrees that
    `method_config` fills from the experiment's `config.erm`."""
    configs = {}
    for name in REGISTRY:
        configs[name] = get(name).default_config()
        if name != "erm" and "erm" in configs[name]:
            del configs[name]["erm"]
    return configs


def method_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """`config.<name>`, with the experiment's `config.erm` as its `erm` subtree when it has one."""
    sub = ml_collections.ConfigDict(config[name].to_dict())
    if name != "erm" and "erm" in get(name).default_config():
        sub.erm = ml_collections.ConfigDict(config.erm.to_dict())
    return sub


def check(config: ml_collections.ConfigDict, names, data: FeatureSet) -> dict[str, dict]:
    """Checks the named methods' configs against `data`: {name: resolved "auto" choices}.

    A train split over `erm.train_memory_budget_gb` only runs methods whose
    ``streams_train(config)`` says they read it from the host (`hsfm_jax.data.stream`).
    """
    missing = [name for name in (*names, "erm") if name not in config]
    if missing:
        raise ValueError(
            f"methods.check takes an experiment config (hsfm_jax.runtime.experiment.default_config()), "
            f"with a subtree per method and 'erm'; this one has no {missing} (fields: "
            f"{sorted(config)})"
        )
    resolved = {name: get(name).check(method_config(config, name), data) for name in names}
    budget = erm.memory_budget_gb(config.erm)
    if stream.fits(data.train, budget, data.dtype):
        return resolved
    for name in names:
        if not get(name).streams_train(method_config(config, name)):
            size = stream.device_bytes(data.train, data.dtype) / 2**30
            raise ValueError(
                f"{name} puts all of train on the device, but {data.path}/train takes "
                f"{size:.3g} GiB > erm.train_memory_budget_gb={budget:g}; raise the budget or "
                "run the methods that stream (erm, hsfm, dfr without tr_dfr)"
            )
    return resolved


def resolve(config: ml_collections.ConfigDict, name: str, resolved: dict):
    """`method_config(config, name)` with the resolved "auto" fields filled in."""
    sub = method_config(config, name)
    sub.update(resolved)
    return sub


def checked(config: ml_collections.ConfigDict, name: str, data: FeatureSet):
    """`resolve` of method `name` after its `check` against `data` (one method's config, ready
    for its `run`)."""
    return resolve(config, name, get(name).check(method_config(config, name), data))


def group_use(name: str, config: ml_collections.ConfigDict) -> dict[str, dict[str, bool]]:
    """{row: {"train": bool, "val": bool}} of method `name` (config from `resolve`)."""
    return get(name).group_use(config)


def run(
    name: str,
    data: FeatureSet,
    config: ml_collections.ConfigDict,
    keys: jax.Array,
    *,
    loop: epoch_loop.Options = epoch_loop.PLAIN,
) -> MethodResult:
    """Runs method `name` on a config from `resolve`, seeds `keys` (S,); `loop` for the methods
    with an epoch loop (`hsfm_jax.methods.contract`)."""
    return get(name).run(data, config, keys, loop=loop)
