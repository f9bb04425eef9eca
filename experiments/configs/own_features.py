r"""A template for your own features: no prepare step, rates for unit-scale features.

  hsfm-run --config=own_features --config.features_dir=/data/my_features --workdir=runs/mine
  python -m experiments.main --config=experiments/configs/own_features.py \
      --config.features_dir=/data/my_features --workdir=runs/mine        # from a checkout

From Python: ``hsfm_jax.run(data, config="own_features")`` (`hsfm_jax.runtime.experiment.run`).

The paper's rates (`hsfm_jax.runtime.experiment.default_config`) are for ERM-fine-tuned ResNet-50
features (2048-d, non-negative, large norms). These are for features of unit scale per
dimension, e.g. standardized with train's statistics (``X = (X - X_train.mean(0)) /
X_train.std(0)``, the same for val and test): the values the synthetic problem's config
(`experiments/configs/synthetic.py`, unit-scale, 32-d) selected on val. For other scales, or to
tune them on your val split, sweep them:

  hsfm-sweep --config=own_features --config.features_dir=/data/my_features \
      --workdir=runs/mine_sweep --sweep='meta_lr=0.03,0.1,0.3 inner_lr=1e-3,1e-2,1e-1 seeds=5'

Every field of the experiment is listed in `hsfm_jax.runtime.experiment.default_config` (commented there);
each method's fields in its module's ``default_config()`` (`hsfm_jax.methods.REGISTRY`). The
fields below are the ones to look at for your own features.
"""

from hsfm_jax.runtime import experiment


def get_config():
    config = experiment.default_config()
    # Your feature directory (docs/feature_format.md); from Python, pass a FeatureSet instead.
    config.features_dir = "/path/to/your/features"
    config.prepare = ""  # the features exist already: nothing is generated or exported
    # The rows of the results table: any of erm, dfr, neurontune, group_dro, jtt, afr, hsfm.
    config.methods = "erm,dfr,neurontune,group_dro,jtt,afr,hsfm"
    config.num_seeds = 5  # a vmapped axis: 5 seeds cost little more than 1
    # "none": no method reads a group label (selection by worst-class val accuracy).
    config.group_labels = "all"
    # > 0: val is split, class-stratified, into a part methods fit on (HSFM's hard set, DFR) and a
    # part for model selection (e.g. 0.5 when val is the only labelled data besides train).
    config.val_split.fraction = 0.0
    config.bootstrap = 0  # e.g. 1000: a 95% interval of test WGA over test resamples

    # The ERM head: HSFM's initial head when the features have no head.npz, and the `erm` row.
    config.erm.learning_rate = 1e-2
    config.erm.steps = 500
    # Step sizes of the baselines that train heads by gradient steps.
    config.group_dro.learning_rate = 1e-2
    config.jtt.learning_rate = 0.1
    config.afr.learning_rate = 0.03
    # HSFM (paper Alg. 1): support points per class, hard-set size per class (<= the smallest val
    # class), inner SGD steps and their rate, meta-steps per epoch and their rate, epochs.
    config.hsfm.support_per_class = 16
    config.hsfm.hard_set_size = 32
    config.hsfm.inner_steps = 15
    config.hsfm.inner_lr = 1e-2
    config.hsfm.meta_lr = 1e-1
    config.hsfm.meta_steps = 15
    config.hsfm.epochs = 40
    # The RMS norm of the features these rates were set on (the synthetic problem's standardized
    # 32-d features): features far from it get a warning; hsfm.rate_units="feature_rms" rescales
    # the rates to yours from it.
    config.hsfm.rates_rms = 4.6
    return config
