"""Per-class centeredness and size scores of ImageNet (Hard-Spurious-ImageNet, Sec. 3, Eqs. 1-2).

For class c with annotated images i = 1..M, image i holding N_i boxes of class c::

    C_c = 1/M sum_i 1/N_i sum_j (1 - ||O_ij - I||_inf)      (Eq. 1)
    S_c = 1/M sum_i 1/N_i sum_j h_ij w_ij / (H_i W_i)       (Eq. 2)

with the object centre O and the image centre I = (0.5, 0.5) in coordinates normalised by the
image width and height. Objects are averaged within an image first, then images within the class
(Eq. 1's 1/M 1/N read with a per-image N). The paper plots both (Fig. 2 left, Fig. 3) and their
product C_c * S_c (Fig. 4).

CLI::

    python -m feature_export.hsi.scores --imagenet_dir=/data/imagenet --split=val \\
        --out=runs/hsi_scores

writes ``<out>/class_scores_<split>.csv`` (wnid, name, centeredness, size, product, num_images,
num_objects; sorted by wnid) and ``<out>/class_scores_<split>.png`` (scatter + histograms).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from feature_export.hsi.annotations import IMAGENET_SPLITS, Annotation, ImageNetLayout
from hsfm_jax.runtime.atomic import atomic_write

CSV_COLUMNS = (
    "wnid",
    "name",
    "centeredness",
    "size",
    "centeredness_x_size",
    "num_images",
    "num_objects",
)


@dataclasses.dataclass(frozen=True)
class ClassScore:
    wnid: str
    name: str
    centeredness: float  # C_c, Eq. 1, in [0.5, 1]
    size: float  # S_c, Eq. 2, in (0, 1]
    num_images: int
    num_objects: int

    @property
    def product(self) -> float:
        return self.centeredness * self.size


def image_scores(ann: Annotation) -> tuple[float, float]:
    """(centeredness, size) of one image: its objects' Eq. 1 / Eq. 2 terms averaged."""
    boxes = ann.boxes
    cx = np.array([(b.xmin + b.xmax) / 2 for b in boxes]) / ann.width
    cy = np.array([(b.ymin + b.ymax) / 2 for b in boxes]) / ann.height
    offset = np.maximum(np.abs(cx - 0.5), np.abs(cy - 0.5))  # ||O - I||_inf
    area = np.array([b.area for b in boxes]) / (ann.width * ann.height)
    return float(np.mean(1.0 - offset)), float(np.mean(area))


def class_score(wnid: str, name: str, annotations: Sequence[Annotation]) -> ClassScore:
    """Eqs. 1-2 over the annotated images of one class."""
    if not annotations:
        raise ValueError(f"class {wnid}: no annotated image")
    per_image = np.array([image_scores(a) for a in annotations])  # (M, 2)
    return ClassScore(
        wnid=wnid,
        name=name,
        centeredness=float(per_image[:, 0].mean()),
        size=float(per_image[:, 1].mean()),
        num_images=len(annotations),
        num_objects=sum(len(a.boxes) for a in annotations),
    )


def compute_scores(
    layout: ImageNetLayout, split: str = "val", wnids: Iterable[str] | None = None
) -> list[ClassScore]:
    """Scores of every annotated class of `split` (or of `wnids`), sorted by wnid."""
    available = layout.wnids(split)
    wnids = available if wnids is None else sorted(wnids)
    missing = sorted(set(wnids) - set(available))
    if missing:
        raise ValueError(f"{layout.root}: no annotated {split} images for classes {missing}")
    return [
        class_score(w, layout.class_name(w), layout.annotations(split, w))
        for w in tqdm(wnids, desc=f"scores ({split})", disable=len(wnids) < 50)
    ]


def write_csv(scores: Sequence[ClassScore], path: str | os.PathLike) -> None:
    with atomic_write(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for s in scores:
            writer.writerow(
                [
                    s.wnid,
                    s.name,
                    f"{s.centeredness:.6f}",
                    f"{s.size:.6f}",
                    f"{s.product:.6f}",
                    s.num_images,
                    s.num_objects,
                ]
            )


def read_csv(path: str | os.PathLike) -> list[ClassScore]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        ClassScore(
            r["wnid"],
            r["name"],
            float(r["centeredness"]),
            float(r["size"]),
            int(r["num_images"]),
            int(r["num_objects"]),
        )
        for r in rows
    ]


def _bin_edges(values: np.ndarray, num_classes: int) -> np.ndarray:
    """Histogram edges that also work when all classes share (almost) one value."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-6:
        lo, hi = lo - 0.01, hi + 0.01
    return np.linspace(lo, hi, min(50, max(5, num_classes // 5)) + 1)


def plot(scores: Sequence[ClassScore], path: str | os.PathLike, title: str = "") -> None:
    """Fig. 2 (left; centre vs size per class, extremes labelled) and Fig. 3 (histograms)."""
    # matplotlib.figure.Figure needs no pyplot / GUI backend.
    from matplotlib.figure import Figure

    c = np.array([s.centeredness for s in scores])
    sz = np.array([s.size for s in scores])
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    ax_scatter, ax_c, ax_s = fig.subplots(1, 3)
    ax_scatter.scatter(c, sz, s=8, alpha=0.6)
    extremes = {int(np.argmax(c * sz)), int(np.argmin(c)), int(np.argmin(sz))}
    for i in sorted(extremes):
        ax_scatter.annotate(scores[i].name, (c[i], sz[i]), fontsize=8)
    ax_scatter.set_xlabel("centeredness score $C_c$")
    ax_scatter.set_ylabel("size score $S_c$")
    ax_scatter.set_title("classes")
    ax_c.hist(c, bins=_bin_edges(c, len(scores)))
    ax_c.set_xlabel("centeredness score $C_c$")
    ax_c.set_ylabel("classes")
    ax_s.hist(sz, bins=_bin_edges(sz, len(scores)))
    ax_s.set_xlabel("size score $S_c$")
    ax_s.set_ylabel("classes")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> list[ClassScore]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imagenet_dir", required=True, help="ILSVRC root (see annotations.py)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--split", default="val", choices=IMAGENET_SPLITS)
    parser.add_argument("--classes", default="", help="comma-separated wnids (default: all)")
    args = parser.parse_args(argv)

    layout = ImageNetLayout(args.imagenet_dir)
    wnids = [w for w in args.classes.split(",") if w] or None
    scores = compute_scores(layout, args.split, wnids)
    out = Path(args.out)
    write_csv(scores, out / f"class_scores_{args.split}.csv")
    plot(scores, out / f"class_scores_{args.split}.png", f"ImageNet {args.split}")
    c = np.array([s.centeredness for s in scores])
    sz = np.array([s.size for s in scores])
    logging.info(
        "%d classes: mean centeredness %.3f, mean size %.3f -> %s",
        len(scores),
        c.mean(),
        sz.mean(),
        out,
    )
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
