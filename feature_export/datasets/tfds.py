"""Reading the paper's datasets from a user's local tensorflow-datasets data_dir (`--source=tfds`).

Where a dataset is in the TFDS catalog, users who already prepared it (`tfds build`, or a copy of
someone's `~/tensorflow_datasets`) can export from it instead of the published files:

    celeba         <- celeb_a             label attributes/Blond_Hair, group 2*y + attributes/Male
    cub            <- caltech_birds2011   label; val = seeded 10% of train, as the file reader
    stanford_cars  <- cars196             label; val = seeded 10% of train, as the file reader
    flowers102     <- oxford_flowers102   label; the official validation split

The builder is opened with `download=False`-style access only (`tfds.builder(name,
data_dir=...)`): nothing is fetched. Random access uses `builder.as_data_source` (ArrayRecord,
no TensorFlow needed); datasets prepared as TFRecord are read once through `builder.as_dataset`
with images left encoded (needs TensorFlow). `tensorflow_datasets` is an optional dependency:
its absence is a clear ImportError only when `source="tfds"` is asked for.

Each file-based reader is registered through `files_or_tfds`, so `datasets.get("cub",
source="tfds", tfds_data_dir=DIR)` and `datasets.get("cub", data_dir=DIR)` both work.
`read_tfds_images` reads a whole split of an image classification dataset as arrays: the
Dominoes builder's `source="tfds"` (TFDS `cifar10`, `fashion_mnist`, `mnist`).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from feature_export.datasets.base import ExportDataset, SplitIndex
from feature_export.datasets.tables import seeded_holdout

# our name -> (TFDS name, {our split: TFDS split}, label fn, group fn or None, class names
# source, resize policy)
CATALOG: dict[str, dict[str, Any]] = {
    "celeba": {
        "tfds_name": "celeb_a",
        "splits": {"train": "train", "val": "validation", "test": "test"},
        "label": lambda ex: int(bool(ex["attributes"]["Blond_Hair"])),
        "group": lambda ex: (
            2 * int(bool(ex["attributes"]["Blond_Hair"])) + int(bool(ex["attributes"]["Male"]))
        ),
        "class_names": ["not_blond", "blond"],
        "group_names": ["nonblond_female", "nonblond_male", "blond_female", "blond_male"],
        "resize_policy": "resize224",
    },
    "cub": {
        "tfds_name": "caltech_birds2011",
        "splits": {"train": "train", "test": "test"},
        "label": lambda ex: int(ex["label"]),
        "group": None,
        "class_names": None,
        "group_names": [],
        "resize_policy": "resize256_crop224",
    },
    "stanford_cars": {
        "tfds_name": "cars196",
        "splits": {"train": "train", "test": "test"},
        "label": lambda ex: int(ex["label"]),
        "group": None,
        "class_names": None,
        "group_names": [],
        "resize_policy": "resize256_crop224",
    },
    "flowers102": {
        "tfds_name": "oxford_flowers102",
        "splits": {"train": "train", "val": "validation", "test": "test"},
        "label": lambda ex: int(ex["label"]),
        "group": None,
        "class_names": None,
        "group_names": [],
        "resize_policy": "resize256_crop224",
    },
}

# A split reader: (number of examples, example i -> dict with "image" (array or encoded bytes)
# and the label fields).
SplitReader = tuple[int, Callable[[int], dict]]


def _pixels(value) -> np.ndarray:
    """A TFDS image (encoded bytes or decoded array) -> (H, W) uint8 grey or (H, W, C) uint8."""
    if isinstance(value, bytes | bytearray | np.bytes_):
        with Image.open(io.BytesIO(bytes(value))) as image:
            value = np.asarray(image)
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array.astype(np.uint8)


def _image(value) -> Image.Image:
    return Image.fromarray(_pixels(value)).convert("RGB")


def prepare_hint(tfds_name: str, data_dir: str | os.PathLike) -> str:
    """How to prepare TFDS `tfds_name` in data_dir, for error messages."""
    return (
        f"prepare it with `tfds build {tfds_name} --data_dir={data_dir}`, or offline from its "
        f"original files: `python -m feature_export.datasets.tfds_prepare --dataset={tfds_name} "
        f"--files=DIR --tfds_data_dir={data_dir}`"
    )


def open_tfds(
    tfds_name: str, data_dir: str | os.PathLike
) -> tuple[Callable[[str], SplitReader], list[str] | None]:
    """-> (split name -> SplitReader, the builder's label names or None). Needs tensorflow_datasets."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError(
            "source=tfds needs the optional package tensorflow-datasets "
            '(the tfds extra: pip install -e ".[tfds]")'
        ) from None
    data_dir = Path(data_dir).expanduser()
    try:
        builder = tfds.builder(tfds_name, data_dir=os.fspath(data_dir))
    except Exception as e:  # tfds raises several types for an absent dataset
        raise FileNotFoundError(
            f"{data_dir}: no TFDS dataset {tfds_name!r} ({_first_line(e)})"
        ) from None
    label_feature = None
    with contextlib.suppress(Exception):  # only for class names
        label_feature = builder.info.features["label"]
    names = list(label_feature.names) if getattr(label_feature, "names", None) else None

    def reader(split: str) -> SplitReader:
        try:
            source = builder.as_data_source(split=split)
            return len(source), source.__getitem__
        except Exception:  # not ArrayRecord: read once through tf.data with images encoded
            pass
        try:
            dataset = builder.as_dataset(
                split=split,
                shuffle_files=False,
                decoders={"image": tfds.decode.SkipDecoding()},
            )
            examples = list(tfds.as_numpy(dataset))
        except Exception as e:  # tfds raises AssertionError, NotFoundError, ... when unprepared
            raise FileNotFoundError(
                f"{data_dir}: cannot read TFDS {tfds_name}[{split}] ({_first_line(e)}); "
                + prepare_hint(tfds_name, data_dir)
            ) from None
        return len(examples), examples.__getitem__

    return reader, names


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def read_tfds_images(
    tfds_name: str, data_dir: str | os.PathLike, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """A split of a TFDS image classification dataset (features "image", "label") ->
    images (N, H, W) uint8 for grey, (N, H, W, C) uint8 otherwise, labels (N,) int64, in the
    split's TFDS order. Needs tensorflow_datasets (and TensorFlow for TFRecord data)."""
    open_split, _ = open_tfds(tfds_name, data_dir)
    n, get = open_split(split)
    if n == 0:
        raise ValueError(f"{data_dir}: TFDS {tfds_name}[{split}] is empty")
    images, labels = [], np.empty(n, np.int64)
    for i in range(n):
        example = get(i)
        try:
            images.append(_pixels(example["image"]))
            labels[i] = int(example["label"])
        except (KeyError, OSError, ValueError, TypeError) as e:
            raise ValueError(
                f"{data_dir}: TFDS {tfds_name}[{split}] row {i}: no readable image and label ({e})"
            ) from None
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"{data_dir}: TFDS {tfds_name}[{split}] images differ in shape {shapes}")
    return np.stack(images), labels


