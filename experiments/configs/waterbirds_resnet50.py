r"""HSFM on Waterbirds with ResNet-50 features: hyperparameters of the paper's Table 11.

  python -m feature_export.export --dataset=waterbirds --backbone=resnet50 --data_dir=/data/waterbirds \
      --weights=/weights/waterbirds_resnet50_erm.pt --out=/features/waterbirds_resnet50
  python -m experiments.main --config=experiments/configs/waterbirds_resnet50.py \
      --config.features_dir=/features/waterbirds_resnet50 --workdir=runs/waterbirds_resnet50 --config.num_seeds=5

The paper reports (Table 1, %):
  erm: worst-group 74.6, average 90.21
  hsfm: worst-group 93.1 ± 0.1, average 94.0 ± 0.5
  dfr: worst-group 92.3 ± 0.2, average 93.3 ± 0.5
"""

from experiments.configs import paper


def get_config():
    return paper.paper_config("waterbirds", "resnet50")
