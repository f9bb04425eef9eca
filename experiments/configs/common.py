"""The base experiment config: every field a run reads, with defaults.

Dataset configs start from `base_config()` and override what the paper's tables give. Each
method's fields (`config.<method>`) are its module's `default_config()` (`hsfm_jax.methods`).
"""

from __future__ import annotations

import ml_collections

from hsfm_jax import inputs, methods, synthetic


def hsfm_config(**overrides) -> ml_collections.ConfigDict:
    """HSFM hyperparameters (`hsfm_jax.hsfm_method.default_config`) with `overrides`."""
    config = methods.default_configs()["hsfm"]
    config.update(overrides)
    return config


def erm_config(**overrides) -> ml_collections.ConfigDict:
    """The ERM head recipe (`hsfm_jax.baselines.erm.default_config`) with `overrides`."""
    config = methods.default_configs()["erm"]
    config.update(overrides)
    return config


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.features_dir = inputs.PLACEHOLDER_PREFIX + "/features"
    # How to make features_dir when it has no meta.json: "" (error), "synthetic", "export".
    config.prepare = ""
    # A prepared features_dir made with other arguments than these: "regenerate" or "refuse".
    config.stale_features = "regenerate"
    # Arguments of hsfm_jax.synthetic.generate, used when prepare == "synthetic".
    config.synthetic = ml_collections.ConfigDict(synthetic.default_arguments())
    # Flags of `python -m feature_export.pipeline` (build, fine-tune, export), used when
    # prepare == "export"; build_args / finetune_* are empty unless the dataset is built here or
    # the backbone fine-tuned first.
    config.export = ml_collections.ConfigDict(
        dict(
            dataset="",
            backbone="",
            data_dir="",
            weights="",
            num_threads=0,
            dataset_args={},
            backbone_args={},
            build_args={},
            finetune_workdir="",
            finetune_args={},
        )
    )
    # fraction > 0: val is split (class-stratified, seeded) into a part for fitting (HSFM's hard
    # set, DFR) and a part for model selection, as the paper's fine-grained protocol (Sec. 8.2).
    config.val_split = ml_collections.ConfigDict(dict(fraction=0.0, seed=0))
    # More splits to evaluate beside val and test (e.g. Hard-Spurious-ImageNet's "test_ar").
    config.extra_test_splits = ""
    config.methods = "erm,dfr,neurontune,group_dro,jtt,afr,hsfm"
    # "none": the label-free track (SubpopBench's ValWorstAccAttributeNo). No method receives a
    # group label of any split: "auto" selection is worst-class val accuracy, DFR balances classes,
    # group_dro is an error (drop it from `methods`); test groups only report test metrics.
    config.group_labels = "all"
    # Resamples of the test examples for a 95% bootstrap interval of test WGA (0: off; e.g. 1000).
    config.bootstrap = 0
    config.num_seeds = 5
    config.seed = 0
    config.float64 = False
    # Least seconds between two checkpoints of a method's epoch loop (HSFM, NeuronTune), which a
    # rerun of the same command resumes from (`experiments.train`); 0: after every chunk.
    config.checkpoint_seconds = 60.0
    # Training curves as TensorBoard event files under <workdir>/tensorboard (docs/outputs.md).
    config.tensorboard = True
    for name, method_config in methods.default_configs().items():
        config[name] = method_config
    return config
