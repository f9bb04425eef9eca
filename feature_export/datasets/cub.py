"""CUB-200-2011 (Wah et al., 2011; HSFM Sec. 5.2, Appendix 7.5) in its published layout.

    <root>/images.txt               <image_id> <relative path under images/>
    <root>/image_class_labels.txt   <image_id> <class_id in 1..200>
    <root>/train_test_split.txt     <image_id> <1 train, 0 test>
    <root>/classes.txt              <class_id> <name>   (optional: class names)
    <root>/images/<path>

5,994 train / 5,794 test. No groups (num_groups 0). The release has no validation split: val is
a class-stratified `val_fraction` (default 10%) of train drawn with `numpy.random.default_rng(seed)`,
stated in meta.json; train keeps the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from feature_export.datasets.base import register
from feature_export.datasets.tables import (
    ImageFileDataset,
    read_whitespace,
    seeded_holdout,
    split_by,
)
from feature_export.datasets.tfds import files_or_tfds

NUM_CLASSES = 200


class CUB(ImageFileDataset):
    name = "cub"
    group_names: list[str] = []
    resize_policy = "resize256_crop224"

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        seed: int = 0,
        val_fraction: float = 0.1,
        check_files: bool = True,
    ):
        root = Path(data_dir)
        images = read_whitespace(root / "images.txt", ["image_id", "path"], "CUB image list")
        labels_t = read_whitespace(
            root / "image_class_labels.txt", ["image_id", "class_id"], "CUB labels"
        )
        split_t = read_whitespace(
            root / "train_test_split.txt", ["image_id", "is_train"], "CUB split"
        )
        label_of = dict(
            zip(
                labels_t.column("image_id"),
                labels_t.int_column("class_id", range(1, NUM_CLASSES + 1)),
                strict=True,
            )
        )
        train_of = dict(
            zip(split_t.column("image_id"), split_t.int_column("is_train", (0, 1)), strict=True)
        )
        ids, labels, is_train = [], [], []
        for i, (image_id, path) in enumerate(images.rows):
            for table, lookup in ((labels_t, label_of), (split_t, train_of)):
                if image_id not in lookup:
                    raise ValueError(
                        f"{table.path}: no entry for image_id {image_id} "
                        f"({images.path} line {images.lines[i]})"
                    )
            ids.append(f"images/{path}")
            labels.append(label_of[image_id] - 1)
            is_train.append(train_of[image_id])
        labels, is_train = np.asarray(labels), np.asarray(is_train, bool)
        self.class_names = _class_names(root / "classes.txt")
        val = np.zeros_like(is_train)
        train_rows = np.flatnonzero(is_train)
        val[train_rows[seeded_holdout(labels[train_rows], val_fraction, seed)]] = True
        self.image_root = root
        self._source_files = [images.path, labels_t.path, split_t.path]
        self._splits = split_by(
            ids,
            labels,
            np.full(labels.shape, -1),
            {"train": is_train & ~val, "val": val, "test": ~is_train},
        )
        self._describe = {
            "val_split": f"class-stratified {val_fraction:.0%} of the official train split, "
            f"numpy default_rng({seed}); the official test split is test",
            "split_seed": int(seed),
            "val_fraction": float(val_fraction),
        }
        if check_files:
            self.check_images_exist()


def _class_names(path: Path) -> list[str]:
    if not path.is_file():
        return [f"class_{c:03d}" for c in range(1, NUM_CLASSES + 1)]
    table = read_whitespace(path, ["class_id", "name"], "CUB class names")
    ids = table.int_column("class_id", range(1, NUM_CLASSES + 1))
    names = dict(zip(ids.tolist(), table.column("name"), strict=True))
    return [names.get(c, f"class_{c:03d}") for c in range(1, NUM_CLASSES + 1)]


register("cub")(files_or_tfds("cub", CUB))
