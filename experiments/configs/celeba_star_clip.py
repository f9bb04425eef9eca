r"""HSFM on CelebA* with CLIP ViT-H/14 image embeddings (paper Sec. 5.3, Table 4b).

  python -m feature_export.export --dataset=celeba_star --data_dir=/data/celeba --backbone=clip \
      --backbone_arg model_name=ViT-H-14 --weights=/weights/open_clip_vit_h14.bin --out=/features/celeba_star_clip
  python -m experiments.main --config=experiments/configs/celeba_star_clip.py \
      --config.features_dir=/features/celeba_star_clip --workdir=runs/celeba_star_clip --config.num_seeds=5

As in the paper, the backbone is frozen CLIP and the ERM model is a linear head trained on its
embeddings (the `erm` row; HSFM starts from it). The paper gives no HSFM hyperparameters for CLIP:
these are Table 12's ViT-B/16 values (see experiments/configs/paper.py), a choice of ours.

The paper reports (Table 4b, worst-group / average %): ERM 50.0 / 74.50, HSFM 81.0 / 89.75.
"""

from experiments.configs import paper


def get_config():
    return paper.paper_config("celeba_star", "clip")
