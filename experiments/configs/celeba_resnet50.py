r"""HSFM on CelebA with ResNet-50 features: hyperparameters of the paper's Table 11.

  python -m feature_export.export --dataset=celeba --backbone=resnet50 --data_dir=/data/celeba \
      --weights=/weights/celeba_resnet50_erm.pt --out=/features/celeba_resnet50
  python -m experiments.main --config=experiments/configs/celeba_resnet50.py \
      --config.features_dir=/features/celeba_resnet50 --workdir=runs/celeba_resnet50 --config.num_seeds=5

The paper reports (Table 1, %):
  erm: worst-group 30.6, average 95.83
  hsfm: worst-group 89.2 ± 0.2, average 90.6 ± 0.5
  dfr: worst-group 88.3 ± 1.1, average 91.3 ± 0.3
"""

from experiments.configs import paper


def get_config():
    return paper.paper_config("celeba", "resnet50")
