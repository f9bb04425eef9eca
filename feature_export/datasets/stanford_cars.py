"""Stanford Cars (Krause et al., 2013; HSFM Sec. 5.2, Appendix 7.7) in its published layouts.

The devkit layout (also torchvision's):

    <root>/devkit/cars_meta.mat                'class_names': 196 names
    <root>/devkit/cars_train_annos.mat         'annotations': struct with fields fname, class, bbox_*
    <root>/cars_test_annos_withlabels.mat      same fields for the test images (also accepted
                                               under devkit/)
    <root>/cars_train/<fname>  <root>/cars_test/<fname>

or the single-file layout: <root>/cars_annos.mat ('annotations' with relative_im_path, class,
test; 'class_names') and <root>/car_ims/.

8,144 train / 8,041 test, classes 1..196, no groups. Val is a class-stratified `val_fraction`
(default 10%) of train drawn with `numpy.random.default_rng(seed)` (stated in meta.json).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from feature_export.datasets.base import register, require_file
from feature_export.datasets.tables import ImageFileDataset, seeded_holdout, split_by
from feature_export.datasets.tfds import files_or_tfds

NUM_CLASSES = 196


def _annotations(path: Path, fields: list[str], what: str) -> tuple[dict[str, list], np.ndarray]:
    """The 'annotations' struct array of a .mat file as columns, and 'class_names' if present."""
    from scipy.io import loadmat

    require_file(path, what)
    try:
        mat = loadmat(path, squeeze_me=True)
    except (ValueError, OSError, TypeError) as e:
        raise ValueError(f"{path}: not a readable .mat file ({e})") from None
    if "annotations" not in mat:
        raise ValueError(f"{path}: no 'annotations' variable")
    annos = np.atleast_1d(mat["annotations"])
    names = annos.dtype.names or ()
    missing = [f for f in fields if f not in names]
    if missing:
        raise ValueError(f"{path}: annotations lack field(s) {missing}; have {list(names)}")
    columns = {f: [annos[f][i] for i in range(annos.shape[0])] for f in fields}
    return columns, np.atleast_1d(mat.get("class_names", np.array([])))


def _classes(path: Path, values: list, what: str) -> np.ndarray:
    out = np.empty(len(values), np.int64)
    for i, v in enumerate(values):
        try:
            out[i] = int(v)
        except (TypeError, ValueError):
            raise ValueError(
                f"{path}: {what} annotation {i}: class {v!r} is not an integer"
            ) from None
        if not 1 <= out[i] <= NUM_CLASSES:
            raise ValueError(
                f"{path}: {what} annotation {i}: class {out[i]} out of range [1, {NUM_CLASSES}]"
            )
    return out - 1


class StanfordCars(ImageFileDataset):
    name = "stanford_cars"
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
        if (root / "cars_annos.mat").is_file():
            path = root / "cars_annos.mat"
            cols, class_names = _annotations(
                path, ["relative_im_path", "class", "test"], "Stanford Cars annotations"
            )
            ids = [str(p) for p in cols["relative_im_path"]]
            labels = _classes(path, cols["class"], "")
            is_train = np.asarray([int(t) == 0 for t in cols["test"]])
            self._source_files = [path]
        else:
            train_path = root / "devkit" / "cars_train_annos.mat"
            test_path = root / "cars_test_annos_withlabels.mat"
            if not test_path.is_file() and (root / "devkit" / test_path.name).is_file():
                test_path = root / "devkit" / test_path.name
            meta_path = root / "devkit" / "cars_meta.mat"
            train, _ = _annotations(
                train_path, ["fname", "class"], "Stanford Cars train annotations"
            )
            test, _ = _annotations(test_path, ["fname", "class"], "Stanford Cars test labels")
            ids = [f"cars_train/{f}" for f in train["fname"]] + [
                f"cars_test/{f}" for f in test["fname"]
            ]
            labels = np.concatenate(
                [
                    _classes(train_path, train["class"], "train"),
                    _classes(test_path, test["class"], "test"),
                ]
            )
            is_train = np.arange(len(ids)) < len(train["fname"])
            class_names = np.array([])
            if meta_path.is_file():
                from scipy.io import loadmat

                class_names = np.atleast_1d(
                    loadmat(meta_path, squeeze_me=True).get("class_names", [])
                )
            self._source_files = [p for p in (train_path, test_path, meta_path) if p.is_file()]
        self.class_names = (
            [str(n) for n in class_names]
            if len(class_names) == NUM_CLASSES
            else [f"class_{c:03d}" for c in range(1, NUM_CLASSES + 1)]
        )
        val = np.zeros_like(is_train)
        train_rows = np.flatnonzero(is_train)
        val[train_rows[seeded_holdout(labels[train_rows], val_fraction, seed)]] = True
        self.image_root = root
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


register("stanford_cars")(files_or_tfds("stanford_cars", StanfordCars))
