r"""Running a sweep of HSFM: a grid of settings x seeds, vmapped, sharded, resumable.

The paper tunes Khard, KH, T, the support size and the learning rates per dataset (Tables 11-13,
Figs. 3-4) and reports mean ± std over seeds. A sweep spec such as
``'inner_steps=5,10,15 support_per_class=8,16 seeds=10'`` names the grid (its Cartesian product, in
the order given); ``seeds=N`` sets ``config.num_seeds``. A bare name is a field of
``config.hsfm``; a dotted name (``erm.learning_rate``) is a path in the config.

How it runs:

- Settings that differ only in `hsfm.Rates` fields (learning rates, clip norm) share one compiled
  *program*; any other difference (shapes such as T, support size, Khard, or the ERM head) makes
  another program, compiled once.
- In a program, every (setting, seed) pair is one *run*; runs form one leading axis (setting-major:
  run = setting * num_seeds + seed) that `jax.vmap` maps over, rates included. Seed keys are those
  of `hsfm_jax.runtime.experiment.run`, so a setting's seeds reproduce a single experiment with that config.
- With several devices the runs axis is sharded over a 1-D mesh ``("runs",)`` with
  `NamedSharding`; it is padded to a multiple of the device count by repeating the last run, whose
  copies are dropped. Runs are independent, so results do not depend on the device count.
- Multi-process (`hsfm_jax.runtime.distributed`): the mesh spans every process's devices; every process
  reads the features, plans the same programs and fills its own shards (`distributed.put_global`);
  chunk results are gathered to every process (`distributed.to_host`), so each one saves the same
  checkpoint collectively (orbax: every process calls save/restore; process 0 writes the NumPy
  arrays). Process 0 alone writes the record, settings and summary files; decisions read from the
  workdir (finished settings, the epoch to resume from) are process 0's (`distributed.agreed`).
- A program runs its epochs in chunks of ``checkpoint_every`` (`hsfm.run_chunk`, driven by
  `hsfm_jax.runtime.epoch_loop` as a method's epochs are) and saves the vmapped state after
  each chunk (`checkpointing.ProgramCheckpoints`); each finished setting's results go to
  ``settings/<index>.json`` atomically; the summary (``sweep.md``, ``sweep.csv``,
  ``sweep.json``, ``sweep.png``, ``report.html``) is rebuilt from those files. A restart with
  the same command skips finished settings and resumes a program from its last saved epoch.
  Checkpoints hold the real runs only (no padding), so a resumed sweep may use another device
  count.
- Each setting is evaluated like a single experiment: its best heads (val selection, per seed)
  through `results.evaluate_rows` on the selection split (val, or `select` with
  ``config.val_split``) and test. The table marks the setting with the best mean val selection
  metric (val WGA with groups).

Workdir layout::

  sweep_config.json          config + spec + checkpoint_every; a restart must match it
  settings/<index>.json      one finished setting: overrides, metrics per seed, history
  checkpoints/program_<i>/   orbax steps (epochs) of the running program; removed when done
  sweep.md, sweep.csv, sweep.json, sweep.png, report.html
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from hsfm_jax import methods
from hsfm_jax.data import features as features_lib
from hsfm_jax.data import inputs
from hsfm_jax.methods import erm
from hsfm_jax.methods.hsfm import algorithm as hsfm
from hsfm_jax.methods.hsfm import method as hsfm_method
from hsfm_jax.reporting import results
from hsfm_jax.runtime import checkpointing, distributed, divergence, epoch_loop, locks, ownership
from hsfm_jax.sweep import report as report_lib
from hsfm_jax.sweep.plan import Program, Spec, apply, parse_spec, plan, setting_name

SWEEP_KIND = "sweep"
RECORD_FILE = "sweep_config.json"
SETTINGS_DIR = "settings"
CHECKPOINTS_DIR = "checkpoints"


class Interrupted(RuntimeError):
    """Raised by the test hooks `max_settings` / `stop_after_epochs` to simulate a kill."""


# ---------------------------------------------------------------------------------------------
# Running one program: runs axis = (settings of the program) x seeds, vmapped and sharded.


def _vmapped_init(data, init_head, rates, keys, *, settings):
    return jax.vmap(lambda r, k: hsfm.init(data, init_head, r, k, settings=settings))(rates, keys)


def _vmapped_chunk(state, data, rates, first_epoch, *, settings, chunk_epochs):
    chunk = lambda st, r: hsfm.run_chunk(
        st, data, r, first_epoch, settings=settings, chunk_epochs=chunk_epochs
    )
    return jax.vmap(chunk)(state, rates)


@functools.cache
def jitted(mesh: Mesh):
    """(init_runs, run_chunk) jitted with every output on the runs axis of `mesh`.

    Explicit output shardings keep the state sharded between chunks and make a state restored
    from a checkpoint (put on the same sharding) hit the same compiled program.
    """
    runs = NamedSharding(mesh, PartitionSpec("runs"))
    init_runs = jax.jit(_vmapped_init, static_argnames=("settings",), out_shardings=runs)
    run_chunk = jax.jit(
        _vmapped_chunk, static_argnames=("settings", "chunk_epochs"), out_shardings=runs
    )
    return init_runs, run_chunk


class _Context(NamedTuple):
    config: ml_collections.ConfigDict
    data: features_lib.FeatureSet
    arrays: hsfm.Data
    keys: jax.Array  # (S,)
    dtype: Any
    mesh: Mesh
    erm_heads: dict  # ERM heads by config.erm JSON, fitted once per sweep


def _program_inputs(ctx: _Context, settings_list, program: Program):
    """(init_head, rates (R*S,), keys (R*S,)) of a program's runs, setting-major."""
    configs = [apply(ctx.config, settings_list[i]) for i in program.setting_indices]
    num_seeds = ctx.keys.shape[0]
    # Built on the host: eager jnp indexing would compile a gather per array shape.
    hsfm_configs = [methods.checked(c, "hsfm", ctx.data) for c in configs]
    rates = [jax.device_get(hsfm_method.rates(c, ctx.dtype)) for c in hsfm_configs]
    rates = jax.tree_util.tree_map(lambda *xs: np.repeat(np.stack(xs), num_seeds, 0), *rates)
    keys = _host_keys(ctx.keys)[np.tile(np.arange(num_seeds), len(configs))]
    config = hsfm_configs[0]  # the settings of a program agree outside the rates
    erm_heads = None
    if config.init_head == "erm":
        erm_key = config.erm.to_json()
        if erm_key not in ctx.erm_heads:  # programs that differ only outside config.erm share it
            recipe, erm_rates = erm.from_config(config.erm, ctx.data)
            ctx.erm_heads[erm_key] = erm.fit_heads(ctx.arrays.train, recipe, erm_rates, ctx.keys)
        erm_heads = ctx.erm_heads[erm_key]
    init_head = hsfm_method.initial_head(
        config, ctx.data, ctx.arrays.train, ctx.keys, dtype=ctx.dtype, erm_heads=erm_heads
    )
    return init_head, rates, keys


