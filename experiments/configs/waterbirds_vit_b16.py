r"""HSFM on Waterbirds with ViT-B/16 features: hyperparameters of the paper's Table 12.

  python -m feature_export.export --dataset=waterbirds --backbone=vit_b16 --data_dir=/data/waterbirds \
      --weights=/weights/waterbirds_vit_b16_erm.pt --out=/features/waterbirds_vit_b16
  python -m experiments.main --config=experiments/configs/waterbirds_vit_b16.py \
      --config.features_dir=/features/waterbirds_vit_b16 --workdir=runs/waterbirds_vit_b16 --config.num_seeds=5

The paper reports (Table 2, %):
  erm: worst-group 53.9, average 75.37
  hsfm: worst-group 81.5, average 83.02
"""

from experiments.configs import paper


def get_config():
    return paper.paper_config("waterbirds", "vit_b16")
