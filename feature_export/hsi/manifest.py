"""The manifest of a Hard-Spurious-ImageNet directory: one CSV row per image.

A directory written by `feature_export.hsi.build` holds ``manifest.csv`` (columns `COLUMNS`) and
``build_config.json``. The authors' released copy has neither; `scan_released` indexes it from
its layout ``<split>/<size>/Group_<k>/<wnid>/<stem>_<k>_<size>.JPEG`` (k = 1..4 for CeO, CoO,
CeR, CoR), the layout the builder writes too.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from feature_export.hsi import OBJECT_SIZES, PLACEMENTS, category, group_id
from hsfm_jax.runtime.atomic import atomic_write

MANIFEST_FILE = "manifest.csv"
CONFIG_FILE = "build_config.json"
COLUMNS = (
    "path",  # relative to the dataset root
    "split",  # train / val / test / test_<variant>
    "label",  # index into the class list (classes sorted by wnid)
    "wnid",
    "class_name",
    "size",  # 56 / 84 / 112: the object's side (the shorter side for aspect-preserving resizes)
    "placement",  # CeO / CoO / CeR / CoR
    "position",  # center / top_right / top_left / bottom_left / bottom_right
    "resize",  # square / aspect
    "background_class",  # wnid of the background image ("" when unknown)
    "group",  # 4 * size_index + placement_index
    "group_name",  # e.g. CoR_56
    "category",  # Easy / Medium / Hard
    "object_source",  # <imagenet split>/<image id> of the pasted object
    "background_source",  # <imagenet split>/<image id> of the inpainted background
)
_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def write_manifest(rows: Iterable[Mapping], path: str | os.PathLike) -> None:
    """Writes the manifest atomically (a temp file renamed into place)."""
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def read_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a manifest; ValueError naming the file if a column is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        return list(reader)


def read_config(root: str | os.PathLike) -> dict | None:
    path = Path(root) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


_GROUP_DIR = re.compile(r"^Group_([1-4])$")


def scan_released(root: str | os.PathLike) -> list[dict[str, str]]:
    """Manifest rows for a directory in the released layout (no manifest.csv).

    Labels index the sorted wnids found; background class and exact corner are unknown there
    ("" and "corner").
    """
    root = Path(root)
    found = []  # (split, size, k, wnid, relative path)
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for size_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if not size_dir.name.isdigit() or int(size_dir.name) not in OBJECT_SIZES:
                continue
            for group_dir in sorted(p for p in size_dir.iterdir() if p.is_dir()):
                match = _GROUP_DIR.match(group_dir.name)
                if not match:
                    continue
                for class_dir in sorted(p for p in group_dir.iterdir() if p.is_dir()):
                    for image in sorted(class_dir.iterdir()):
                        if image.suffix.lower() in _IMAGE_SUFFIXES and image.name[0] != ".":
                            found.append(
                                (
                                    split_dir.name,
                                    int(size_dir.name),
                                    int(match.group(1)),
                                    class_dir.name,
                                    image.relative_to(root).as_posix(),
                                )
                            )
    if not found:
        raise FileNotFoundError(
            f"{root}: no {MANIFEST_FILE} and no images in the released layout "
            "<split>/<size>/Group_<k>/<wnid>/*.JPEG"
        )
    wnids = sorted({f[3] for f in found})
    label = {w: i for i, w in enumerate(wnids)}
    rows = []
    for split, size, k, wnid, rel in found:
        placement = PLACEMENTS[k - 1]
        stem = Path(rel).stem
        suffix = f"_{k}_{size}"
        source = stem[: -len(suffix)] if stem.endswith(suffix) else stem
        rows.append(
            {
                "path": rel,
                "split": split,
                "label": str(label[wnid]),
                "wnid": wnid,
                "class_name": wnid,
                "size": str(size),
                "placement": placement,
                "position": "center" if placement.startswith("Ce") else "corner",
                "resize": "",
                "background_class": wnid if placement.endswith("O") else "",
                "group": str(group_id(size, placement)),
                "group_name": f"{placement}_{size}",
                "category": category(size, placement),
                "object_source": source,
                "background_source": source if placement.endswith("O") else "",
            }
        )
    return rows