class TFDSDataset(ExportDataset):
    """One of CATALOG's datasets from a TFDS data_dir (see module docstring).

    `open_split` replaces `open_tfds` in tests (a reader of in-memory examples).
    """

    def __init__(
        self,
        name: str,
        tfds_data_dir: str | os.PathLike | None,
        *,
        seed: int = 0,
        val_fraction: float = 0.1,
        open_split: Callable[[str], SplitReader] | None = None,
        label_names: list[str] | None = None,
    ):
        if name not in CATALOG:
            raise ValueError(
                f"source=tfds: {name!r} is not in the TFDS catalog here ({sorted(CATALOG)})"
            )
        spec = CATALOG[name]
        if open_split is None:
            if tfds_data_dir is None:
                raise ValueError(f"{name}: source=tfds needs tfds_data_dir")
            open_split, label_names = open_tfds(spec["tfds_name"], tfds_data_dir)
        self.name = name
        self.group_names = list(spec["group_names"])
        self.resize_policy = spec["resize_policy"]
        self._readers: dict[str, Callable[[int], dict]] = {}
        self._rows: dict[str, np.ndarray] = {}
        self._splits: dict[str, SplitIndex] = {}
        self._tfds_data_dir = None if tfds_data_dir is None else os.fspath(tfds_data_dir)
        loaded = {}
        for split, tfds_split in spec["splits"].items():
            n, get = open_split(tfds_split)
            labels, groups = np.empty(n, np.int64), np.full(n, -1, np.int64)
            for i in range(n):
                example = get(i)
                labels[i] = spec["label"](example)
                if spec["group"] is not None:
                    groups[i] = spec["group"](example)
            loaded[split] = (tfds_split, get, labels, groups)
        num_classes = int(max(v[2].max(initial=0) for v in loaded.values())) + 1
        self.class_names = (
            spec["class_names"] or label_names or [f"class_{c:03d}" for c in range(num_classes)]
        )
        for split, (tfds_split, get, labels, groups) in loaded.items():
            bad = np.flatnonzero((labels < 0) | (labels >= len(self.class_names)))
            if bad.size:
                raise ValueError(
                    f"{spec['tfds_name']}[{tfds_split}] row {bad[0]}: label {labels[bad[0]]} out of range"
                )
            self._add(split, tfds_split, get, labels, groups, np.arange(labels.size))
        describe = {
            "source": "tfds",
            "tfds_name": spec["tfds_name"],
            "tfds_data_dir": self._tfds_data_dir,
        }
        if "val" not in spec["splits"]:
            _, get, labels, groups = loaded["train"]
            val = seeded_holdout(labels, val_fraction, seed)
            rows = np.arange(labels.size)
            self._add("train", "train", get, labels[~val], groups[~val], rows[~val])
            self._add("val", "train", get, labels[val], groups[val], rows[val])
            describe["val_split"] = (
                f"class-stratified {val_fraction:.0%} of the TFDS train split, numpy default_rng({seed})"
            )
            describe["split_seed"] = int(seed)
        self._describe = describe

    def _add(self, split, tfds_split, get, labels, groups, rows):
        self._readers[split] = get
        self._rows[split] = rows
        self._splits[split] = SplitIndex(
            ids=[f"{tfds_split}/{r}" for r in rows], labels=labels, groups=groups
        )

    def index(self, split: str) -> SplitIndex:
        return self._splits[split]

    def load_image(self, split: str, i: int) -> Image.Image:
        example = self._readers[split](int(self._rows[split][i]))
        try:
            return _image(example["image"])
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.index(split).ids[i]}: unreadable TFDS image ({e})") from None

    def describe(self) -> dict:
        return dict(self._describe)


