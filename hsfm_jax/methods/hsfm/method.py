"""HSFM behind the method contract (`hsfm_jax.methods`): config -> `Settings` / `Rates`, the
initial head, the seeds run, and the files of the run.

`hsfm.py` is the algorithm (pure functions of arrays); this module is where a config meets it:
`check` validates every field against the data and resolves the "auto" choices (meta-gradient
method, selection metric, initial head) before anything is traced, `run` builds the inputs of a
resolved config and runs the epochs in chunks of ``chunk_epochs`` (`hsfm.run_chunk_seeds` driven
by `epoch_loop.run`: progress, checkpoints, resume; the same numbers as `hsfm.run_seeds`); its
result's files are ``support.npz`` and ``history.json`` (`save`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from ml_collections import config_dict

from hsfm_jax.core import checks, heads, optim
from hsfm_jax.data import stream
from hsfm_jax.data.features import FeatureSet, SplitArrays
from hsfm_jax.methods import erm
from hsfm_jax.methods.contract import MethodResult, epoch_curves
from hsfm_jax.methods.hsfm import algorithm as hsfm
from hsfm_jax.methods.hsfm import grid as hsfm_grid
from hsfm_jax.methods.hsfm import hard_set, meta, meta_cost
from hsfm_jax.methods.hsfm import scale as hsfm_scale
from hsfm_jax.reporting import results
from hsfm_jax.runtime import epoch_loop

NAME = "hsfm"
INIT_HEADS = ("auto", "backbone", "erm")
# `Rates` fields, which are also the names of their config fields: a sweep over these keeps one
# compiled program.
RATE_FIELDS = tuple(f.name for f in dataclasses.fields(hsfm.Rates))
# History rows that stay finite in a healthy run (the metrics may be NaN, e.g. WGA without groups).
FINITE_HISTORY = ("outer_loss_before", "outer_loss_after", "edit_norm")
_SIZE_FIELDS = (
    "support_per_class",
    "hard_set_size",
    "inner_steps",
    "meta_steps",
    "epochs",
    "chunk_epochs",
)


def default_config() -> ml_collections.ConfigDict:
    """HSFM hyperparameters (paper Alg. 1; names as in the paper's Tables 11-13)."""
    return ml_collections.ConfigDict(
        dict(
            support_per_class=16,  # support set size per class
            hard_set_size=64,  # Khard, per class
            # "error": a val class with fewer than Khard examples is an error; "repeat": it gives
            # all of them, repeated hardest-first to fill its Khard slots (fine-grained sets).
            hard_set_fill="error",
            inner_steps=15,  # T: inner SGD steps, and head steps per epoch
            inner_lr=5e-5,  # alpha ("inner learning rate"); also the head's lr
            head_lr=config_dict.placeholder(float),  # None: same as inner_lr (paper, Sec. 8.1)
            meta_lr=1.0,  # eta ("outer learning rate")
            meta_steps=15,  # KH
            epochs=40,
            # Epochs per compiled chunk: the progress bar moves and a checkpoint may be saved
            # between chunks; any value gives the same numbers. A few dispatches for the default
            # 40 epochs cost nothing measurable; long epochs (fine-grained) want 1.
            chunk_epochs=10,
            meta_grad_clip=10.0,  # global-norm clip of the meta-gradient (released code)
            meta_optimizer="adam",  # "adam" (released code) or "sgd" (paper Eq. 17)
            head_optimizer="adam",  # "adam" (released code) or "sgd"
            init_head="auto",  # "auto": head.npz if present else the ERM row; "backbone"; "erm"
            remat=False,  # jax.checkpoint each inner step (long unrolls; "autodiff" only)
            meta_gradient="auto",  # "autodiff", "vjp", "gram" or "auto" (hsfm_jax.methods.hsfm.meta_cost)
            selection_metric="auto",  # val WGA with groups, else accuracy; worst-class if label-free
            # "paper": the rates as written; "feature_rms": relative to the train features' RMS
            # (hsfm_jax.methods.hsfm.scale: scale-equivariant).
            rate_units="paper",
            # The train features' RMS norm the rates were set for: the scale warning and the
            # "feature_rms" units measure from it (35: frozen MobileNetV2 / ResNet-50 features).
            rates_rms=hsfm_scale.REFERENCE_RMS,
            # Rates tried per seed, selected on val, one compiled program (hsfm_jax.methods.hsfm.grid):
            # rows "hsfm" (selected) and "hsfm_fixed" (the configured rates); "none": the
            # configured rates alone.
            grid=hsfm_grid.DEFAULT,
            erm=erm.default_config(),  # theta_0 without head.npz: the `erm` row's recipe
        )
    )


def check(config: ml_collections.ConfigDict, data: FeatureSet) -> dict:
    """Checks every field against `data`; returns the resolved "auto" choices.

    Returns:
      {"meta_gradient": "autodiff" | "vjp" | "gram", "selection_metric": a name of
      `evaluate.SELECTION_METRICS`, "init_head": "backbone" | "erm"}.
    """
    for name in _SIZE_FIELDS:
        checks.check_value("hsfm", config, name, "positive_int")
    for name in ("inner_lr", "meta_lr", "meta_grad_clip"):
        checks.check_value("hsfm", config, name, "positive")
    if config.head_lr is not None:
        checks.check_value("hsfm", config, "head_lr", "positive")
    checks.check_choice("hsfm", config, "meta_optimizer", optim.OPTIMIZERS)
    checks.check_choice("hsfm", config, "head_optimizer", optim.OPTIMIZERS)
    checks.check_choice("hsfm", config, "hard_set_fill", hard_set.FILL_MODES)
    checks.check_choice("hsfm", config, "meta_gradient", meta.META_GRADIENTS)
    checks.check_choice("hsfm", config, "init_head", INIT_HEADS)
    checks.check_bool("hsfm", config, "remat")
    checks.check_choice("hsfm", config, "rate_units", hsfm_scale.RATE_UNITS)
    checks.check_value("hsfm", config, "rates_rms", "positive")
    hsfm_grid.settings(config)
    selection_metric = checks.check_selection("hsfm", config, data)
    hard_set.check_class_sizes(
        data.train.labels,
        config.support_per_class,
        data.num_classes,
        what=f"{data.path}/train: hsfm.support_per_class",
    )
    hard_set.check_class_sizes(
        data.val.labels,
        config.hard_set_size if config.hard_set_fill == "error" else 1,
        data.num_classes,
        what=f"{data.path}/val: hsfm.hard_set_size",
    )
    if config.init_head == "backbone" and not data.has_head:
        raise ValueError(f"hsfm.init_head='backbone' but {data.path}/head.npz does not exist")
    init_head = "backbone" if config.init_head != "erm" and data.has_head else "erm"
    if init_head == "erm":
        erm.check(config.erm, data)
    return {
        "meta_gradient": _meta_gradient(config, data),
        "selection_metric": selection_metric,
        "init_head": init_head,
    }


def _meta_gradient(config: ml_collections.ConfigDict, data: FeatureSet) -> str:
    if config.meta_gradient != "auto":
        return config.meta_gradient
    return meta_cost.choose_method(
        support_size=data.num_classes * config.support_per_class,
        query_size=data.num_classes * config.hard_set_size,
        num_classes=data.num_classes,
        dim=data.feature_dim,
        inner_steps=config.inner_steps,
    )


def settings(config: ml_collections.ConfigDict, data: FeatureSet) -> hsfm.Settings:
    """The static `hsfm.Settings` of a resolved config (`check`'s "auto" choices filled in,
    `methods.resolve`)."""
    return hsfm.Settings(
        num_classes=data.num_classes,
        num_groups=data.num_groups,
        **{field: config[field] for field in hsfm.Settings._fields[2:]},
    )


def rates(config: ml_collections.ConfigDict, dtype) -> hsfm.Rates:
    """The `hsfm.Rates` of a config in `dtype` (head_lr None: the inner lr)."""
    return hsfm.make_rates(**{field: config[field] for field in RATE_FIELDS}, dtype=dtype)


def device_data(data: FeatureSet, dtype=None, *, train_rows: np.ndarray | None = None) -> hsfm.Data:
    """Every array a run reads, on the device (`select` when the val split was split).

    `train_rows`: (R,) sorted train rows; only their features are read and put on the device
    (`hsfm.Data.train_rows`). None: all of train.
    """
    dtype = dtype or data.dtype
    if train_rows is None:
        train = data.train.to_arrays(dtype)
    else:
        train = SplitArrays(
            features=jax.numpy.asarray(stream.rows(data.train, train_rows, dtype)),
            labels=jax.numpy.asarray(data.train.labels, jax.numpy.int32),
            groups=jax.numpy.asarray(data.train.groups, jax.numpy.int32),
        )
    return hsfm.Data(
        train=train,
        train_rows=None if train_rows is None else jax.numpy.asarray(train_rows, jax.numpy.int32),
        val=data.val.to_arrays(dtype),
        test=data.test.to_arrays(dtype),
        train_group_counts=jax.numpy.asarray(data.train_group_counts(), dtype),
        select=data["select"].to_arrays(dtype) if "select" in data.splits else None,
    )


def support_rows(data: FeatureSet, keys: jax.Array, settings_: hsfm.Settings) -> np.ndarray:
    """(R,) sorted train rows the support sets of `keys` (S,) draw: all a run reads of train."""
    labels = jax.numpy.asarray(data.train.labels, jax.numpy.int32)
    draw = jax.vmap(lambda key: hsfm.support_indices(key, labels, settings=settings_))
    return np.unique(np.asarray(draw(keys)))


def streams_train(config: ml_collections.ConfigDict) -> bool:
    """HSFM reads only its support rows of a train split over the memory budget, and its ERM
    initial head streams (`hsfm_jax.methods`)."""
    del config
    return True


def initial_head(
    config: ml_collections.ConfigDict,
    data: FeatureSet,
    train,
    keys: jax.Array,
    *,
    dtype=None,
    erm_heads: heads.LinearHead | None = None,
) -> heads.LinearHead:
    """theta_0: the backbone's head.npz, or the first of the ERM recipe's heads.

    Args:
      config: the resolved HSFM config (with its `erm` subtree).
      data: the feature set (for head.npz).
      train: train `SplitArrays` the ERM recipe fits on; None: `data.train` from the host
        (`erm.fit_heads_split`, streamed when over the memory budget).
      keys: (S,) seed keys of the run.
      dtype: of head.npz's arrays (default `data.dtype`).
      erm_heads: the ERM recipe's heads (S, C, d) when already fitted (sweeps share them).
    """
    if config.init_head == "backbone":
        return heads.from_numpy(data.head_weight, data.head_bias, dtype or data.dtype)
    if erm_heads is None and train is None:
        erm_heads = erm.fit_heads_split(data.train, config.erm, data, keys)
    elif erm_heads is None:
        erm_heads = erm.fit_heads(train, *erm.from_config(config.erm, data), keys)
    return jax.tree_util.tree_map(lambda x: x[0], erm_heads)


def run(
    data: FeatureSet,
    config: ml_collections.ConfigDict,
    keys: jax.Array,
    *,
    loop: epoch_loop.Options = epoch_loop.PLAIN,
) -> MethodResult:
    """HSFM for every seed key: rows "hsfm" (best val selection) and "hsfm_last" (last epoch);
    with a rate grid (`config.grid`, `hsfm_jax.methods.hsfm.grid`), "hsfm" is each seed's val-selected
    setting's best head, "hsfm_fixed" the configured rates' best head and "hsfm_last" the
    configured rates' last head (nothing selected on val).

    The epochs run in chunks of `config.chunk_epochs` (`epoch_loop.run`: a bar over epochs with
    the current val selection metric, checkpoints under `loop.checkpoint_dir`, resume from them);
    without a grid the heads and history equal those of one `hsfm.run_seeds` call. Rates in
    "feature_rms" units run on the rescaled features (`hsfm_jax.methods.hsfm.scale`).

    Returns:
      `MethodResult`: rows {"hsfm": heads (S, C, d)[, "hsfm_fixed": ...], "hsfm_last": ...};
      its report holds the best epochs, the feature scale and, with a grid, the setting each
      seed selected; the outer losses and edit norms per epoch must stay finite; the
      `hsfm.Result` of the row "hsfm" (with a grid, each seed's selected run) is
      ``info["result"]``, and `save` of it writes the method's files.
    """
    static = settings(config, data)
    in_memory = stream.fits(data.train, erm.memory_budget_gb(config.erm), data.dtype)
    arrays = device_data(data, train_rows=None if in_memory else support_rows(data, keys, static))
    scale = hsfm_scale.measure(data)
    c = hsfm_scale.factor(config.rate_units, scale, config.rates_rms)
    grid = config.grid.strip() != hsfm_grid.NONE
    grid_rates = hsfm_grid.settings(config)
    num_seeds = keys.shape[0]
    if grid:
        rates_ = hsfm_grid.stack(grid_rates, num_seeds, data.dtype)
        keys_ = keys[np.tile(np.arange(num_seeds), len(grid_rates))]
        init_fn, chunk_fn = hsfm.init_runs, hsfm.run_chunk_runs
    else:
        rates_, keys_ = rates(config, data.dtype), keys
        init_fn, chunk_fn = hsfm.init_seeds, hsfm.run_chunk_seeds

    unit_arrays = hsfm_scale.data_to_unit(arrays, c)

    def init():
        head = initial_head(config, data, arrays.train if in_memory else None, keys)
        return init_fn(
            unit_arrays, hsfm_scale.head_to_unit(head, c), rates_, keys_, settings=static
        )

    chunk = lambda state, first_epoch: chunk_fn(
        state, unit_arrays, rates_, first_epoch, settings=static, chunk_epochs=config.chunk_epochs
    )
    status = lambda last: {
        f"val {static.selection_metric}": f"{_best_mean(last['val_selection'], num_seeds):.4f}"
    }
    done = epoch_loop.run(
        init,
        chunk,
        epochs=static.epochs,
        chunk_epochs=config.chunk_epochs,
        options=loop,
        status=status,
    )
    out = hsfm.finish(done.state, done.history)
    report = {"feature_scale": hsfm_scale.report(config.rate_units, scale, config.rates_rms)}
    last = None
    if grid:
        out = jax.device_get(out)
        chosen = hsfm_grid.select(out, len(grid_rates), num_seeds, FINITE_HISTORY)
        take = lambda runs: jax.tree_util.tree_map(lambda x: x[runs], out)
        fixed = hsfm_scale.from_unit(take(np.arange(num_seeds)), c)
        out = take(hsfm_grid.runs_of(chosen["selected"], num_seeds))
        last = fixed.last_head
        report["grid"] = {
            "spec": config.grid,
            "settings": grid_rates,  # configured rates first, in `rate_units`
            "selected": chosen["selected"].tolist(),  # setting per seed
            "selected_rates": [grid_rates[k] for k in chosen["selected"]],
            "val_selection": results.json_array(chosen["scores"]),  # (settings, seeds)
            "fixed_best_epoch": np.asarray(fixed.best_epoch).tolist(),
        }
    out = hsfm_scale.from_unit(out, c)
    if c != 1.0:
        report["feature_scale"]["effective_rates"] = [
            hsfm_scale.effective_rates(r, c) for r in grid_rates
        ]
    report["best_epoch"] = np.asarray(out.best_epoch).tolist()
    must_be_finite = {k: np.asarray(out.history[k]) for k in FINITE_HISTORY}
    rows = {"hsfm": out.best_head, "hsfm_last": out.last_head}
    if last is not None:
        rows = {"hsfm": out.best_head, "hsfm_fixed": fixed.best_head, "hsfm_last": last}
    return MethodResult(
        rows=rows,
        report=report,
        must_be_finite=must_be_finite,
        resumed_from=done.resumed_from,
        info={"result": out},
        write_files=lambda workdir, run_id: save(out, workdir, run_id),
        curves=epoch_curves(curves(out.history, data.group_names)),
    )


def curves(history: dict, group_names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """Per seed: every per-epoch scalar of `history` ((S, E) arrays) and the hard set's count per
    group, ``hard_set/<group name>``."""
    history = {k: np.asarray(v) for k, v in history.items()}
    counts = history.get("hard_set_group_counts")  # (S, E, G)
    seeds = []
    for s in range(next(iter(history.values())).shape[0]):
        per_epoch = {k: v[s] for k, v in history.items() if v.ndim == 2}
        if counts is not None:
            for g in range(counts.shape[-1]):
                name = group_names[g] if g < len(group_names) else str(g)
                per_epoch[f"hard_set/{name}"] = counts[s, :, g]
        seeds.append(per_epoch)
    return seeds


def _best_mean(scores: np.ndarray, num_seeds: int) -> float:
    """The best setting's mean over seeds of (K * S, ...) run scores (K = 1 without a grid)."""
    per_setting = np.asarray(scores, np.float64).reshape(-1, num_seeds)
    return float(np.nanmax(per_setting.mean(axis=1))) if np.isfinite(per_setting).any() else np.nan


def save(out: hsfm.Result, workdir: Path, run_id: str) -> None:
    """support.npz (final support embeddings, train rows of S) and history.json
    ({"run_id", "history": per-epoch values, per seed; strict JSON, NaN as null})."""
    np.savez(
        workdir / "support.npz",
        support=np.asarray(out.support),
        support_indices=np.asarray(out.support_indices),
        run_id=np.asarray(run_id),
    )
    history = {k: results.json_array(v) for k, v in out.history.items()}
    text = json.dumps({"run_id": run_id, "history": history}, allow_nan=False)
    (workdir / "history.json").write_text(text)


def group_use(config: ml_collections.ConfigDict) -> dict[str, dict[str, bool]]:
    """Which rows read train / val group labels, for a resolved config (hsfm_last selects nothing)."""
    select = config.selection_metric == "wga"
    use = {"hsfm": {"train": False, "val": select}, "hsfm_last": {"train": False, "val": False}}
    if config.grid.strip() != hsfm_grid.NONE:  # hsfm_last: the configured rates, unselected
        use = {"hsfm": use["hsfm"], "hsfm_fixed": use["hsfm"], "hsfm_last": use["hsfm_last"]}
    return use
