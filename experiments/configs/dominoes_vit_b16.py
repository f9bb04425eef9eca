r"""HSFM on Dominoes with ViT-B/16 features: hyperparameters of the paper's Table 12.

  python -m feature_export.export --dataset=dominoes --backbone=vit_b16 --data_dir=/data/dominoes \
      --weights=/weights/dominoes_vit_b16_erm.pt --out=/features/dominoes_vit_b16
  python -m experiments.main --config=experiments/configs/dominoes_vit_b16.py \
      --config.features_dir=/features/dominoes_vit_b16 --workdir=runs/dominoes_vit_b16 --config.num_seeds=5

The paper reports (Table 2, %):
  erm: worst-group 46.1, average 70.2
  hsfm: worst-group 73.3, average 75.46
"""

from experiments.configs import paper


def get_config():
    return paper.paper_config("dominoes", "vit_b16")
