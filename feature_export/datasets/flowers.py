"""Oxford Flowers-102 (Nilsback & Zisserman, 2008; HSFM Sec. 5.2, Appendix 7.6), published layout.

    <root>/imagelabels.mat   'labels': (1, 8189) class ids in 1..102, for image_00001.jpg ...
    <root>/setid.mat         'trnid', 'valid', 'tstid': 1-based image numbers
    <root>/jpg/image_%05d.jpg

The official split is used as is: 1,020 train, 1,020 val, 6,149 test. No groups.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from feature_export.datasets.base import register, require_file
from feature_export.datasets.tables import ImageFileDataset, make_split
from feature_export.datasets.tfds import files_or_tfds

NUM_CLASSES = 102


def load_mat(path: Path, keys: list[str], what: str) -> dict[str, np.ndarray]:
    """Named arrays of a MATLAB file, flattened; a missing file or key names it."""
    from scipy.io import loadmat

    require_file(path, what)
    try:
        mat = loadmat(path)
    except (ValueError, OSError, TypeError) as e:
        raise ValueError(f"{path}: not a readable .mat file ({e})") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: missing variable(s) {missing}; has {found}")
    return {k: np.asarray(mat[k]).ravel() for k in keys}


class Flowers102(ImageFileDataset):
    name = "flowers102"
    class_names = [f"class_{c:03d}" for c in range(1, NUM_CLASSES + 1)]
    group_names: list[str] = []
    resize_policy = "resize256_crop224"

    def __init__(self, data_dir: str | os.PathLike, *, check_files: bool = True):
        root = Path(data_dir)
        labels_path, setid_path = root / "imagelabels.mat", root / "setid.mat"
        labels = load_mat(labels_path, ["labels"], "Flowers-102 labels")["labels"].astype(np.int64)
        bad = np.flatnonzero((labels < 1) | (labels > NUM_CLASSES))
        if bad.size:
            raise ValueError(
                f"{labels_path}: labels[{bad[0]}] = {labels[bad[0]]} out of range [1, {NUM_CLASSES}]"
            )
        sets = load_mat(setid_path, ["trnid", "valid", "tstid"], "Flowers-102 split")
        self._splits = {}
        for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
            numbers = sets[key].astype(np.int64)
            bad = np.flatnonzero((numbers < 1) | (numbers > labels.size))
            if bad.size:
                raise ValueError(
                    f"{setid_path}: {key}[{bad[0]}] = {numbers[bad[0]]} is not an image number "
                    f"in [1, {labels.size}]"
                )
            self._splits[split] = make_split(
                [f"jpg/image_{n:05d}.jpg" for n in numbers],
                labels[numbers - 1] - 1,
                np.full(numbers.shape, -1),
            )
        self.image_root = root
        self._source_files = [labels_path, setid_path]
        self._describe = {"val_split": "official setid.mat valid"}
        if check_files:
            self.check_images_exist()


register("flowers102")(files_or_tfds("flowers102", Flowers102))
