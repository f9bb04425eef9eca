r"""HSFM on Dominoes with ResNet-50 features: hyperparameters of the paper's Table 11.

  python -m feature_export.export --dataset=dominoes --backbone=resnet50 --data_dir=/data/dominoes \
      --weights=/weights/dominoes_resnet50_erm.pt --out=/features/dominoes_resnet50
  python -m experiments.main --config=experiments/configs/dominoes_resnet50.py \
      --config.features_dir=/features/dominoes_resnet50 --workdir=runs/dominoes_resnet50 --config.num_seeds=5

The paper reports (Table 1, %):
  erm: worst-group 78.6, average 88.83
  hsfm: worst-group 90.4 ± 0.3, average 92.9 ± 0.2
  dfr: worst-group 90.0 ± 0.4, average 92.3 ± 0.2
"""

from experiments.configs import paper


def get_config():
    return paper.paper_config("dominoes", "resnet50")
