r"""HSFM on Waterbirds with ConvNeXt features: hyperparameters of the paper's Table 13.

  python -m feature_export.export --dataset=waterbirds --backbone=convnext --data_dir=/data/waterbirds \
      --weights=/weights/waterbirds_convnext_erm.pt --out=/features/waterbirds_convnext
  python -m experiments.main --config=experiments/configs/waterbirds_convnext.py \
      --config.features_dir=/features/waterbirds_convnext --workdir=runs/waterbirds_convnext --config.num_seeds=5

The paper reports (Table 4a, %):
  erm: worst-group 82.7, average 90.99
  hsfm: worst-group 92.6, average 92.96
"""

from experiments.configs import paper


def get_config():
    return paper.paper_config("waterbirds", "convnext")
