"""Dominoes, CIFAR-10 car/truck over MNIST 0/1 (Pagliardini et al.; HSFM Appendix Table 8).

Reads the released arrays (the layout DaC loads):

    <root>/X_{train,val,test}.npy    (N, 3, 64, 32) float in [0, 1]  (also (N, 64, 32, 3), uint8)
    <root>/y_{train,val,test}.npy    (N,) 0 car, 1 truck
    <root>/env_{train,val,test}.npy  (N,) group in [0, 4) = 2 * y + mnist digit

and, for users without them, `build_dominoes` writes that layout from local copies of CIFAR-10
(the python pickles: `cifar-10-batches-py/data_batch_1..5`, `test_batch`) and MNIST (the idx
files `train-images-idx3-ubyte[.gz]`, ... searched under the given directory):

    python -m feature_export.datasets.dominoes --cifar10_dir=DIR --mnist_dir=DIR --out=DIR

Each image is the 32x32 CIFAR image on top of the MNIST digit resized to 32x32 (grey to RGB).
Train uses CIFAR train 80% (seeded) with the digit equal to the label for `spurious_fraction`
(0.9) of images; val uses the other 20% of CIFAR train and test uses CIFAR test, both with the
four groups exactly balanced (as far as the MNIST split's 0s and 1s allow); MNIST train is split
80/20 the same way, so no digit image is shared between train and val.
"""

from __future__ import annotations

import argparse
import gzip
import os
import pickle
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from feature_export.datasets.base import ExportDataset, SplitIndex, register
from hsfm_jax.atomic import atomic_write

SPLITS = ("train", "val", "test")
CIFAR_CAR, CIFAR_TRUCK = 1, 9


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (Dominoes release layout)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from None


@register("dominoes")
class Dominoes(ExportDataset):
    name = "dominoes"
    class_names = ["car", "truck"]
    group_names = ["car_0", "car_1", "truck_0", "truck_1"]
    # The whole 64x32 domino must reach the network (a 224 crop would cut the digit).
    resize_policy = "resize224"

    def __init__(self, data_dir: str | os.PathLike):
        root = Path(data_dir)
        self._root = root
        self._images: dict[str, np.ndarray] = {}
        self._splits: dict[str, SplitIndex] = {}
        for split in SPLITS:
            x_path, y_path, env_path = (root / f"{k}_{split}.npy" for k in ("X", "y", "env"))
            images, labels, env = _load_npy(x_path), _load_npy(y_path), _load_npy(env_path)
            n = images.shape[0]
            if images.ndim != 4 or 3 not in (images.shape[1], images.shape[3]):
                raise ValueError(
                    f"{x_path}: expected (N, 3, H, W) or (N, H, W, 3), got {images.shape}"
                )
            for path, values, high in ((y_path, labels, 2), (env_path, env, 4)):
                values = np.asarray(values)
                if values.shape != (n,):
                    raise ValueError(f"{path}: expected shape ({n},) to match {x_path.name}")
                bad = np.flatnonzero((values < 0) | (values >= high) | (values != values.round()))
                if bad.size:
                    raise ValueError(
                        f"{path}: row {bad[0]}: value {values[bad[0]]} out of range [0, {high})"
                    )
            labels = np.asarray(labels, np.int64)
            groups = np.asarray(env, np.int64)
            wrong = np.flatnonzero(groups // 2 != labels)
            if wrong.size:
                raise ValueError(
                    f"{env_path}: row {wrong[0]}: env {groups[wrong[0]]} does not encode label "
                    f"{labels[wrong[0]]} as 2 * y + digit"
                )
            self._images[split] = images
            self._splits[split] = SplitIndex(
                ids=[f"{split}/{i}" for i in range(n)], labels=labels, groups=groups
            )

    def index(self, split: str) -> SplitIndex:
        return self._splits[split]

    def load_image(self, split: str, i: int) -> Image.Image:
        image = np.asarray(self._images[split][i])
        if image.shape[0] == 3 and image.shape[-1] != 3:
            image = image.transpose(1, 2, 0)
        if np.issubdtype(image.dtype, np.floating):
            image = np.clip(np.rint(image * 255.0), 0, 255)
        return Image.fromarray(image.astype(np.uint8), "RGB")

    def source_files(self):
        # The label files identify the release; hashing X (hundreds of MB) would be slow, and
        # its shape and a sample of rows are covered below.
        return [self._root / f"{k}_{s}.npy" for s in SPLITS for k in ("y", "env")]

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(super().fingerprint().encode())
        for split in SPLITS:
            images = self._images[split]
            h.update(str(images.shape).encode())
            rows = np.linspace(0, images.shape[0] - 1, num=min(64, images.shape[0])).astype(int)
            h.update(np.ascontiguousarray(images[rows]).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"source": str(self._root)}


# ----------------------------------------------------------------------------- builder


def _find(directory: Path, names: list[str]) -> Path:
    for name in names:
        found = sorted(directory.rglob(name))
        if found:
            return found[0]
    raise FileNotFoundError(f"{directory}: none of {names} found (local CIFAR-10 / MNIST copy)")


def read_cifar10(directory: str | os.PathLike, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 python pickles -> images (N, 32, 32, 3) uint8, labels (N,)."""
    directory = Path(directory)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = _find(directory, [name])
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32)
            images.append(data.transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[b"labels"], np.int64))
        except (KeyError, ValueError, pickle.UnpicklingError, EOFError) as e:
            raise ValueError(f"{path}: not a CIFAR-10 python batch ({e})") from None
    return np.concatenate(images), np.concatenate(labels)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, file holds {array.size} bytes")
    return array.reshape(shape)


def read_mnist(directory: str | os.PathLike, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """MNIST idx files -> images (N, 28, 28) uint8, labels (N,)."""
    prefix = "train" if train else "t10k"
    images_path = _find(
        Path(directory), [f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte.gz"]
    )
    labels_path = _find(
        Path(directory), [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels-idx1-ubyte.gz"]
    )
    images, labels = _read_idx(images_path), _read_idx(labels_path).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images")
    return images, labels


def _compose(cifar: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) + (N, 28, 28) -> (N, 3, 64, 32) float32 in [0, 1]."""
    resized = np.stack(
        [np.asarray(Image.fromarray(d).resize((32, 32), Image.BILINEAR)) for d in digits]
    )
    bottom = np.repeat(resized[..., None], 3, axis=-1)
    stacked = np.concatenate([cifar, bottom], axis=1)  # (N, 64, 32, 3)
    return (stacked.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)


def _make_split(cifar, cifar_labels, mnist, mnist_labels, rng, spurious_fraction, balanced):
    keep = np.isin(cifar_labels, (CIFAR_CAR, CIFAR_TRUCK))
    cifar, y = cifar[keep], (cifar_labels[keep] == CIFAR_TRUCK).astype(np.int64)
    digit = np.empty_like(y)
    for c in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == c))
        if balanced:
            agree = rows.size // 2
        else:
            agree = int(round(spurious_fraction * rows.size))
        digit[rows[:agree]] = c
        digit[rows[agree:]] = 1 - c
    pools = {d: rng.permutation(np.flatnonzero(mnist_labels == d)) for d in (0, 1)}
    chosen_rows = []
    groups = 2 * y + digit
    if balanced:  # equal group sizes, capped by the digit pools
        per_group = min(
            min(np.sum(groups == g) for g in range(4)),
            pools[0].size // 2,
            pools[1].size // 2,
        )
        rows = np.concatenate(
            [rng.permutation(np.flatnonzero(groups == g))[:per_group] for g in range(4)]
        )
    else:
        rows = np.arange(y.size)
        for d in (0, 1):
            if np.sum(digit == d) > pools[d].size:
                raise ValueError(f"MNIST has too few {d}s ({pools[d].size}) for this split")
    rows = np.sort(rows)
    used = {0: 0, 1: 0}
    for r in rows:
        d = int(digit[r])
        chosen_rows.append(pools[d][used[d]])
        used[d] += 1
    images = _compose(cifar[rows], mnist[np.asarray(chosen_rows, np.int64)])
    return images, y[rows], groups[rows]