def files_or_tfds(
    name: str, files_factory: Callable[..., ExportDataset]
) -> Callable[..., ExportDataset]:
    """A registry factory: `source="files"` (default) -> files_factory(data_dir, **kw); "tfds" -> TFDS."""

    files_params = [
        p
        for n, p in inspect.signature(files_factory).parameters.items()
        if n not in ("self", "data_dir")
    ]
    tfds_only = {"seed", "val_fraction"}

    def factory(
        data_dir: str | os.PathLike | None = None,
        *,
        source: str = "files",
        tfds_data_dir: str | os.PathLike | None = None,
        **kwargs,
    ) -> ExportDataset:
        if source == "tfds":
            unknown = sorted(set(kwargs) - tfds_only - {"check_files"})
            if unknown:
                raise ValueError(f"{name}: source=tfds takes no argument {unknown[0]!r}")
            kwargs.pop("check_files", None)
            return TFDSDataset(name, tfds_data_dir, **kwargs)
        if source != "files":
            raise ValueError(f"{name}: source must be 'files' or 'tfds', got {source!r}")
        if data_dir is None:
            raise ValueError(f"{name}: pass data_dir=<the dataset directory> (or source='tfds')")
        return files_factory(data_dir, **kwargs)

    factory.__name__ = name
    factory.__doc__ = f"{name} from its published files (data_dir=...) or a TFDS data_dir."
    # The exporter checks --dataset_arg names against this signature.
    factory.__signature__ = inspect.Signature(
        [
            inspect.Parameter("data_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
            inspect.Parameter("source", inspect.Parameter.KEYWORD_ONLY, default="files"),
            inspect.Parameter("tfds_data_dir", inspect.Parameter.KEYWORD_ONLY, default=None),
            *files_params,
        ]
    )
    return factory
