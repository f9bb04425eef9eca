"""A rate grid for HSFM, selected on val per seed, run as one compiled program over grid x seeds.

Every baseline picks its hyperparameters on val (DFR its C grid, GroupDRO / JTT / AFR theirs);
`hsfm.grid` does the same for HSFM's rates. It is written in the sweep syntax
(`hsfm_jax.sweep.plan`): ``'meta_lr=x0.01,x0.1,x1 inner_lr=x0.1,x1,x10'`` is the Cartesian
product of the values, in the order given. Names are `hsfm.Rates` fields (``inner_lr``,
``meta_lr``, ``head_lr``, ``meta_grad_clip``), so every setting shares one compiled program; a
value ``x<k>`` is k times the configured value, a plain number is that value (both in the
configured `hsfm.rate_units`). A head_lr left None follows each setting's inner_lr, as it
follows the configured one. ``"none"``: the configured setting alone, rows "hsfm" and
"hsfm_last" exactly as without a grid.

The runs (`hsfm_method.run`): the configured setting first, then the grid's other
settings, K in all, each with the run's S seeds: R = K x S runs on one leading axis
(setting-major: run = setting * S + seed), vmapped, rates included (`hsfm.init_runs`,
`hsfm.run_chunk_runs`), in chunks driven by `epoch_loop` like a single setting (progress bar,
checkpoints, resume). Each seed then keeps the setting whose best head has the highest val
selection score (the metric that picks HSFM's epoch: val WGA; worst-class accuracy without
group labels); ties go to the configured setting, then to grid order; a run whose head, outer
losses or edit norm went non-finite is never selected.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import ml_collections
import numpy as np

from hsfm_jax.methods.hsfm import algorithm as hsfm

NONE = "none"
RATE_FIELDS = tuple(f.name for f in dataclasses.fields(hsfm.Rates))
# 3 x 3 around the configured point, toward smaller meta steps (Table 11's meta_lr = 1 moves H
# by ~1 per entry per step, far more than the embeddings' own size on small-scale features).
# Cost: docs/hsfm_tuning.md (benchmarks/results/hsfm_grid.json).
DEFAULT = "meta_lr=x0.01,x0.1,x1 inner_lr=x0.1,x1,x10"


def _configured(config: ml_collections.ConfigDict) -> dict[str, float | None]:
    return {name: config[name] for name in RATE_FIELDS}


def _effective(rates: dict) -> dict[str, float]:
    head_lr = rates["inner_lr"] if rates["head_lr"] is None else rates["head_lr"]
    return {**rates, "head_lr": head_lr}


def _value(text: str, base: float, token: str) -> float:
    try:
        value = base * float(text[1:]) if text.startswith("x") else float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"hsfm.grid: {token!r}: each value must be a positive number or x<k> (k times the "
            f"configured value), got {text!r}"
        )
    return value


def settings(config: ml_collections.ConfigDict) -> list[dict[str, float]]:
    """The rates of each setting a grid runs: the configured one first, then the grid's others
    in grid order (duplicates dropped). Each is {field of `RATE_FIELDS`: value}, head_lr
    resolved. Raises ValueError naming the bad token."""
    text = config.grid
    if not isinstance(text, str):
        raise ValueError(f"hsfm.grid must be a string (e.g. {DEFAULT!r} or 'none'), got {text!r}")
    configured = _configured(config)
    base = _effective(configured)
    out = [base]
    if text.strip() == NONE:
        return out
    axes, seen = [], set()
    for token in text.split():
        name, sep, values = token.partition("=")
        if not sep or not values:
            raise ValueError(f"hsfm.grid: expected name=v1,v2,... but got {token!r}")
        if name not in RATE_FIELDS:
            raise ValueError(
                f"hsfm.grid: {name!r} is not a rate; a grid varies {list(RATE_FIELDS)} (one "
                "compiled program); other fields: experiments.sweep"
            )
        if name in seen:
            raise ValueError(f"hsfm.grid: {name!r} is given twice")
        seen.add(name)
        axes.append([(name, _value(v, base[name], token)) for v in values.split(",")])
    if not axes:
        raise ValueError(f"hsfm.grid: empty; give e.g. {DEFAULT!r}, or 'none'")
    for combination in itertools.product(*axes):
        rates = _effective({**configured, **dict(combination)})
        if not any(np.allclose(list(rates.values()), list(o.values()), rtol=1e-12) for o in out):
            out.append(rates)
    return out


def stack(rates: list[dict[str, float]], num_seeds: int, dtype) -> hsfm.Rates:
    """`hsfm.Rates` of the R = K x S runs (setting-major) of K settings."""
    column = lambda name: np.repeat(np.asarray([r[name] for r in rates], dtype), num_seeds)
    return hsfm.Rates(**{name: column(name) for name in RATE_FIELDS})


def select(result: hsfm.Result, num_settings: int, num_seeds: int, finite_history) -> dict:
    """Each seed's setting by the best heads' val selection score.

    Args:
      result: host arrays of the R = K x S runs.
      finite_history: history keys that must stay finite for a run to be selectable.

    Returns:
      {"selected": (S,) int setting per seed, "scores": (K, S) val selection scores (-inf for a
      run that went non-finite)}.
    """
    shape = (num_settings, num_seeds)
    finite = np.isfinite(np.asarray(result.best_score, np.float64)).reshape(shape)
    for key in finite_history:
        values = np.asarray(result.history[key], np.float64)
        finite &= np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1).reshape(shape)
    for leaf in (result.best_head.weight, result.best_head.bias):
        values = np.asarray(leaf, np.float64)
        finite &= np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1).reshape(shape)
    scores = np.where(finite, np.asarray(result.best_score, np.float64).reshape(shape), -np.inf)
    return {"selected": np.argmax(scores, axis=0), "scores": scores}  # first max: ties


def runs_of(selected: np.ndarray, num_seeds: int) -> np.ndarray:
    """(S,) run indices of the setting `selected[s]` for each seed s (setting-major runs)."""
    return np.asarray(selected) * num_seeds + np.arange(num_seeds)