def _host_keys(keys: jax.Array) -> np.ndarray:
    return np.asarray(jax.random.key_data(keys))


def _padded_index(num_runs: int, num_devices: int) -> np.ndarray:
    padded = -(-num_runs // num_devices) * num_devices
    return np.minimum(np.arange(padded), num_runs - 1)


def _program_dir(workdir: Path, program: Program) -> Path:
    return workdir / CHECKPOINTS_DIR / f"program_{program.index:03d}"


def _run_program(
    ctx: _Context,
    settings_list,
    program: Program,
    workdir: Path,
    *,
    checkpoint_every: int,
    stop_after_epochs: int | None,
    on_chunk,
) -> tuple[dict, int]:
    """Runs (or resumes) a program: (host arrays of its real runs, epoch it resumed from)."""
    settings = program.settings
    init_head, rates, keys = _program_inputs(ctx, settings_list, program)
    num_runs = keys.shape[0]
    index = _padded_index(num_runs, ctx.mesh.devices.size)
    runs = NamedSharding(ctx.mesh, PartitionSpec("runs"))
    put_runs = lambda tree: distributed.put_global(
        jax.tree_util.tree_map(lambda x: np.asarray(x)[index], tree), runs
    )
    real = lambda x: x[:num_runs]
    placement = epoch_loop.Placement(  # checkpoints hold the real runs, on the host
        to_host=lambda tree: jax.tree_util.tree_map(real, distributed.to_host(tree)),
        host_shapes=lambda shapes: jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct((num_runs, *x.shape[1:]), x.dtype), shapes
        ),
        to_device=put_runs,
        agree=distributed.agreed,
    )
    init_runs, run_chunk = jitted(ctx.mesh)
    rates_dev = put_runs(rates)
    keys_dev = jax.random.wrap_key_data(put_runs(keys), impl=jax.random.key_impl(ctx.keys))
    data_dev, head_dev = distributed.put_global(
        (ctx.arrays, init_head), NamedSharding(ctx.mesh, PartitionSpec())
    )

    def after_chunk(done: int, ran: int) -> None:
        on_chunk(done)
        if stop_after_epochs is not None and ran >= stop_after_epochs:
            raise Interrupted(f"program {program.index} stopped after epoch {done}")

    done = epoch_loop.run(
        lambda: init_runs(data_dev, head_dev, rates_dev, keys_dev, settings=settings),
        lambda state, first_epoch: run_chunk(
            state,
            data_dev,
            rates_dev,
            first_epoch,
            settings=settings,
            chunk_epochs=checkpoint_every,
        ),
        epochs=settings.epochs,
        chunk_epochs=checkpoint_every,
        options=epoch_loop.Options(
            checkpoint_dir=_program_dir(workdir, program),
            checkpoint_seconds=0,
            name=f"program {program.index}",
            keep_damaged=True,
            after_chunk=after_chunk,
            placement=placement,
        ),
    )
    final = placement.to_host(done.state)
    return {
        "best_head": final.best_head,
        "best_epoch": final.best_epoch,
        "history": done.history,
    }, done.resumed_from


