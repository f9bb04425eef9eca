r"""HSFM on Waterbirds with CLIP ViT-H/14 image embeddings (paper Sec. 5.3, Table 4b).

  python -m feature_export.export --dataset=waterbirds --data_dir=/data/waterbirds --backbone=clip \
      --backbone_arg model_name=ViT-H-14 --weights=/weights/open_clip_vit_h14.bin --out=/features/waterbirds_clip
  python -m experiments.main --config=experiments/configs/waterbirds_clip.py \
      --config.features_dir=/features/waterbirds_clip --workdir=runs/waterbirds_clip --config.num_seeds=5

As in the paper, the backbone is frozen CLIP and the ERM model is a linear head trained on its
embeddings (the `erm` row; HSFM starts from it). The paper gives no HSFM hyperparameters for CLIP:
these are Table 12's ViT-B/16 values (see experiments/configs/paper.py), a choice of ours.

The paper reports (Table 4b, worst-group / average %): ERM 68.4 / 89.39, HSFM 80.5 / 94.05.
"""

from experiments.configs import paper


def get_config():
    return paper.paper_config("waterbirds", "clip")
