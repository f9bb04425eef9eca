r"""Images behind feature rows, for the analysis views: the files named in ids.txt, the
rebuilt digit_dominoes images, or the exported dataset's own arrays (meta.json `source`, e.g.
the Dominoes layout's X_*.npy); captioned grids and the support / nearest-neighbour contact
sheet.

  python -m feature_export.images --features_dir=DIR --val_fraction=F --val_seed=S \
      --table=neighbours.json --out=contact_sheet.png [--images_root=ROOT]

(`experiments.analyze` runs this as a subprocess; exit code 2 means no images could be found.)
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from hsfm_jax.data import features as features_lib
from hsfm_jax.reporting import analysis


def image_paths(split: features_lib.Split, rows, root: Path | None) -> list[Path] | None:
    """Paths of the images of `rows` when ids.txt holds paths that exist, else None."""
    if split.ids is None:
        return None
    paths = []
    for r in rows:
        p = Path(split.ids[int(r)])
        if not p.is_absolute() and root is not None:
            p = root / p
        if not p.is_file():
            return None
        paths.append(p)
    return paths


@functools.lru_cache(maxsize=2)
def _digit_dominoes(config_json: str):
    from feature_export.datasets.digit_dominoes import DigitDominoes

    config = json.loads(config_json)
    return DigitDominoes(**{k: v for k, v in config.items() if k != "image_shape"})


def _rebuilt_images(data: features_lib.FeatureSet, split: str, rows) -> list | None:
    """digit_dominoes needs no files: rebuild the split from the config meta.json records.

    Rows are matched by id (ids.txt), and used only when the rebuilt labels and groups of those
    rows equal the feature directory's, so the images are the ones the features came from.
    """
    config = data.meta.get("digit_dominoes")
    stored = data[split]
    if data.meta.get("dataset") != "digit_dominoes" or not isinstance(config, dict):
        return None
    if stored.ids is None:
        return None
    try:
        arrays = _digit_dominoes(json.dumps(config, sort_keys=True)).split_arrays(split)
    except (TypeError, ValueError):
        return None
    where = {name: i for i, name in enumerate(arrays.ids)}
    images = []
    for r in rows:
        i = where.get(stored.ids[int(r)])
        if i is None or (arrays.labels[i], arrays.groups[i]) != (
            stored.labels[r],
            stored.groups[r],
        ):
            return None
        images.append(Image.fromarray(arrays.images[i]).convert("RGB"))
    return images


@functools.lru_cache(maxsize=2)
def _source_dataset(name: str, data_dir: str):
    from feature_export import datasets

    dataset = datasets.get(name, data_dir=data_dir)
    where = {}
    for split in ("train", "val", "test"):
        index = dataset.index(split)
        for i, id_ in enumerate(index.ids):
            where[id_] = (split, i, int(index.labels[i]), int(index.groups[i]))
    return dataset, where


def _source_images(data: features_lib.FeatureSet, split: str, rows, root: Path | None):
    """Images held in the exported dataset's own arrays (e.g. the Dominoes layout's X_*.npy),
    read through the exporter's dataset class from meta.json's `source` directory.

    Rows are matched by id, and used only when the dataset's label and group of each row equal
    the feature directory's, so the images are the ones the features came from.
    """
    name, source, stored = data.meta.get("dataset"), data.meta.get("source"), data[split]
    if not isinstance(name, str) or not isinstance(source, str) or stored.ids is None:
        return None
    directory = Path(source)
    if not directory.is_dir() and root is not None:
        directory = root / source
    if not directory.is_dir():
        return None
    try:
        dataset, where = _source_dataset(name, str(directory))
    except (TypeError, ValueError, OSError):
        return None
    images = []
    for r in rows:
        found = where.get(stored.ids[int(r)])
        if found is None or found[2:] != (int(stored.labels[r]), int(stored.groups[r])):
            return None
        images.append(dataset.load_image(found[0], found[1]).convert("RGB"))
    return images


def load_images(data: features_lib.FeatureSet, split: str, rows, root: Path | None):
    """PIL images of `rows` of a split: from ids.txt paths that exist, rebuilt for
    digit_dominoes, or read from the exported dataset's arrays (meta.json `source`); None
    when none of these is possible."""
    paths = image_paths(data[split], rows, root)
    if paths is None:
        images = _rebuilt_images(data, split, rows)
        return images if images is not None else _source_images(data, split, rows, root)
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(im.convert("RGB"))
    return out


def _font(size: int):
    """Pillow's default font at `size` px (Pillow >= 10.1 draws it with FreeType), else its
    fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def image_grid(
    rows: list[list[tuple]],
    *,
    cell: int = 64,
    header: list[str] | None = None,
    title: str = "",
    sections: list[tuple[str, int]] | None = None,
    footer: list[str] | None = None,
) -> Image.Image:
    """A grid of captioned images: rows of (PIL image or None, caption) cells -> one PIL image.

    Images are scaled to fit `cell` x `cell` (nearest neighbour, so small digits stay crisp),
    each below its caption (up to two lines) with a gap between columns; None cells read "n/a".
    `title` heads the sheet, `sections` [(name, columns)] label runs of columns (a rule between
    them), `header` names single columns, and `footer` lines explain the captions.
    """
    font, title_font = _font(11), _font(14)
    line_h, gap = 13, 8
    caption_h = 2 * line_h + 4
    title_h = 2 * line_h if title else 0
    head_h = (line_h + 6 if sections else 0) + (line_h + 2 if header else 0)
    footer = footer or []
    columns = max(len(r) for r in rows)
    pitch = cell + gap
    width = max(columns * pitch + gap, 1)
    height = title_h + head_h + len(rows) * (cell + caption_h + gap) + len(footer) * line_h + gap
    out = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((gap, 4), title, fill="black", font=title_font)
    top = title_h
    if sections:
        first = 0
        for name, count in sections:
            draw.text((gap + first * pitch, top + 2), name, fill="black", font=font)
            if first:
                x = gap + first * pitch - gap // 2
                draw.line([(x, top), (x, height - len(footer) * line_h - gap)], fill="grey")
            first += count
        top += line_h + 6
    if header:
        for j, name in enumerate(header):
            draw.text((gap + j * pitch, top), name, fill="black", font=font)
        top += line_h + 2
    for i, row in enumerate(rows):
        row_top = top + i * (cell + caption_h + gap)
        for j, (image, caption) in enumerate(row):
            left = gap + j * pitch
            draw.multiline_text((left, row_top), caption, fill="black", font=font, spacing=1)
            if image is None:
                draw.text((left + cell // 3, row_top + caption_h + cell // 2), "n/a", fill="grey")
                continue
            image = image.convert("RGB")
            scale = cell / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.NEAREST)
            out.paste(image, (left + (cell - size[0]) // 2, row_top + caption_h))
    for k, line in enumerate(footer):
        draw.text(
            (gap, height - (len(footer) - k) * line_h - gap // 2), line, fill="dimgrey", font=font
        )
    return out


def contact_sheet(
    data: features_lib.FeatureSet, table: list[dict], root: Path | None, path: Path
) -> bool:
    """Support image | k before-neighbours | k after-neighbours per row. False if no images.

    `table` is the neighbour table of `experiments.analyze` (train_index, label, group, before,
    before_groups, after, after_groups per support point).
    """
    if not table:
        return False
    sources = load_images(data, "train", [r["train_index"] for r in table], root)
    if sources is None:
        return False
    before = [load_images(data, "val", r["before"], root) for r in table]
    after = [load_images(data, "val", r["after"], root) for r in table]
    rows = []
    for i, row in enumerate(table):
        cells = [
            (
                sources[i],
                f"S {data.class_names[row['label']]}\n{analysis.group_name(data, row['group'])}",
            )
        ]
        cells += [
            (im, f"before\n{analysis.group_name(data, g)}")
            for im, g in zip(before[i], row["before_groups"], strict=True)
        ]
        cells += [
            (im, f"after\n{analysis.group_name(data, g)}")
            for im, g in zip(after[i], row["after_groups"], strict=True)
        ]
        rows.append(cells)
    k = len(table[0]["before"])
    image_grid(
        rows,
        title="Most-edited support points and their nearest val examples",
        sections=[
            ("support", 1),
            (f"{k} nearest val, before the edit", k),
            (f"{k} nearest val, after the edit", k),
        ],
        footer=[
            "S <class>: the support point's train image; captions give each image's group "
            "(class and spurious attribute).",
            "Neighbours are val examples nearest the support embedding before / after HSFM "
            "edits it (feature space).",
        ],
    ).save(path)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features_dir", required=True)
    parser.add_argument("--val_fraction", type=float, default=0.0)
    parser.add_argument("--val_seed", type=int, default=0)
    parser.add_argument("--table", required=True, help="JSON list: the neighbour table")
    parser.add_argument("--out", required=True)
    parser.add_argument("--images_root", default="")
    args = parser.parse_args(argv)
    try:
        data = features_lib.load(args.features_dir, splits=("train", "val"))
        data = features_lib.split_validation(data, args.val_fraction, args.val_seed)
        table = json.loads(Path(args.table).read_text())
        root = Path(args.images_root) if args.images_root else None
        made = contact_sheet(data, table, root, Path(args.out))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0 if made else 2


if __name__ == "__main__":
    sys.exit(main())
