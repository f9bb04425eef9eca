r"""HSFM on MetaShift with ViT-B/16 features: hyperparameters of the paper's Table 12.

  python -m feature_export.export --dataset=metashift --backbone=vit_b16 --data_dir=/data/metashift \
      --weights=/weights/metashift_vit_b16_erm.pt --out=/features/metashift_vit_b16
  python -m experiments.main --config=experiments/configs/metashift_vit_b16.py \
      --config.features_dir=/features/metashift_vit_b16 --workdir=runs/metashift_vit_b16 --config.num_seeds=5

The paper reports (Table 2, %):
  erm: worst-group 69.7, average 69.78
  hsfm: worst-group 69.9, average 70.22
"""

from experiments.configs import paper


def get_config():
    return paper.paper_config("metashift", "vit_b16")