def _setting_results(ctx: _Context, settings_list, program: Program, out: dict) -> list[dict]:
    """Evaluates each setting's best heads (S seeds) with the one evaluator."""
    num_seeds = ctx.keys.shape[0]
    per_setting = lambda x, r: x[r * num_seeds : (r + 1) * num_seeds]
    rows = {
        str(i): jax.tree_util.tree_map(
            lambda x, r=r: jnp.asarray(per_setting(x, r)), out["best_head"]
        )
        for r, i in enumerate(program.setting_indices)
    }
    metrics = results.evaluate_rows(
        rows,
        {"val": ctx.arrays.selection_split, "test": ctx.arrays.test},
        num_classes=ctx.data.num_classes,
        num_groups=ctx.data.num_groups,
        train_group_counts=ctx.arrays.train_group_counts,
        group_categories=ctx.data.meta.get("group_categories"),
    )
    records = []
    for r, i in enumerate(program.setting_indices):
        diverged = None
        try:
            divergence.check_rows(
                setting_name(settings_list[i]),
                {"best": rows[str(i)]},
                {"val": ctx.arrays.selection_split.features, "test": ctx.arrays.test.features},
                {k: per_setting(out["history"][k], r) for k in hsfm_method.FINITE_HISTORY},
            )
        except divergence.Diverged as e:
            logging.warning("%s", e)
            diverged = str(e)
        records.append(
            {
                "index": i,
                "name": setting_name(settings_list[i]),
                "overrides": settings_list[i],
                "program": program.index,
                "num_seeds": num_seeds,
                "selection_metric": program.settings.selection_metric,
                "metrics": results.summarize(metrics[str(i)]),
                "best_epoch": per_setting(out["best_epoch"], r).tolist(),
                "diverged": diverged,  # None, or why the setting is out of the selection
                # Scalar per-epoch diagnostics only, (seeds, epochs) each; the checkpoints
                # (deleted once done) also held the per-epoch arrays such as hard-set rows.
                "history": {
                    k: results.json_array(per_setting(v, r))
                    for k, v in out["history"].items()
                    if np.ndim(v) == 2
                },
            }
        )
    return records


def _setting_file(workdir: Path, index: int) -> Path:
    return workdir / SETTINGS_DIR / f"{index:03d}.json"


def run(config: ml_collections.ConfigDict, sweep: str | Spec, workdir: str | Path, **options):
    """Runs (or resumes) a sweep (`_run`: arguments and result) with `workdir` locked.

    The workdir must be missing, empty or a sweep workdir (`ownership`) apart from the features;
    a second sweep on the same workdir is refused (`locks`; process 0 holds the lock).
    """
    ownership.check_ours(workdir, (SWEEP_KIND,), "sweep workdir")
    ownership.check_apart(workdir, "sweep workdir", features_dir=config.features_dir)
    primary = distributed.is_primary()
    with locks.hold(workdir, "sweep workdir") if primary else contextlib.nullcontext():
        return _run(config, sweep, workdir, **options)


