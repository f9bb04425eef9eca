"""CelebA, Blond_Hair vs Male (HSFM Sec. 5.1, Appendix Tables 6-7), and the CelebA* subsample.

Published layouts read (first found wins, per file):

    <root>/img_align_celeba/000001.jpg ...   (Kaggle's nested img_align_celeba/img_align_celeba/
                                              is accepted too)
    <root>/celeba_split.csv       image_id, Male, Blond_Hair, split   (0/1 attributes; the split
                                  file of DaC, which HSFM follows for CelebA: Appendix Table 6)
    <root>/list_attr_celeba.csv   image_id + 40 attributes in {-1, 1}   (Kaggle CSV layout)
    <root>/list_eval_partition.csv image_id, partition (0 train, 1 val, 2 test)
    (or the original list_attr_celeba.txt / list_eval_partition.txt)

`split_source`: "dac" uses celeba_split.csv, "official" the attribute + partition files, "auto"
(default) the former when present. Label y = Blond_Hair, spurious attribute = Male,
group = 2 * y + male. Preprocessing hint "resize224" (the whole 178x218 face resized to 224x224).

`celeba_star` is CelebA* of Appendix Table 7: train 5000 (blond, female), 5000 (non-blond, male),
100 (blond, male), 100 (non-blond, female); val and test 100 per group; drawn without replacement
from the corresponding split with `numpy.random.default_rng(seed)` (recorded in meta.json).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from feature_export.datasets.base import register, require_file
from feature_export.datasets.tables import (
    ImageFileDataset,
    Table,
    make_split,
    read_csv,
    read_whitespace,
)
from feature_export.datasets.tfds import files_or_tfds

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
GROUP_NAMES = ["nonblond_female", "nonblond_male", "blond_female", "blond_male"]
# CelebA* (Appendix Table 7): examples per group [nonblond_female, nonblond_male, blond_female,
# blond_male] in each split.
CELEBA_STAR_COUNTS = {
    "train": (100, 5000, 5000, 100),
    "val": (100, 100, 100, 100),
    "test": (100, 100, 100, 100),
}


def _image_dir(root: Path) -> Path:
    nested = root / "img_align_celeba" / "img_align_celeba"
    return nested if nested.is_dir() else root / "img_align_celeba"


def _read_attr_txt(path: Path) -> Table:
    """The original list_attr_celeba.txt: a count line, 40 names, then `file v1 ... v40`."""
    lines = require_file(path, "CelebA attributes").read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and a header line")
    return read_whitespace(path, ["image_id", *lines[1].split()], "CelebA attributes", skip_lines=2)


def read_celeba(root: str | os.PathLike, split_source: str = "auto"):
    """-> (table path list, image ids, y, male, split code), all checked (see module docstring)."""
    root = Path(root)
    dac = root / "celeba_split.csv"
    if split_source == "auto":
        split_source = "dac" if dac.is_file() else "official"
    if split_source == "dac":
        table = read_csv(dac, ["image_id", "Male", "Blond_Hair", "split"], "DaC CelebA split")
        y = table.int_column("Blond_Hair", (0, 1))
        male = table.int_column("Male", (0, 1))
        split = table.int_column("split", SPLIT_CODES.values())
        return [table.path], table.column("image_id"), y, male, split, "dac"
    if split_source != "official":
        raise ValueError(
            f"celeba: split_source must be auto, dac or official, got {split_source!r}"
        )

    if (root / "list_attr_celeba.csv").is_file() or not (root / "list_attr_celeba.txt").is_file():
        attrs = read_csv(
            root / "list_attr_celeba.csv", ["image_id", "Blond_Hair", "Male"], "CelebA attributes"
        )
    else:
        attrs = _read_attr_txt(root / "list_attr_celeba.txt")
        for column in ("Blond_Hair", "Male"):
            if column not in attrs.header:
                raise ValueError(f"{attrs.path}: missing attribute {column!r}")
    if (root / "list_eval_partition.csv").is_file() or not (
        root / "list_eval_partition.txt"
    ).is_file():
        partition = read_csv(
            root / "list_eval_partition.csv", ["image_id", "partition"], "CelebA partition"
        )
    else:
        partition = read_whitespace(
            root / "list_eval_partition.txt", ["image_id", "partition"], "CelebA partition"
        )
    y = (attrs.int_column("Blond_Hair", (-1, 1)) > 0).astype(np.int64)
    male = (attrs.int_column("Male", (-1, 1)) > 0).astype(np.int64)
    ids = attrs.column("image_id")
    split_of = dict(
        zip(
            partition.column("image_id"),
            partition.int_column("partition", SPLIT_CODES.values()),
            strict=True,
        )
    )
    split = np.empty(len(ids), np.int64)
    for i, image_id in enumerate(ids):
        if image_id not in split_of:
            raise ValueError(
                f"{partition.path}: no partition for {image_id!r} "
                f"({attrs.path} line {attrs.lines[i]})"
            )
        split[i] = split_of[image_id]
    return [attrs.path, partition.path], ids, y, male, split, "official"


class CelebA(ImageFileDataset):
    name = "celeba"
    class_names = ["not_blond", "blond"]
    group_names = list(GROUP_NAMES)
    resize_policy = "resize224"

    def __init__(
        self, data_dir: str | os.PathLike, *, split_source: str = "auto", check_files: bool = True
    ):
        files, ids, y, male, split, source = read_celeba(data_dir, split_source)
        self.image_root = _image_dir(Path(data_dir))
        self._source_files = files
        groups = 2 * y + male
        ids = np.asarray(ids, dtype=object)
        self._splits = {
            name: make_split(list(ids[split == code]), y[split == code], groups[split == code])
            for name, code in SPLIT_CODES.items()
        }
        self._describe = {"split_source": source}
        if check_files:
            self.check_images_exist()


@register("celeba_star")
class CelebAStar(ImageFileDataset):
    name = "celeba_star"
    class_names = ["not_blond", "blond"]
    group_names = list(GROUP_NAMES)
    resize_policy = "resize224"

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        seed: int = 0,
        split_source: str = "auto",
        check_files: bool = True,
    ):
        files, ids, y, male, split, source = read_celeba(data_dir, split_source)
        self.image_root = _image_dir(Path(data_dir))
        self._source_files = files
        groups = 2 * y + male
        ids = np.asarray(ids, dtype=object)
        rng = np.random.default_rng(seed)
        self._splits = {}
        for name, code in SPLIT_CODES.items():
            chosen = []
            for g, count in enumerate(CELEBA_STAR_COUNTS[name]):
                rows = np.flatnonzero((split == code) & (groups == g))
                if rows.size < count:
                    raise ValueError(
                        f"celeba_star: {name} group {GROUP_NAMES[g]} has {rows.size} images in "
                        f"{files[0]}, CelebA* needs {count}"
                    )
                chosen.append(rng.choice(rows, size=count, replace=False))
            rows = np.sort(np.concatenate(chosen))
            self._splits[name] = make_split(list(ids[rows]), y[rows], groups[rows])
        self._describe = {
            "split_source": source,
            "celeba_star": {
                "seed": int(seed),
                "group_counts": {k: list(v) for k, v in CELEBA_STAR_COUNTS.items()},
                "sampling": "numpy default_rng(seed).choice without replacement, per split "
                "then per group in group order",
            },
        }
        if check_files:
            self.check_images_exist()


register("celeba")(files_or_tfds("celeba", CelebA))
