r"""HSFM vs ERM on the synthetic spurious-feature problem (`hsfm_jax.data.synthetic`).

  python -m experiments.main --config=experiments/configs/synthetic.py --workdir=runs/synthetic

Without group labels (docs/results.md, "Without group labels"; HSFM by worst-class val accuracy, test WGA
91.1 ± 2.0):

  python -m experiments.main --config=experiments/configs/synthetic.py --workdir=runs/synthetic_nogroups \
      --config.group_labels=none --config.methods=erm,dfr,neurontune,jtt,afr,hsfm

Writes the features to `features_dir` first when they are missing. Learning rates were chosen on
val (the features are unit-scale, unlike ResNet-50's). See docs/results.md for the numbers it gives.
"""

from experiments.configs import common


def get_config():
    config = common.base_config()
    config.features_dir = "runs/synthetic_features"
    config.prepare = "synthetic"
    config.num_seeds = 5
    config.erm.learning_rate = 1e-2
    config.erm.steps = 500
    # Unit-scale features (d = 32): larger steps than the backbone-scale defaults, as in the
    # methods' tests (tests/methods/test_group_dro.py, test_jtt.py, test_afr.py).
    config.group_dro.learning_rate = 1e-2
    config.jtt.learning_rate = 0.1
    config.afr.learning_rate = 0.03
    config.hsfm = common.hsfm_config(
        support_per_class=16,
        hard_set_size=32,
        inner_steps=15,
        inner_lr=1e-2,
        meta_lr=1e-1,
        meta_steps=15,
        epochs=40,
        rates_rms=4.6,  # the RMS norm of these features, on which the rates above were set
    )
    return config
