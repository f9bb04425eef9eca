"""Waterbirds (Sagawa et al., 2020; HSFM Sec. 5.1, Appendix Table 5) in its published layout.

    <root>/metadata.csv     img_filename, y, place, split (0 train, 1 val, 2 test), ...
    <root>/<img_filename>   e.g. 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg

Label y: 0 landbird, 1 waterbird. Spurious attribute place: 0 land, 1 water.
group = 2 * y + place, the convention of group_DRO / DFR.
"""

from __future__ import annotations

import os
from pathlib import Path

from feature_export.datasets.base import register
from feature_export.datasets.tables import ImageFileDataset, read_csv, split_by

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@register("waterbirds")
class Waterbirds(ImageFileDataset):
    name = "waterbirds"
    class_names = ["landbird", "waterbird"]
    group_names = ["landbird_land", "landbird_water", "waterbird_land", "waterbird_water"]
    resize_policy = "resize256_crop224"

    def __init__(self, data_dir: str | os.PathLike, *, check_files: bool = True):
        root = Path(data_dir)
        table = read_csv(
            root / "metadata.csv",
            ["img_filename", "y", "place", "split"],
            "Waterbirds metadata",
        )
        labels = table.int_column("y", (0, 1))
        places = table.int_column("place", (0, 1))
        split = table.int_column("split", SPLIT_CODES.values())
        self.image_root = root
        self._source_files = [table.path]
        self._splits = split_by(
            table.column("img_filename"),
            labels,
            2 * labels + places,
            {name: split == code for name, code in SPLIT_CODES.items()},
        )
        self._describe = {"splits_from": "metadata.csv column 'split'"}
        if check_files:
            self.check_images_exist()
