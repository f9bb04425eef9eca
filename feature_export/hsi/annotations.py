"""Reads ImageNet's (ILSVRC CLS-LOC) bounding-box annotations from a local copy.

Accepted layout (the Kaggle / ILSVRC 2012 localisation release); ``root`` may be the directory
holding ``ILSVRC/`` or ``ILSVRC/`` itself::

    LOC_synset_mapping.txt                      optional: "n01440764 tench, Tinca tinca" per line
    LOC_val_solution.csv                        optional if the val XMLs exist
    ILSVRC/Annotations/CLS-LOC/train/<wnid>/<wnid>_<n>.xml
    ILSVRC/Annotations/CLS-LOC/val/ILSVRC2012_val_<n>.xml
    ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG
    ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_<n>.JPEG   (or val/<wnid>/..., as re-sorted copies have)

The XMLs are Pascal-VOC style: ``<size><width/><height/></size>`` and one ``<object>`` per box
with ``<name>`` (the wnid) and ``<bndbox><xmin/><ymin/><xmax/><ymax/></bndbox>`` in pixels.
``LOC_val_solution.csv`` has rows ``ImageId,PredictionString`` where the string repeats
``wnid xmin ymin xmax ymax``; it carries no image size, which is then read from the JPEG header.

Boxes are treated as continuous rectangles: width ``xmax - xmin``, centre ``(xmin + xmax) / 2``
(the +1 of an inclusive-pixel reading changes a normalised coordinate by under 1/W).
Only annotated images are listed: in ImageNet train about half of the images have boxes.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from PIL import Image

IMAGENET_SPLITS = ("train", "val")
_IMAGE_SUFFIXES = (".JPEG", ".jpeg", ".jpg", ".JPG", ".png", ".PNG")


@dataclasses.dataclass(frozen=True)
class Box:
    """One object box in pixel coordinates of the annotated image size."""

    wnid: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @property
    def width(self) -> float:
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        return self.ymax - self.ymin

    @property
    def area(self) -> float:
        return self.width * self.height

    def scaled(self, sx: float, sy: float) -> Box:
        return Box(self.wnid, self.xmin * sx, self.ymin * sy, self.xmax * sx, self.ymax * sy)


@dataclasses.dataclass(frozen=True)
class Annotation:
    """An annotated image.

    Attributes:
      image_id: the file stem, e.g. ``n01440764_10026`` or ``ILSVRC2012_val_00000001``.
      wnid: the image's class.
      width, height: the image size the boxes refer to.
      boxes: the boxes of objects of class ``wnid`` (the core objects), non-degenerate, clipped.
      all_boxes: every box in the annotation (what the builder removes from backgrounds).
      image_path: the image file.
    """

    image_id: str
    wnid: str
    width: int
    height: int
    boxes: tuple[Box, ...]
    all_boxes: tuple[Box, ...]
    image_path: Path

    @property
    def largest_box(self) -> Box:
        return max(self.boxes, key=lambda b: b.area)


def _clip(box: Box, width: int, height: int) -> Box | None:
    clipped = Box(
        box.wnid,
        min(max(box.xmin, 0.0), width),
        min(max(box.ymin, 0.0), height),
        min(max(box.xmax, 0.0), width),
        min(max(box.ymax, 0.0), height),
    )
    return clipped if clipped.width > 0 and clipped.height > 0 else None


def _make_annotation(
    image_id: str, wnid: str, width: int, height: int, boxes: list[Box], image_path: Path
) -> Annotation | None:
    """Clips the boxes; None when the image has no usable box of its own class."""
    if width <= 0 or height <= 0:
        return None
    all_boxes = tuple(b for b in (_clip(b, width, height) for b in boxes) if b is not None)
    own = tuple(b for b in all_boxes if b.wnid == wnid)
    if not own:
        return None
    return Annotation(image_id, wnid, int(width), int(height), own, all_boxes, image_path)


def parse_xml(path: str | os.PathLike) -> tuple[int, int, list[Box]]:
    """(width, height, boxes) of one VOC-style annotation file; ValueError naming it if broken."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        width = int(float(size.findtext("width")))
        height = int(float(size.findtext("height")))
        boxes = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            boxes.append(
                Box(
                    obj.findtext("name").strip(),
                    float(bb.findtext("xmin")),
                    float(bb.findtext("ymin")),
                    float(bb.findtext("xmax")),
                    float(bb.findtext("ymax")),
                )
            )
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a readable VOC box annotation ({e})") from None
    return width, height, boxes


def _find_image(directory: Path, stem: str) -> Path:
    for suffix in _IMAGE_SUFFIXES:
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return directory / f"{stem}.JPEG"  # reported as missing when it is opened


