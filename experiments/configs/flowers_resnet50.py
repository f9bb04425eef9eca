r"""HSFM on Oxford Flowers-102, ResNet-50 fine-tuned with ERM (paper Table 3, "-ERM" rows).

  python -m feature_export.train_erm --dataset=flowers102 \
      --data_dir=/data/flowers102 --arch=resnet50 --weights=/weights/resnet50-0676ba61.pth \
      --workdir=runs/erm_flowers_r50
  python -m feature_export.export --dataset=flowers102 --backbone=resnet50 \
      --data_dir=/data/flowers102 --weights=runs/erm_flowers_r50/checkpoint.pt \
      --out=/features/flowers_resnet50
  python -m experiments.main --config=experiments/configs/flowers_resnet50.py \
      --config.features_dir=/features/flowers_resnet50 --workdir=runs/flowers_resnet50

The backbone is first fine-tuned on the train split (train_erm's recipe for this dataset:
Adam, lr 1e-3, batch 128, 150 epochs, Sec. 8.2); its classifier is exported as head.npz, is the
`backbone_head` row (Table 3's "ERM") and HSFM's starting head. The `erm` row is a linear head
retrained on the frozen features with the same recipe (no counterpart in Table 3).

The paper reports (Table 3, top-1 test accuracy, %, column "Oxford Flowers"):
  backbone_head (Table 3 "ERM"): 91.07
  dfr (DFR-ERM):                 95.98
  hsfm (HSFM-ERM):               97.27
results.md gives test acc (top-1), mean-class and worst-class accuracy; model selection is by
accuracy on the `select` half of val.

Split sizes (official): 10 train, 10 val (5 to fit, 5 for model selection after the 50/50
split) and 20+ test images per class. 16 support embeddings per class and k = 64 (Sec. 8.2) are
more than a class has: S is the whole train split (10 per class) and the hard set the whole
fitting half (k = 5) (see experiments/configs/finegrained.py).
"""

from experiments.configs import finegrained


def get_config():
    config = finegrained.finegrained_config("flowers102", "erm")
    # The official split has 10 train and 10 val images per class: 16 support embeddings per
    # class (Sec. 8.2) cannot be drawn without replacement, so S is all of train; the 50/50 val
    # split leaves 5 per class to fit, so top-64 per class is the whole class: k = 5.
    config.hsfm.support_per_class = 10
    config.hsfm.hard_set_size = 5
    return config
