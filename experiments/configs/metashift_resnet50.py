r"""HSFM on MetaShift with ResNet-50 features: hyperparameters of the paper's Table 11.

  python -m feature_export.export --dataset=metashift --backbone=resnet50 --data_dir=/data/metashift \
      --weights=/weights/metashift_resnet50_erm.pt --out=/features/metashift_resnet50
  python -m experiments.main --config=experiments/configs/metashift_resnet50.py \
      --config.features_dir=/features/metashift_resnet50 --workdir=runs/metashift_resnet50 --config.num_seeds=5

The paper reports (Table 1, %):
  erm: worst-group 64.1, average 75.65
  hsfm: worst-group 77.2 ± 0.1, average 77.4 ± 0.0
  dfr: worst-group 72.8 ± 0.6, average 77.5 ± 0.6
"""

from experiments.configs import paper


def get_config():
    return paper.paper_config("metashift", "resnet50")
