"""digit_cnn: a small CNN for small images (digit dominoes), trained with ERM on the train split.

The paper's features come from a backbone fine-tuned with ERM on the dataset; for the embedded
digit dominoes benchmark that backbone is this CNN, trained from scratch on CPU in seconds:

    conv3x3(3->16) relu, conv3x3(16->32) relu, maxpool2,
    conv3x3(32->64) relu, maxpool2, flatten, linear(->64) relu   = features (B, 64)
    linear(64 -> C)                                              = head, saved as head.npz

Input: the dataset's PIL RGB image as a float tensor in [0, 1], no resizing and no
normalization (16x8 for digit dominoes; any size whose sides are multiples of 4 works).

Weights (`weights=PATH`, the exporter's `--weights`): loaded when the file exists; otherwise the
network is trained on the dataset's train split and saved there (atomically), so later exports
reuse it. Without a path the network is trained in memory and not saved. A checkpoint remembers
the fingerprint of the dataset it was trained on; loading it for a different dataset is an error.
Training is deterministic given `seed` (same machine and torch build).

Measured with the defaults (digit dominoes 8 vs 9, seed 0; 708 train images, 20 epochs, one
thread: about 4 s on an idle 2-core CPU), the backbone's own head on the exported features:
train accuracy 1.000; val mean 0.929, worst-group 0.800; test mean 0.933, worst-group 0.846
(groups y=8,s=0 1.000, y=8,s=1 0.846, y=9,s=0 0.885, y=9,s=1 1.000): the minority groups,
where the 0/1 shortcut disagrees with the label, are the worst.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from feature_export.backbones.base import Backbone, register
from feature_export.datasets.base import ExportDataset
from hsfm_jax.runtime.atomic import atomic_write

FEATURE_DIM = 64
PREPROCESSING = (
    "digit_cnn: PIL RGB at native size -> float tensor in [0, 1] (no resize, no normalization)"
)
_CHECKPOINT_VERSION = 1


class DigitCNN(nn.Module):
    """images (B, 3, H, W) -> logits (B, C); `features` gives the penultimate (B, 64)."""

    def __init__(self, num_classes: int, image_shape: tuple[int, int] = (16, 8)):
        super().__init__()
        h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"digit_cnn: image sides must be multiples of 4, got {image_shape}")
        self.image_shape = (h, w)
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (h // 4) * (w // 4), FEATURE_DIM),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def to_tensor(image) -> torch.Tensor:
    """PIL RGB image -> (3, H, W) float32 tensor in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def load_split_tensor(dataset: ExportDataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a split through `to_tensor`: (N, 3, H, W) float32, labels (N,) int64."""
    index = dataset.index(split)
    images = torch.stack([to_tensor(dataset.load_image(split, i)) for i in range(len(index.ids))])
    return images, torch.as_tensor(np.asarray(index.labels, np.int64))


def train_erm(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    epochs: int = 20,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> DigitCNN:
    """ERM (cross-entropy, AdamW) on all of `images` (N, 3, H, W); returns the network in eval mode."""
    torch.manual_seed(seed)
    model = DigitCNN(num_classes, tuple(images.shape[-2:]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def weights_id(model: nn.Module) -> str:
    """A hash of the parameter values (independent of how the file was written)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()[:16]


def save_checkpoint(path: str | os.PathLike, model: DigitCNN, **info) -> None:
    """Writes the weights atomically (temp file renamed into place)."""
    with atomic_write(path) as f:
        torch.save(
            {
                "version": _CHECKPOINT_VERSION,
                "num_classes": model.head.out_features,
                "image_shape": list(model.image_shape),
                "state_dict": model.state_dict(),
                **info,
            },
            f,
        )


def load_checkpoint(path: str | os.PathLike) -> tuple[DigitCNN, dict]:
    """Loads a checkpoint written by `save_checkpoint`; errors name the file."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: digit_cnn weights file missing") from None
    except Exception as e:  # torch raises many types for a corrupt file
        raise ValueError(
            f"{path}: not a readable digit_cnn checkpoint ({type(e).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path}: not a digit_cnn checkpoint (no 'state_dict')")
    model = DigitCNN(int(checkpoint["num_classes"]), tuple(checkpoint["image_shape"]))
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
    if missing or unexpected:
        key = (missing or unexpected)[0]
        raise ValueError(
            f"{path}: state dict does not match digit_cnn (first mismatched key {key!r})"
        )
    return model.eval(), checkpoint


@register("digit_cnn")
def digit_cnn(
    *,
    dataset: ExportDataset | None = None,
    weights: str | os.PathLike | None = None,
    random_init: bool = False,
    seed: int = 0,
    epochs: int = 20,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
) -> Backbone:
    """The digit_cnn backbone for `dataset`.

    Args:
      dataset: needed to train (the train split) and to check a loaded checkpoint's classes.
      weights: checkpoint path; loaded if it exists, else trained and saved there.
      random_init: skip training, use the seeded initialization (tests only).
      seed: initialization and batch-order seed.
      epochs, batch_size, learning_rate: the ERM recipe (AdamW, weight decay 1e-4).
    """
    train_config = {
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "seed": int(seed),
    }
    dataset_fingerprint = dataset.fingerprint() if dataset is not None else None
    if random_init:
        if weights is not None:
            raise ValueError("digit_cnn: pass either weights or random_init, not both")
        num_classes = len(dataset.class_names) if dataset is not None else 2
        torch.manual_seed(seed)
        model = DigitCNN(num_classes).eval()
        model_id = f"random_init:{seed}:{weights_id(model)}"
    elif weights is not None and Path(weights).exists():
        model, checkpoint = load_checkpoint(weights)
        trained_on = checkpoint.get("dataset_fingerprint")
        if dataset is not None and trained_on and trained_on != dataset_fingerprint:
            raise ValueError(
                f"{weights}: trained on dataset fingerprint {trained_on}, this dataset is "
                f"{dataset_fingerprint}; delete the file to retrain or pass another --weights"
            )
        if dataset is not None and model.head.out_features != len(dataset.class_names):
            raise ValueError(
                f"{weights}: head has {model.head.out_features} classes, dataset "
                f"{dataset.name} has {len(dataset.class_names)}"
            )
        model_id = weights_id(model)
    else:
        if dataset is None:
            raise ValueError("digit_cnn: training needs a dataset (or pass weights / random_init)")
        images, labels = load_split_tensor(dataset, "train")
        with _single_thread():
            model = train_erm(images, labels, num_classes=len(dataset.class_names), **train_config)
        if weights is not None:
            save_checkpoint(
                weights, model, dataset_fingerprint=dataset_fingerprint, train_config=train_config
            )
        model_id = weights_id(model)
    head = (
        model.head.weight.detach().numpy().astype(np.float32),
        model.head.bias.detach().numpy().astype(np.float32),
    )
    return Backbone(
        name="digit_cnn",
        module=model.features,
        feature_dim=FEATURE_DIM,
        transform=to_tensor,
        preprocessing=PREPROCESSING,
        head=head,
        weights_id=model_id,
    )


@contextlib.contextmanager
def _single_thread():
    """Runs torch on one thread inside the block: reproducible, and fast for a network this small."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
