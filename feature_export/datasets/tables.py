"""Shared pieces of the real-dataset readers: checked metadata tables and image-file datasets.

Every reader turns a published metadata file into per-split (image path, label, group) lists,
and every malformed input is one error naming the file and the row (a missing column, a value
that is not an integer, a label out of range, an image that does not exist).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from feature_export.datasets.base import ExportDataset, SplitIndex, open_rgb, require_file


class Table:
    """Rows of a CSV or whitespace-separated file, with 1-based line numbers for errors."""

    def __init__(self, path: Path, header: list[str], rows: list[list[str]], lines: list[int]):
        self.path, self.header, self.rows, self.lines = path, header, rows, lines
        self._col = {name: i for i, name in enumerate(header)}

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[str]:
        return [row[self._col[name]] for row in self.rows]

    def int_column(self, name: str, allowed: Iterable[int] | None = None) -> np.ndarray:
        """The column as int64; a non-integer or a value outside `allowed` names file and line."""
        allowed = None if allowed is None else set(allowed)
        out = np.empty(len(self.rows), np.int64)
        for i, text in enumerate(self.column(name)):
            try:
                value = int(text.strip())
            except ValueError:
                raise ValueError(
                    f"{self.path}: line {self.lines[i]}: column {name!r} is not an integer: {text!r}"
                ) from None
            if allowed is not None and value not in allowed:
                raise ValueError(
                    f"{self.path}: line {self.lines[i]}: column {name!r} = {value} out of range "
                    f"(allowed {sorted(allowed)})"
                )
            out[i] = value
        return out


def read_csv(path: str | os.PathLike, required: Sequence[str], what: str = "") -> Table:
    """A CSV with a header row; FileNotFoundError / ValueError name the file, column or line."""
    path = require_file(path, what)
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a header with {list(required)}")
        header = [h.strip() for h in header]
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {header}")
        rows, lines = [], []
        for row in reader:
            if not row or not "".join(row).strip():
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"{path}: line {reader.line_num}: {len(row)} fields, header has {len(header)}"
                )
            rows.append(row)
            lines.append(reader.line_num)
    return Table(path, header, rows, lines)


def read_whitespace(
    path: str | os.PathLike,
    columns: Sequence[str],
    what: str = "",
    max_split: int | None = None,
    skip_lines: int = 0,
) -> Table:
    """A headerless whitespace-separated file (CUB's `images.txt`, ...) with named columns.

    The first `skip_lines` lines (a count and a header in CelebA's .txt files) are skipped.
    """
    path = require_file(path, what)
    rows, lines = [], []
    splits = (max_split if max_split is not None else len(columns) - 1) or -1
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if number <= skip_lines or not line.strip():
            continue
        fields = line.split(maxsplit=splits)
        if len(fields) != len(columns):
            raise ValueError(
                f"{path}: line {number}: expected {len(columns)} fields {list(columns)}, "
                f"got {len(fields)}: {line!r}"
            )
        rows.append(fields)
        lines.append(number)
    return Table(path, list(columns), rows, lines)


def seeded_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a class-stratified random `fraction` of rows (at least 1 per class)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(labels.shape[0], bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        take = max(1, round(fraction * rows.size)) if rows.size > 1 else 0
        mask[rng.permutation(rows)[:take]] = True
    return mask


class ImageFileDataset(ExportDataset):
    """A dataset whose rows are image files under `image_root`, listed per split.

    Subclasses fill `self._splits[split] = SplitIndex(ids=relative paths, labels, groups)`, set
    `image_root`, `name`, `class_names`, `group_names`, and list their metadata files in
    `self._source_files`.
    """

    image_root: Path
    _splits: dict[str, SplitIndex]
    _source_files: list[Path]
    _describe: dict

    def index(self, split: str) -> SplitIndex:
        if split not in self._splits:
            raise KeyError(f"{self.name}: no split {split!r}; has {sorted(self._splits)}")
        return self._splits[split]

    def load_image(self, split: str, i: int) -> Image.Image:
        return open_rgb(self.image_root / self.index(split).ids[i])

    def source_files(self) -> Iterable[Path]:
        return list(self._source_files)

    def describe(self) -> dict:
        return dict(getattr(self, "_describe", {}))

    def check_images_exist(self) -> None:
        """FileNotFoundError naming the first listed image that is not on disk (cheap stat)."""
        for split, idx in self._splits.items():
            for i, rel in enumerate(idx.ids):
                if not (self.image_root / rel).is_file():
                    raise FileNotFoundError(
                        f"{self.image_root / rel}: image file missing ({self.name} {split} row {i})"
                    )


def make_split(
    ids: Sequence[str], labels: Sequence[int] | np.ndarray, groups: Sequence[int] | np.ndarray
) -> SplitIndex:
    return SplitIndex(
        ids=list(ids), labels=np.asarray(labels, np.int64), groups=np.asarray(groups, np.int64)
    )


def split_by(
    ids: Sequence[str], labels: np.ndarray, groups: np.ndarray, assignment: Mapping[str, np.ndarray]
) -> dict[str, SplitIndex]:
    """`assignment[split]` is a boolean mask or an index array over the rows."""
    ids = np.asarray(ids, dtype=object)
    return {
        name: make_split(list(ids[rows]), labels[rows], groups[rows])
        for name, rows in assignment.items()
    }
