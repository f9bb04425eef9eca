"""MetaShift cat vs dog (HSFM Sec. 5.1, Appendix Table 9), in the public release's folder layout.

The MetaShift release's `MetaDatasetCatDog` folders (as DaC and LISA use them):

    <root>/train/cat/cat(sofa)/*.jpg   <root>/train/cat/cat(bed)/*.jpg
    <root>/train/dog/dog(bench)/*.jpg  <root>/train/dog/dog(bike)/*.jpg
    <root>/test/cat/cat(shelf)/*.jpg   <root>/test/dog/dog(shelf)/*.jpg

Train: cats on sofas and beds, dogs on benches and bikes. Test: both animals with shelves, a
context never seen in training. Val is 15% of the shelf images (ceil(0.85 n) stay in test, as
DaC's `train_test_split(test_size=0.85)`: 81 val / 460 test on the release), drawn with
`numpy.random.default_rng(seed)` over the sorted file list, so it does not depend on directory
listing order. Groups are the six (animal, context) folders; the worst group of val/test is the
worse of cat(shelf) and dog(shelf).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from feature_export.datasets.base import register
from feature_export.datasets.tables import ImageFileDataset, make_split

TRAIN_FOLDERS = ["cat(sofa)", "cat(bed)", "dog(bench)", "dog(bike)"]
TEST_FOLDERS = ["cat(shelf)", "dog(shelf)"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
VAL_FRACTION = 0.15


def _list_folder(root: Path, split: str, folder: str) -> list[str]:
    animal = folder.split("(")[0]
    path = root / split / animal / folder
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: missing MetaShift folder (expected the release layout)")
    files = sorted(
        p.relative_to(root).as_posix()
        for p in path.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise ValueError(f"{path}: no images (.jpg/.jpeg/.png)")
    return files


@register("metashift")
class MetaShift(ImageFileDataset):
    name = "metashift"
    class_names = ["cat", "dog"]
    group_names = [f.replace("(", "_").rstrip(")") for f in TRAIN_FOLDERS + TEST_FOLDERS]
    resize_policy = "resize256_crop224"

    def __init__(self, data_dir: str | os.PathLike, *, seed: int = 0):
        root = Path(data_dir)
        self.image_root = root
        self._source_files = []

        def collect(split: str, folders: list[str], first_group: int):
            ids, labels, groups = [], [], []
            for offset, folder in enumerate(folders):
                files = _list_folder(root, split, folder)
                ids += files
                labels += [self.class_names.index(folder.split("(")[0])] * len(files)
                groups += [first_group + offset] * len(files)
            return np.asarray(ids, dtype=object), np.asarray(labels), np.asarray(groups)

        train = collect("train", TRAIN_FOLDERS, 0)
        shelf_ids, shelf_labels, shelf_groups = collect("test", TEST_FOLDERS, len(TRAIN_FOLDERS))
        n = len(shelf_ids)
        n_val = n - math.ceil((1 - VAL_FRACTION) * n)
        order = np.random.default_rng(seed).permutation(n)
        val_rows, test_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
        self._splits = {
            "train": make_split(list(train[0]), train[1], train[2]),
            "val": make_split(
                list(shelf_ids[val_rows]), shelf_labels[val_rows], shelf_groups[val_rows]
            ),
            "test": make_split(
                list(shelf_ids[test_rows]), shelf_labels[test_rows], shelf_groups[test_rows]
            ),
        }
        self._describe = {
            "val_split": f"{n_val} of {n} shelf images (15%, n - ceil(0.85 n)) drawn with "
            f"numpy default_rng({seed}).permutation over the sorted file list; the rest is test",
            "split_seed": int(seed),
        }