def build_dominoes(
    cifar10_dir: str | os.PathLike,
    mnist_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    spurious_fraction: float = 0.9,
    val_fraction: float = 0.2,
) -> dict[str, int]:
    """Writes X_/y_/env_<split>.npy (see module docstring); returns the split sizes."""
    rng = np.random.default_rng(seed)
    cifar_train, cifar_train_labels = read_cifar10(cifar10_dir, train=True)
    cifar_test, cifar_test_labels = read_cifar10(cifar10_dir, train=False)
    mnist_train, mnist_train_labels = read_mnist(mnist_dir, train=True)
    mnist_test, mnist_test_labels = read_mnist(mnist_dir, train=False)

    def holdout(n):
        order = rng.permutation(n)
        n_val = int(round(val_fraction * n))
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    c_train, c_val = holdout(cifar_train.shape[0])
    m_train, m_val = holdout(mnist_train.shape[0])
    parts = {
        "train": (
            cifar_train[c_train],
            cifar_train_labels[c_train],
            mnist_train[m_train],
            mnist_train_labels[m_train],
            False,
        ),
        "val": (
            cifar_train[c_val],
            cifar_train_labels[c_val],
            mnist_train[m_val],
            mnist_train_labels[m_val],
            True,
        ),
        "test": (cifar_test, cifar_test_labels, mnist_test, mnist_test_labels, True),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split, (c, cl, m, ml, balanced) in parts.items():
        images, y, env = _make_split(c, cl, m, ml, rng, spurious_fraction, balanced)
        for key, array in (("X", images), ("y", y), ("env", env)):
            with atomic_write(out_dir / f"{key}_{split}.npy") as f:
                np.save(f, array)
        sizes[split] = int(y.size)
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar10_dir", required=True)
    parser.add_argument("--mnist_dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spurious_fraction", type=float, default=0.9)
    args = parser.parse_args(argv)
    sizes = build_dominoes(
        args.cifar10_dir,
        args.mnist_dir,
        args.out,
        seed=args.seed,
        spurious_fraction=args.spurious_fraction,
    )
    print(f"wrote Dominoes to {args.out}: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