def _run(
    config: ml_collections.ConfigDict,
    sweep: str | Spec,
    workdir: str | Path,
    *,
    checkpoint_every: int = 10,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
    max_settings: int | None = None,
    stop_after_epochs: int | None = None,
) -> dict:
    """Runs (or resumes) a sweep and writes its summary files. Returns the sweep.json report.

    Args:
      config: the base experiment config (as `hsfm_jax.runtime.experiment.run` takes).
      sweep: a spec string (see `parse_spec`) or a parsed `Spec`.
      workdir: where everything goes; a restart with the same arguments resumes.
      checkpoint_every: epochs per chunk; the state is saved after each chunk.
      devices: devices of the 1-D mesh the runs axis is sharded over (default: all, those of
        every process in a multi-process run).
      progress: show a progress bar over settings.
      max_settings, stop_after_epochs: test hooks that simulate a kill (raise `Interrupted`)
        once `max_settings` settings have results, or once a program has run
        `stop_after_epochs` epochs in this call.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    spec = parse_spec(sweep, config) if isinstance(sweep, str) else sweep
    config = ml_collections.ConfigDict(config.to_dict())
    if spec.num_seeds is not None:
        config.num_seeds = spec.num_seeds
    if config.num_seeds < 1:
        raise ValueError(f"config.num_seeds must be >= 1, got {config.num_seeds}")
    workdir = Path(workdir)
    jax.config.update("jax_enable_x64", bool(config.float64))

    if config.get("group_labels", "all") != "all":
        raise ValueError(
            f"sweep: group_labels={config.group_labels!r} is not supported (experiments.main is)"
        )
    # Process 0 prepares the features (when the config asks) before any other process reads
    # them; the others read what it made, without preparing (or locking) again.
    if distributed.is_primary():
        data = inputs.load(config)
    distributed.barrier("sweep: features ready")
    if not distributed.is_primary():
        as_made = ml_collections.ConfigDict(config.to_dict())
        as_made.prepare = ""
        data = inputs.load(as_made)
    dtype = data.dtype
    settings_list, programs = plan(config, spec, data)
    if any(p.settings.selection_metric == "sfit" for p in programs):
        raise ValueError(
            "sweep: hsfm.selection_metric='sfit' is not supported (experiments.main is)"
        )
    if config.hsfm.rate_units != "paper":
        raise ValueError(
            f"sweep: hsfm.rate_units={config.hsfm.rate_units!r} is not supported (experiments.main "
            "is); a sweep runs its settings' rates as written (hsfm.grid does not apply either)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    primary = distributed.is_primary()
    if primary and ownership.read(workdir) is None:
        ownership.mark(workdir, SWEEP_KIND)
    checkpointing.check_record(
        workdir / RECORD_FILE,
        {
            "config": json.loads(config.to_json_best_effort()),
            "sweep": [[name, list(values)] for name, values in spec.axes],
            "num_seeds": config.num_seeds,
            "checkpoint_every": checkpoint_every,
            "features": features_lib.fingerprint(data.path),
        },
        write=primary,
    )
    devices = list(jax.devices() if devices is None else devices)
    ctx = _Context(
        config=config,
        data=data,
        arrays=hsfm_method.device_data(data, dtype),
        keys=jax.random.split(jax.random.key(config.seed), config.num_seeds),
        dtype=dtype,
        mesh=Mesh(np.asarray(devices), ("runs",)),
        erm_heads={},
    )
    logging.info(
        "Sweep: %d settings in %d programs x %d seeds on %d device(s) in %d process(es)",
        len(settings_list),
        len(programs),
        config.num_seeds,
        len(devices),
        jax.process_count(),
    )

    finished = lambda: sum(_setting_file(workdir, i).exists() for i in range(len(settings_list)))
    bar = tqdm(
        total=len(settings_list),
        initial=finished(),
        unit="setting",
        disable=not (progress and primary),
    )
    timings: dict[str, float] = {}
    resumed: dict[int, int] = {}
    try:
        for program in programs:
            done = all(_setting_file(workdir, i).exists() for i in program.setting_indices)
            if distributed.agreed(done):
                continue
            bar.set_description(f"program {program.index}")
            start = time.perf_counter()
            out, resumed_from = _run_program(
                ctx,
                settings_list,
                program,
                workdir,
                checkpoint_every=checkpoint_every,
                stop_after_epochs=stop_after_epochs,
                on_chunk=lambda epoch, s=program.settings: bar.set_postfix(
                    epoch=f"{epoch}/{s.epochs}"
                ),
            )
            records = _setting_results(ctx, settings_list, program, out)
            if primary:
                for record in records:
                    checkpointing.write_json_atomic(_setting_file(workdir, record["index"]), record)
                checkpointing.remove(_program_dir(workdir, program))
            timings[f"program_{program.index}"] = time.perf_counter() - start
            if resumed_from:
                resumed[program.index] = resumed_from
            bar.update(len(program.setting_indices))
            if max_settings is not None and finished() >= max_settings:
                raise Interrupted(f"stopped after {finished()} settings")
    finally:
        bar.close()
    distributed.barrier("sweep: settings written")  # process 0 has written every setting file

    records = [json.loads(_setting_file(workdir, i).read_text()) for i in range(len(settings_list))]
    report = report_lib.build_report(
        records, [name for name, _ in spec.axes], num_groups=data.num_groups
    )
    report.update(
        dataset=data.meta["dataset"],
        backbone=data.meta["backbone"],
        val_metrics_on="select" if ctx.arrays.select is not None else "val",
        devices=len(devices),
        processes=jax.process_count(),
        programs=[list(p.setting_indices) for p in programs],
        timings_s=timings,
        resumed_from_epoch={str(k): v for k, v in resumed.items()},
    )
    if primary:
        report_lib.write_outputs(report, workdir)
    return report
