"""Hard-Spurious-ImageNet (Fatima et al., "Corner Cases"): 12 size x placement x background groups.

Reads a directory written by ``python -m feature_export.hsi.build`` (through its
``manifest.csv``) or the authors' released copy (``<split>/<size>/Group_<k>/<wnid>/*.JPEG``,
indexed by scanning when there is no manifest). Groups are ``4 * size_index + placement_index``
(see `feature_export.hsi`): group 0 = CeO_56 ... group 11 = CoR_112. ``describe()`` adds
``group_categories`` ({"Easy"|"Medium"|"Hard": [group ids]}) for the per-category table of the
paper's Tables 7 and 10.

Splits: train, val, test, plus every extra test variant in the manifest (e.g. ``test_ar``, the
random-corner aspect-preserving test set of Table 1). ``test_split="test_ar"`` serves that
variant as "test" instead.

The images are already 224x224 with objects flush with the border, so the resize policy is
"resize224": a 256-resize-224-crop would cut 16 px off every side, a third of a 56-px corner
object.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from feature_export.datasets.base import ExportDataset, SplitIndex, open_rgb, register
from feature_export.hsi import GROUP_CATEGORIES, GROUP_NAMES, OBJECT_SIZES, PLACEMENTS
from feature_export.hsi.manifest import (
    CONFIG_FILE,
    MANIFEST_FILE,
    read_config,
    read_manifest,
    scan_released,
)

BASE_SPLITS = ("train", "val", "test")


@register("hard_spurious_imagenet")
class HardSpuriousImageNet(ExportDataset):
    """A built or released Hard-Spurious-ImageNet directory."""

    name = "hard_spurious_imagenet"
    resize_policy = "resize224"

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        test_split: str = "test",
        extra_splits: bool = True,
    ):
        self.root = Path(data_dir)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: Hard-Spurious-ImageNet directory missing")
        self.config = read_config(self.root)
        manifest = self.root / MANIFEST_FILE
        if manifest.is_file():
            self.layout = "built"
            rows = read_manifest(manifest)
        else:
            self.layout = "released (scanned)"
            rows = scan_released(self.root)
        self._rows: dict[str, list[dict[str, str]]] = {}
        for row in rows:
            self._rows.setdefault(row["split"], []).append(row)
        if test_split not in self._rows:
            raise ValueError(f"{self.root}: no split {test_split!r}; has {sorted(self._rows)}")
        self.test_split = test_split
        for split in ("train", "val"):
            if split not in self._rows:
                raise ValueError(f"{self.root}: no {split!r} rows; has {sorted(self._rows)}")
        extras = sorted(s for s in self._rows if s not in BASE_SPLITS and s != test_split)
        self.splits = BASE_SPLITS + (tuple(extras) if extra_splits else ())

        self.wnids, self.class_names = self._classes(rows)
        self.group_names = list(GROUP_NAMES)

    def _classes(self, rows: list[dict[str, str]]) -> tuple[list[str], list[str]]:
        if self.config is not None and "classes" in self.config:
            return list(self.config["classes"]), list(self.config["class_names"])
        by_label: dict[int, tuple[str, str]] = {}
        for row in rows:
            by_label.setdefault(int(row["label"]), (row["wnid"], row["class_name"]))
        if sorted(by_label) != list(range(len(by_label))):
            raise ValueError(f"{self.root / MANIFEST_FILE}: labels are not 0..C-1")
        return [by_label[i][0] for i in range(len(by_label))], [
            by_label[i][1] for i in range(len(by_label))
        ]

    def _split_rows(self, split: str) -> list[dict[str, str]]:
        if split not in self.splits:
            raise ValueError(f"{self.root}: unknown split {split!r}; have {self.splits}")
        return self._rows[self.test_split if split == "test" else split]

    def index(self, split: str) -> SplitIndex:
        rows = self._split_rows(split)
        labels = np.array([int(r["label"]) for r in rows], np.int64)
        groups = np.array([int(r["group"]) for r in rows], np.int64)
        num_classes = len(self.class_names)
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{self.root}: {split} labels outside [0, {num_classes})")
        return SplitIndex(ids=[r["path"] for r in rows], labels=labels, groups=groups)

    def rows(self, split: str) -> list[dict[str, str]]:
        """The manifest rows of a split (size, placement, position, background class, ...)."""
        return [dict(r) for r in self._split_rows(split)]

    def load_image(self, split: str, i: int) -> Image.Image:
        return open_rgb(self.root / self._split_rows(split)[i]["path"])

    def source_files(self):
        return [p for p in (self.root / MANIFEST_FILE, self.root / CONFIG_FILE) if p.is_file()]

    def describe(self) -> dict:
        extra = {
            "group_categories": {k: list(v) for k, v in GROUP_CATEGORIES.items()},
            "object_sizes": list(OBJECT_SIZES),
            "placements": list(PLACEMENTS),
            "wnids": list(self.wnids),
            "layout": self.layout,
            "test_split": self.test_split,
        }
        if self.config is not None:
            extra["background_classes"] = self.config.get("background_classes", {})
            extra["imagenet_indices"] = self.config.get("imagenet_indices", [])
            extra["build_config"] = self.config.get("config", {})
        return extra
