r"""Runs an HSFM hyperparameter sweep: a grid of settings x seeds, one results table.

  python -m experiments.sweep --config=experiments/configs/synthetic.py \
      --workdir=runs/syn_sweep --sweep='inner_steps=5,10,15 support_per_class=8,16 seeds=10'

--sweep: space-separated `name=v1,v2,...`; a bare name is a field of config.hsfm, a dotted name
(`erm.learning_rate`) a config path; `seeds=N` sets config.num_seeds. Settings that differ only in
learning rates or the clip norm are vmapped together with the seeds; the others are separate
compiled programs. Seeds are sharded across all devices of `jax.devices()`.

Writes to --workdir: sweep.md, sweep.csv, sweep.json (a row per setting: val WGA, test WGA, test
mean, train-weighted average, mean ± std over seeds, and the setting val WGA selects),
sweep.png (test WGA against each swept name), settings/<index>.json (each setting's full
results) and sweep_config.json. Rerunning the same command after a kill resumes: finished
settings are skipped and a running program restarts from its last checkpoint (every
--checkpoint_every epochs). Another config in the same --workdir is an error.

Multi-process (JAX's distributed runtime, one process per host): run the same command on every
host with --coordinator_address=HOST:PORT --num_processes=N --process_id=K (K = 0..N-1; HOST is
process 0's), or with --distributed_auto where `jax.distributed.initialize()` finds the cluster
itself (SLURM, TPU pod slices). The runs are sharded over every process's devices; process 0
writes the files. --workdir must be one shared directory; a killed sweep resumes when all N
processes are started again.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli
from hsfm_jax.reporting import tables
from hsfm_jax.runtime import distributed
from hsfm_jax.sweep import execute

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for everything the sweep writes.")
_SWEEP = flags.DEFINE_string(
    "sweep", "", "Sweep spec, e.g. 'inner_steps=5,10,15 meta_lr=0.1,1 seeds=10'."
)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", 10, "Epochs between checkpoints of a running program."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process: HOST:PORT of process 0's coordination service."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
_LOCAL_DEVICES = flags.DEFINE_list(
    "local_device_ids", None, "Multi-process: the devices this process uses (default: all)."
)
_AUTO = flags.DEFINE_bool(
    "distributed_auto",
    False,
    "Multi-process: let jax.distributed.initialize() detect the cluster (SLURM, TPU pod slice).",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_orbax()
    cli.guarded(
        lambda: distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
            local_device_ids=[int(i) for i in _LOCAL_DEVICES.value or []],
            auto=_AUTO.value,
        )
    )
    cli.enable_compilation_cache()
    report = cli.guarded(
        lambda: execute.run(
            _CONFIG.value,
            _SWEEP.value,
            _WORKDIR.value,
            checkpoint_every=_CHECKPOINT_EVERY.value,
        )
    )
    if distributed.is_primary():
        print(tables.sweep_markdown(report))
    logging.info("Sweep of %d settings in %s", len(report["rows"]), _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
