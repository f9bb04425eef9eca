r"""Runs one experiment: the configured methods on a feature directory, one results table.

  python -m experiments.main --config=experiments/configs/waterbirds_resnet50.py \
      --config.features_dir=/data/wb_r50 --workdir=runs/wb --config.num_seeds=5

Writes config.json, results.json and results.md (and HSFM's support.npz, history.json) to
--workdir. Bad input (missing files, malformed features, bad config) is a one-line error.
Methods with an epoch loop show a progress bar over epochs on stderr (--quiet: none) and save
checkpoints (every --config.checkpoint_seconds): after a kill, the same command in the same
--workdir resumes them and writes the results an uninterrupted run would.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli
from hsfm_jax.runtime import experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for everything the run writes.")
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bars (CI, logs).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_orbax()
    cli.enable_compilation_cache()
    config = cli.guarded(lambda: _CONFIG.value)  # a missing or broken config file: one line
    results = cli.guarded(
        lambda: experiment.run(
            config.features_dir, config=config, workdir=_WORKDIR.value, progress=not _QUIET.value
        )
    )
    print(results.table())
    logging.info("Results of %d method rows in %s", len(results.rows), _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
