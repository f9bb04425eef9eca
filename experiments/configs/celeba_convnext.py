r"""HSFM on CelebA with ConvNeXt features: hyperparameters of the paper's Table 13.

  python -m feature_export.export --dataset=celeba --backbone=convnext --data_dir=/data/celeba \
      --weights=/weights/celeba_convnext_erm.pt --out=/features/celeba_convnext
  python -m experiments.main --config=experiments/configs/celeba_convnext.py \
      --config.features_dir=/features/celeba_convnext --workdir=runs/celeba_convnext --config.num_seeds=5

The paper reports (Table 4a, %):
  erm: worst-group 47.2, average 96.04
  hsfm: worst-group 81.1, average 93.82
"""

from experiments.configs import paper


def get_config():
    return paper.paper_config("celeba", "convnext")