class ImageNetLayout:
    """Annotated ImageNet images of a local ILSVRC copy, per split and class (cached)."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        for candidate in (root, root / "ILSVRC"):
            if (candidate / "Annotations" / "CLS-LOC").is_dir():
                self.ilsvrc_dir = candidate
                break
        else:
            raise FileNotFoundError(
                f"{root}: no Annotations/CLS-LOC here or under ILSVRC/ (expected the ILSVRC "
                "CLS-LOC layout with box XMLs)"
            )
        self.root = root
        self._extra_dirs = [root, self.ilsvrc_dir, self.ilsvrc_dir.parent]
        self._cache: dict[str, dict[str, list[Annotation]]] = {}

    # ---------------------------------------------------------------- class names

    @functools.cached_property
    def synsets(self) -> list[str]:
        """The 1000 wnids in LOC_synset_mapping.txt order ([] when the file is absent)."""
        return list(self._synset_names)

    @functools.cached_property
    def _synset_names(self) -> dict[str, str]:
        for directory in self._extra_dirs:
            path = directory / "LOC_synset_mapping.txt"
            if path.is_file():
                names = {}
                for line in path.read_text().splitlines():
                    if line.strip():
                        wnid, _, rest = line.strip().partition(" ")
                        names[wnid] = rest.split(",")[0].strip() or wnid
                return names
        return {}

    def class_name(self, wnid: str) -> str:
        """The first synonym from LOC_synset_mapping.txt, or the wnid itself."""
        return self._synset_names.get(wnid, wnid)

    # ---------------------------------------------------------------- annotations

    def wnids(self, split: str) -> list[str]:
        """Sorted wnids that have at least one annotated image in `split`."""
        return sorted(self._annotations(split))

    def annotations(self, split: str, wnid: str) -> list[Annotation]:
        """Annotated images of class `wnid` in `split`, sorted by image id ([] if none)."""
        return self._annotations(split).get(wnid, [])

    def _annotations(self, split: str) -> dict[str, list[Annotation]]:
        if split not in IMAGENET_SPLITS:
            raise ValueError(f"ImageNet split must be one of {IMAGENET_SPLITS}, got {split!r}")
        if split not in self._cache:
            self._cache[split] = self._read_train() if split == "train" else self._read_val()
        return self._cache[split]

    def _read_train(self) -> dict[str, list[Annotation]]:
        ann_dir = self.ilsvrc_dir / "Annotations" / "CLS-LOC" / "train"
        data_dir = self.ilsvrc_dir / "Data" / "CLS-LOC" / "train"
        if not ann_dir.is_dir():
            raise FileNotFoundError(f"{ann_dir}: missing (ImageNet train box annotations)")
        out: dict[str, list[Annotation]] = {}
        for class_dir in sorted(p for p in ann_dir.iterdir() if p.is_dir()):
            wnid = class_dir.name
            anns = []
            for xml in sorted(class_dir.glob("*.xml")):
                width, height, boxes = parse_xml(xml)
                ann = _make_annotation(
                    xml.stem, wnid, width, height, boxes, _find_image(data_dir / wnid, xml.stem)
                )
                if ann is not None:
                    anns.append(ann)
            if anns:
                out[wnid] = anns
        return out

    def _val_image_path(self, data_dir: Path, wnid: str, stem: str) -> Path:
        flat = _find_image(data_dir, stem)
        return flat if flat.is_file() else _find_image(data_dir / wnid, stem)

    def _read_val(self) -> dict[str, list[Annotation]]:
        ann_dir = self.ilsvrc_dir / "Annotations" / "CLS-LOC" / "val"
        data_dir = self.ilsvrc_dir / "Data" / "CLS-LOC" / "val"
        records: list[tuple[str, int, int, list[Box]]] = []  # (stem, W, H, boxes)
        xmls = sorted(ann_dir.glob("*.xml")) if ann_dir.is_dir() else []
        if xmls:
            for xml in xmls:
                width, height, boxes = parse_xml(xml)
                records.append((xml.stem, width, height, boxes))
        else:
            csv_path = next(
                (
                    d / "LOC_val_solution.csv"
                    for d in self._extra_dirs
                    if (d / "LOC_val_solution.csv").is_file()
                ),
                None,
            )
            if csv_path is None:
                raise FileNotFoundError(
                    f"{ann_dir}: no val XMLs, and no LOC_val_solution.csv beside {self.ilsvrc_dir}"
                )
            for stem, boxes in _read_val_solution(csv_path):
                path = self._val_image_path(data_dir, boxes[0].wnid if boxes else "", stem)
                width, height = _image_size(path)
                records.append((stem, width, height, boxes))
        out: dict[str, list[Annotation]] = defaultdict(list)
        for stem, width, height, boxes in records:
            if not boxes:
                continue
            # CLS-LOC val images hold boxes of one class; the first box names it.
            wnid = boxes[0].wnid
            path = self._val_image_path(data_dir, wnid, stem)
            ann = _make_annotation(stem, wnid, width, height, boxes, path)
            if ann is not None:
                out[wnid].append(ann)
        return {w: sorted(a, key=lambda x: x.image_id) for w, a in sorted(out.items())}


def _read_val_solution(path: Path) -> list[tuple[str, list[Box]]]:
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise ValueError(f"{path}: expected header 'ImageId,PredictionString', got {header}")
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            fields = row[1].split()
            if len(fields) % 5:
                raise ValueError(f"{path}:{line_no}: PredictionString is not 5-tuples: {row[1]!r}")
            boxes = [
                Box(fields[i], *(float(v) for v in fields[i + 1 : i + 5]))
                for i in range(0, len(fields), 5)
            ]
            rows.append((row[0].strip(), boxes))
    return rows


def _image_size(path: Path) -> tuple[int, int]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file missing (needed for its size)")
    with Image.open(path) as img:  # reads the header only
        return img.size
