r"""HSFM on CelebA with ViT-B/16 features: hyperparameters of the paper's Table 12.

  python -m feature_export.export --dataset=celeba --backbone=vit_b16 --data_dir=/data/celeba \
      --weights=/weights/celeba_vit_b16_erm.pt --out=/features/celeba_vit_b16
  python -m experiments.main --config=experiments/configs/celeba_vit_b16.py \
      --config.features_dir=/features/celeba_vit_b16 --workdir=runs/celeba_vit_b16 --config.num_seeds=5

The paper reports (Table 2, %):
  erm: worst-group 53.3, average 95.7
  hsfm: worst-group 88.3, average 90.44
"""

from experiments.configs import paper


def get_config():
    return paper.paper_config("celeba", "vit_b16")
