"""Builds Hard-Spurious-ImageNet from a local ImageNet copy (paper Secs. 4, 4.1, 5; Apps. C, G).

For every image the builder pastes the core object (the crop of the image's largest box of its
own class) onto a 224x224 background:

- **background** = an annotated ImageNet image with every annotated box, grown by
  ``mask_dilation`` px (15) on each side, filled by an inpainter (default OpenCV Telea; the
  paper uses SAM + LaMa, plug one in with ``--inpainter=package.module:factory``), then resized
  to 224x224. O groups use the object's own image, R groups an image of the class's background
  class: one other class per class, drawn at random (as the released generator does; v1) or
  taken from the paper's list of highly spurious classes (v2, Sec. 4.1);
- **object** resized to 56, 84 or 112 px square, at the centre (Ce) or flush with the top-right
  corner (Co). Test variants (Sec. 4): ``test_ar`` = a random corner (of four) and the
  aspect-preserving resize (shorter side to the size; if the longer side then exceeds 224, the
  longer side to 224); ``test_random_corner`` and ``test_aspect`` give each change alone. A
  variant reuses its ``test`` image's object, background and size.

Splits (Sec. 5, App. G), per class: train 80 images per Easy group and 10 per Medium / Hard group
(400), val 20 per group (240), both from ImageNet train; test 50 per group (600) from ImageNet
val. The annotated train images of a class are split once into disjoint val and train source
pools (``val_sources_per_class`` = 20 for val), so no object or background is in two splits;
R backgrounds come from the same split's pool of the background class. Within a group the
objects are distinct images; groups draw independently. A class with too few annotated images
gets fewer (logged, and listed under "shortfalls" in build_config.json).

Output (the released layout, plus the manifest)::

    <out>/<split>/<size>/Group_<k>/<wnid>/<image id>_<k>_<size>.JPEG   k = 1..4: CeO CoO CeR CoR
    <out>/manifest.csv        one row per image (see feature_export.hsi.manifest.COLUMNS)
    <out>/build_config.json   flags, classes, background classes, split sizes, shortfalls

Every random choice is drawn from ``--seed`` and the class / split / group it concerns, so the
output is a pure function of the flags and the ImageNet copy. The build is resumable: images
already on disk are skipped (each is written to a temp file and renamed), and a directory built
with other flags is refused. Images are rendered grouped by background, so each background is
inpainted once.

    python -m feature_export.hsi.build --imagenet_dir=/data/imagenet --out=/data/hsi \\
        [--classes=n01440764,n01443537 | --num_classes=N] [--version=v2] [--seed=0] \\
        [--num_workers=8] [--inpainter=telea]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import math
import multiprocessing
import os
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from feature_export.hsi import (
    GROUP_CATEGORIES,
    GROUP_NAMES,
    IMAGE_SIZE,
    OBJECT_SIZES,
    PLACEMENTS,
    V2_BACKGROUND_WNIDS,
    V2_FOREGROUND_WNIDS,
    category,
    group_id,
)
from feature_export.hsi.annotations import Annotation, Box, ImageNetLayout
from feature_export.hsi.manifest import CONFIG_FILE, MANIFEST_FILE, write_manifest
from hsfm_jax.runtime.atomic import atomic_write

SPLITS = ("train", "val", "test")
# variant -> (corner rule, resize rule)
TEST_VARIANTS = {
    "ar": ("random_corner", "aspect"),
    "random_corner": ("random_corner", "square"),
    "aspect": ("top_right", "aspect"),
}
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
VERSIONS = ("v1", "v2")

# An inpainter fills the True pixels of mask: (image (H, W, 3) uint8 RGB, mask (H, W) bool) ->
# (H, W, 3) uint8. Plug in another with --inpainter=package.module:factory, factory() -> one.
Inpainter = Callable[[np.ndarray, np.ndarray], np.ndarray]


def cv2_inpainter(method: str = "telea", radius: int = 3) -> Inpainter:
    """OpenCV inpainting (Telea 2004 or Navier-Stokes); needs opencv-python-headless."""
    import cv2

    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]

    def inpaint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return cv2.inpaint(np.ascontiguousarray(image), mask.astype(np.uint8), radius, flag)

    return inpaint


def mean_inpainter() -> Inpainter:
    """Fills the mask with the mean colour of the rest (no OpenCV; for tests and quick looks)."""

    def inpaint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = image.copy()
        keep = ~mask
        fill = image[keep].mean(axis=0) if keep.any() else np.full(3, 127.0)
        out[mask] = np.round(fill).astype(np.uint8)
        return out

    return inpaint


INPAINTERS: dict[str, Callable[[], Inpainter]] = {
    "telea": lambda: cv2_inpainter("telea"),
    "ns": lambda: cv2_inpainter("ns"),
    "mean": mean_inpainter,
}


def get_inpainter(spec: str) -> Inpainter:
    """A built-in name (telea, ns, mean) or ``package.module:factory`` (factory() -> Inpainter)."""
    if spec in INPAINTERS:
        return INPAINTERS[spec]()
    if ":" in spec:
        module, _, factory = spec.partition(":")
        return getattr(importlib.import_module(module), factory)()
    raise ValueError(f"unknown inpainter {spec!r}; use one of {sorted(INPAINTERS)} or module:fn")


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the output (written to build_config.json)."""

    seed: int = 0
    version: str = "v1"
    classes: tuple[str, ...] = ()  # () = every class with annotated train and val images (v1)
    num_classes: int = 0  # > 0: a random subset (drawn with the seed) of N of those classes
    train_per_easy_group: int = 80
    train_per_group: int = 10  # Medium and Hard groups
    val_per_group: int = 20
    test_per_group: int = 50
    val_sources_per_class: int = 20
    test_variants: tuple[str, ...] = ("ar",)
    mask_dilation: int = 15
    inpainter: str = "telea"
    image_format: str = "JPEG"  # or PNG
    jpeg_quality: int = 95

    def __post_init__(self):
        if self.version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {self.version!r}")
        for v in self.test_variants:
            if v not in TEST_VARIANTS:
                raise ValueError(f"test variant {v!r} unknown; choose from {sorted(TEST_VARIANTS)}")
        if self.image_format not in ("JPEG", "PNG"):
            raise ValueError(f"image_format must be JPEG or PNG, got {self.image_format!r}")
        for name in ("train_per_easy_group", "train_per_group", "val_per_group", "test_per_group"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.mask_dilation < 0:
            raise ValueError(f"mask_dilation must be >= 0, got {self.mask_dilation}")

    def per_group(self, split: str, group: int) -> int:
        if split == "train":
            easy = group in GROUP_CATEGORIES["Easy"]
            return self.train_per_easy_group if easy else self.train_per_group
        return self.val_per_group if split == "val" else self.test_per_group

    @property
    def extension(self) -> str:
        return ".JPEG" if self.image_format == "JPEG" else ".png"


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """One image to write. `object_ann` / `background_ann` are the ImageNet sources."""

    path: str
    split: str
    label: int
    wnid: str
    class_name: str
    size: int
    placement: str
    position: str
    resize: str
    background_class: str
    object_ann: Annotation
    background_ann: Annotation
    imagenet_split: str

    @property
    def group(self) -> int:
        return group_id(self.size, self.placement)

    def row(self) -> dict[str, str]:
        return {
            "path": self.path,
            "split": self.split,
            "label": str(self.label),
            "wnid": self.wnid,
            "class_name": self.class_name,
            "size": str(self.size),
            "placement": self.placement,
            "position": self.position,
            "resize": self.resize,
            "background_class": self.background_class,
            "group": str(self.group),
            "group_name": GROUP_NAMES[self.group],
            "category": category(self.size, self.placement),
            "object_source": f"{self.imagenet_split}/{self.object_ann.image_id}",
            "background_source": f"{self.imagenet_split}/{self.background_ann.image_id}",
        }


# ----------------------------------------------------------------------------- planning


def _rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator keyed by the seed and what it is for (stable across runs and subsets)."""
    return np.random.default_rng([seed, *(zlib.crc32(str(k).encode()) for k in keys)])


def select_classes(layout: ImageNetLayout, config: BuildConfig) -> list[str]:
    """The sorted class list (labels index it)."""
    train, val = set(layout.wnids("train")), set(layout.wnids("val"))
    if config.classes:
        classes = sorted(set(config.classes))
    elif config.version == "v2":
        classes = sorted(V2_FOREGROUND_WNIDS)
    else:
        classes = sorted(train & val)
    if 0 < config.num_classes < len(classes):
        pick = _rng(config.seed, "classes").choice(len(classes), config.num_classes, replace=False)
        classes = sorted(classes[i] for i in pick)
    missing = [w for w in classes if w not in train or w not in val]
    if missing:
        raise ValueError(
            f"{layout.root}: classes without annotated ImageNet train and val images: {missing}"
        )
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes, got {classes}")
    return classes


def background_classes(classes: Sequence[str], config: BuildConfig) -> dict[str, str]:
    """Each class's background class for the R groups (one per class, all its R images)."""
    out = {}
    if config.version == "v1":
        for w in classes:
            others = [o for o in classes if o != w]
            out[w] = others[int(_rng(config.seed, "background", w).integers(len(others)))]
    else:
        order = _rng(config.seed, "v2_background").permutation(len(V2_BACKGROUND_WNIDS))
        pool = [V2_BACKGROUND_WNIDS[i] for i in order]
        for i, w in enumerate(classes):
            candidates = [b for b in pool if b != w]
            out[w] = candidates[i % len(candidates)]
    return out


def source_pools(layout: ImageNetLayout, wnid: str, config: BuildConfig) -> dict[str, list]:
    """Annotated source images of a class per split: disjoint train/val pools, test = val."""
    train_images = layout.annotations("train", wnid)
    if not train_images:
        raise ValueError(f"{layout.root}: no annotated ImageNet train images of {wnid}")
    order = _rng(config.seed, "pool", wnid).permutation(len(train_images))
    n_val = min(config.val_sources_per_class, len(train_images) // 2)
    test_images = layout.annotations("val", wnid)
    if not test_images:
        raise ValueError(f"{layout.root}: no annotated ImageNet val images of {wnid}")
    return {
        "val": [train_images[i] for i in order[:n_val]],
        "train": [train_images[i] for i in order[n_val:]],
        "test": list(test_images),
    }


def plan(layout: ImageNetLayout, config: BuildConfig) -> tuple[list[Record], dict]:
    """Every image to write, and the facts for build_config.json. Touches no pixel."""
    classes = select_classes(layout, config)
    backgrounds = background_classes(classes, config)
    pools = {}
    for w in sorted(set(classes) | set(backgrounds.values())):
        pools[w] = source_pools(layout, w, config)
    records: list[Record] = []
    shortfalls = []
    for label, wnid in enumerate(classes):
        name = layout.class_name(wnid)
        bg_wnid = backgrounds[wnid]
        for split in SPLITS:
            pool, bg_pool = pools[wnid][split], pools[bg_wnid][split]
            imagenet_split = "val" if split == "test" else "train"
            for group in range(len(GROUP_NAMES)):
                size, placement = OBJECT_SIZES[group // 4], PLACEMENTS[group % 4]
                wanted = config.per_group(split, group)
                rng = _rng(config.seed, "plan", wnid, split, group)
                n = min(wanted, len(pool))
                if n < wanted:
                    shortfalls.append(f"{wnid} {split} {GROUP_NAMES[group]}: {n} of {wanted}")
                objects = [pool[i] for i in rng.choice(len(pool), n, replace=False)]
                if placement.endswith("R"):
                    bg_index = rng.choice(len(bg_pool), n, replace=n > len(bg_pool))
                    bgs = [bg_pool[i] for i in bg_index]
                else:
                    bgs = objects
                k = PLACEMENTS.index(placement) + 1
                for obj, bg in zip(objects, bgs, strict=True):
                    file = f"{obj.image_id}_{k}_{size}{config.extension}"
                    records.append(
                        Record(
                            path=f"{split}/{size}/Group_{k}/{wnid}/{file}",
                            split=split,
                            label=label,
                            wnid=wnid,
                            class_name=name,
                            size=size,
                            placement=placement,
                            position="center" if placement.startswith("Ce") else "top_right",
                            resize="square",
                            background_class=bg_wnid if placement.endswith("R") else wnid,
                            object_ann=obj,
                            background_ann=bg,
                            imagenet_split=imagenet_split,
                        )
                    )
    for variant in config.test_variants:
        corner_rule, resize = TEST_VARIANTS[variant]
        split = f"test_{variant}"
        for r in [r for r in records if r.split == "test"]:
            position = r.position
            if position != "center" and corner_rule == "random_corner":
                position = CORNERS[int(_rng(config.seed, "corner", variant, r.path).integers(4))]
            path = f"{split}/{r.path.removeprefix('test/')}"
            records.append(
                dataclasses.replace(r, split=split, path=path, position=position, resize=resize)
            )
    for s in shortfalls:
        logging.warning("too few annotated source images: %s", s)
    split_names = [*SPLITS, *(f"test_{v}" for v in config.test_variants)]
    facts = {
        "classes": classes,
        "class_names": [layout.class_name(w) for w in classes],
        "imagenet_indices": [
            layout.synsets.index(w) if w in layout.synsets else -1 for w in classes
        ],
        "background_classes": backgrounds,
        "splits": {s: sum(r.split == s for r in records) for s in split_names},
        "shortfalls": shortfalls,
    }
    return records, facts


# ----------------------------------------------------------------------------- pixels


def _load_rgb(path: Path) -> np.ndarray:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: ImageNet image missing")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as e:
        raise ValueError(f"{path}: unreadable image ({e})") from None


def _to_pixels(box: Box, ann: Annotation, image: np.ndarray, pad: int = 0) -> tuple[int, ...]:
    """Box (annotation coordinates) -> (x0, y0, x1, y1) pixel slice bounds in `image`, padded."""
    height, width = image.shape[:2]
    box = box.scaled(width / ann.width, height / ann.height)  # XML size may differ from the file
    x0 = max(math.floor(box.xmin) - pad, 0)
    y0 = max(math.floor(box.ymin) - pad, 0)
    x1 = min(max(math.ceil(box.xmax) + pad, x0 + 1), width)
    y1 = min(max(math.ceil(box.ymax) + pad, y0 + 1), height)
    return x0, y0, x1, y1


def inpainted_background(
    ann: Annotation, inpainter: Inpainter, mask_dilation: int, image: np.ndarray | None = None
) -> np.ndarray:
    """(224, 224, 3) uint8: `ann`'s image with all its boxes (dilated) inpainted, resized."""
    image = _load_rgb(ann.image_path) if image is None else image
    mask = np.zeros(image.shape[:2], bool)
    for box in ann.all_boxes:
        x0, y0, x1, y1 = _to_pixels(box, ann, image, pad=mask_dilation)
        mask[y0:y1, x0:x1] = True
    filled = np.asarray(inpainter(image, mask), np.uint8)
    if filled.shape != image.shape:
        raise ValueError(f"inpainter returned shape {filled.shape} for an image {image.shape}")
    resized = Image.fromarray(filled).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    return np.asarray(resized)


def object_crop(ann: Annotation, image: np.ndarray | None = None) -> np.ndarray:
    """(h, w, 3) uint8 crop of the image's largest box of its own class."""
    image = _load_rgb(ann.image_path) if image is None else image
    x0, y0, x1, y1 = _to_pixels(ann.largest_box, ann, image)
    return image[y0:y1, x0:x1]


def object_shape(crop_hw: tuple[int, int], size: int, resize: str) -> tuple[int, int]:
    """(h, w) of the pasted object: size x size, or the aspect-preserving rule of Sec. 4."""
    if resize == "square":
        return size, size
    h, w = crop_hw
    scale = size / min(h, w)
    if max(h, w) * scale > IMAGE_SIZE:
        scale = IMAGE_SIZE / max(h, w)
    return max(1, min(IMAGE_SIZE, round(h * scale))), max(1, min(IMAGE_SIZE, round(w * scale)))


def object_offset(shape_hw: tuple[int, int], position: str) -> tuple[int, int]:
    """(top, left) of an object of shape (h, w) on the 224x224 canvas."""
    h, w = shape_hw
    free_y, free_x = IMAGE_SIZE - h, IMAGE_SIZE - w
    return {
        "center": (free_y // 2, free_x // 2),
        "top_left": (0, 0),
        "top_right": (0, free_x),
        "bottom_left": (free_y, 0),
        "bottom_right": (free_y, free_x),
    }[position]


def compose(background: np.ndarray, crop: np.ndarray, size: int, position: str, resize: str):
    """Pastes `crop`, resized by the rule, onto a copy of the (224, 224, 3) `background`."""
    h, w = object_shape(crop.shape[:2], size, resize)
    obj = np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.BICUBIC))
    top, left = object_offset((h, w), position)
    out = background.copy()
    out[top : top + h, left : left + w] = obj
    return out


def _save(image: np.ndarray, path: Path, config: BuildConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # ignored by loaders and resumes
    if config.image_format == "JPEG":
        Image.fromarray(image).save(tmp, "JPEG", quality=config.jpeg_quality)
    else:
        Image.fromarray(image).save(tmp, "PNG")
    os.replace(tmp, path)


_WORKER_INPAINTERS: dict[str, Inpainter] = {}


def _render_background_task(task: tuple[list[Record], str, BuildConfig]) -> tuple[int, int]:
    """Writes the missing images of one background source -> (written, records in the task)."""
    records, out_dir, config = task
    todo = [r for r in records if not (Path(out_dir) / r.path).exists()]
    if not todo:
        return 0, len(records)
    if config.inpainter not in _WORKER_INPAINTERS:
        _WORKER_INPAINTERS[config.inpainter] = get_inpainter(config.inpainter)
    bg_ann = todo[0].background_ann
    bg_image = _load_rgb(bg_ann.image_path)
    background = inpainted_background(
        bg_ann, _WORKER_INPAINTERS[config.inpainter], config.mask_dilation, bg_image
    )
    for r in todo:
        same = r.object_ann.image_path == bg_ann.image_path
        crop = object_crop(r.object_ann, bg_image if same else None)
        image = compose(background, crop, r.size, r.position, r.resize)
        _save(image, Path(out_dir) / r.path, config)
    return len(todo), len(records)


def render(
    records: Sequence[Record],
    out_dir: str | os.PathLike,
    config: BuildConfig,
    num_workers: int = 1,
    progress: bool = True,
) -> int:
    """Writes every record's image that is not on disk yet; returns how many it wrote."""
    by_background: dict[Path, list[Record]] = defaultdict(list)
    for r in records:
        by_background[r.background_ann.image_path].append(r)
    tasks = [(by_background[k], str(out_dir), config) for k in sorted(by_background)]
    bar = tqdm(total=len(records), desc="hard_spurious_imagenet", disable=not progress)
    written = 0
    if num_workers > 1:
        with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
            for n, total in pool.imap_unordered(_render_background_task, tasks, chunksize=4):
                written += n
                bar.update(total)
    else:
        for task in tasks:
            n, total = _render_background_task(task)
            written += n
            bar.update(total)
    bar.close()
    return written


# ----------------------------------------------------------------------------- driver


def _config_record(config: BuildConfig, facts: dict) -> dict:
    return {
        "builder": "feature_export.hsi.build",
        "config": dataclasses.asdict(config),
        "group_names": list(GROUP_NAMES),
        "group_categories": GROUP_CATEGORIES,
        **facts,
    }


def _check_or_write_config(out_dir: Path, record: dict) -> None:
    path = out_dir / CONFIG_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        new = json.loads(json.dumps(record))  # tuples -> lists, as stored
        differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if differ:
            raise ValueError(
                f"{path}: {out_dir} was built with other settings (differing: {differ}); "
                "use a new --out or delete it"
            )
        return
    with atomic_write(path, "w") as f:
        json.dump(record, f, indent=2)


def build(
    imagenet_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: BuildConfig = BuildConfig(),
    *,
    num_workers: int = 1,
    progress: bool = True,
) -> list[Record]:
    """Plans, renders (skipping images already written) and writes the manifest last."""
    out_dir = Path(out_dir)
    layout = ImageNetLayout(imagenet_dir)
    get_inpainter(config.inpainter)  # fail before planning if it cannot be made
    records, facts = plan(layout, config)
    _check_or_write_config(out_dir, _config_record(config, facts))
    written = render(records, out_dir, config, num_workers=num_workers, progress=progress)
    split_rank = {s: i for i, s in enumerate(facts["splits"])}
    ordered = sorted(records, key=lambda r: (split_rank[r.split], r.label, r.group, r.path))
    write_manifest((r.row() for r in ordered), out_dir / MANIFEST_FILE)
    logging.info(
        "%s: %d images (%d written now), splits %s", out_dir, len(records), written, facts["splits"]
    )
    return ordered


def _parse_classes(value: str) -> tuple[str, ...]:
    if value.startswith("@"):
        lines = Path(value[1:]).read_text().split()
        return tuple(w for w in lines if w)
    return tuple(w for w in value.split(",") if w)


def main(argv: Sequence[str] | None = None) -> list[Record]:
    d = BuildConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--imagenet_dir", required=True, help="ILSVRC root (see hsi/annotations.py)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--version", default=d.version, choices=VERSIONS)
    p.add_argument("--classes", default="", help="comma-separated wnids, or @file (one a line)")
    p.add_argument(
        "--num_classes", type=int, default=d.num_classes, help="random subset of N classes"
    )
    p.add_argument("--train_per_easy_group", type=int, default=d.train_per_easy_group)
    p.add_argument("--train_per_group", type=int, default=d.train_per_group)
    p.add_argument("--val_per_group", type=int, default=d.val_per_group)
    p.add_argument("--test_per_group", type=int, default=d.test_per_group)
    p.add_argument("--val_sources_per_class", type=int, default=d.val_sources_per_class)
    p.add_argument(
        "--test_variants",
        default=",".join(d.test_variants),
        help=f"comma-separated, from {sorted(TEST_VARIANTS)}; '' for none",
    )
    p.add_argument("--mask_dilation", type=int, default=d.mask_dilation)
    p.add_argument("--inpainter", default=d.inpainter, help="telea, ns, mean or module:factory")
    p.add_argument("--image_format", default=d.image_format, choices=("JPEG", "PNG"))
    p.add_argument("--jpeg_quality", type=int, default=d.jpeg_quality)
    p.add_argument("--num_workers", type=int, default=1)
    args = p.parse_args(argv)
    config = BuildConfig(
        seed=args.seed,
        version=args.version,
        classes=_parse_classes(args.classes),
        num_classes=args.num_classes,
        train_per_easy_group=args.train_per_easy_group,
        train_per_group=args.train_per_group,
        val_per_group=args.val_per_group,
        test_per_group=args.test_per_group,
        val_sources_per_class=args.val_sources_per_class,
        test_variants=tuple(v for v in args.test_variants.split(",") if v),
        mask_dilation=args.mask_dilation,
        inpainter=args.inpainter,
        image_format=args.image_format,
        jpeg_quality=args.jpeg_quality,
    )
    return build(args.imagenet_dir, args.out, config, num_workers=args.num_workers)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
