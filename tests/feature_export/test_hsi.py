"""Hard-Spurious-ImageNet: scores, builder and loader on a tiny generated ILSVRC-layout tree.

The fixture draws, per class, a solid background colour and a solid object colour (boxes in
Pascal-VOC XMLs), so a built image can be checked by reading its pixels back: the only pixels of
the class's object colour must be the pasted object, exactly where its group says, and the rest
must be the background colour of the class the manifest names.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from feature_export import datasets
from feature_export.hsi import (
    GROUP_CATEGORIES,
    GROUP_NAMES,
    category,
    group_id,
    group_size_placement,
)
from feature_export.hsi import build as hsi_build
from feature_export.hsi import scores as hsi_scores
from feature_export.hsi.annotations import ImageNetLayout
from feature_export.hsi.manifest import read_manifest

# wnid -> (name, background colour, object colour)
CLASSES = {
    "n00000001": ("alpha", (30, 60, 200), (230, 30, 30)),
    "n00000002": ("beta", (40, 170, 60), (250, 220, 40)),
    "n00000003": ("gamma", (120, 120, 120), (200, 40, 220)),
}
# (width, height) and box (xmin, ymin, xmax, ymax) of the fixture images, cycled per class.
# Aspect ratios 1:1, 2:1, 1:2 and 3:1 (the last exceeds 224 when its short side is 112).
SHAPES = [
    ((128, 96), (20, 30, 60, 70)),
    ((160, 120), (30, 50, 90, 80)),
    ((120, 160), (40, 40, 70, 100)),
    ((192, 128), (10, 60, 100, 90)),
    ((144, 144), (70, 70, 110, 110)),
]
TRAIN_PER_CLASS, VAL_PER_CLASS = 10, 3
SMALL = hsi_build.BuildConfig(
    seed=3,
    train_per_easy_group=3,
    train_per_group=1,
    val_per_group=2,
    test_per_group=2,
    val_sources_per_class=2,
    test_variants=("ar",),
    inpainter="mean",
)


def _draw(path: Path, size, boxes, bg, obj):
    image = np.empty((size[1], size[0], 3), np.uint8)
    image[:] = bg
    for x0, y0, x1, y1 in boxes:
        image[y0:y1, x0:x1] = obj
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, "JPEG", quality=100, subsampling=0)


def _xml(path: Path, folder: str, stem: str, size, boxes):
    objects = "".join(
        f"<object><name>{w}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for w, (x0, y0, x1, y1) in boxes
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><folder>{folder}</folder><filename>{stem}</filename>"
        f"<source><database>ILSVRC_2012</database></source><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size><segmented>0</segmented>"
        f"{objects}</annotation>"
    )


def make_imagenet(root: Path, *, val_as_csv: bool = False) -> Path:
    """Kaggle ILSVRC layout: LOC_synset_mapping.txt, ILSVRC/{Annotations,Data}/CLS-LOC/..."""
    ilsvrc = root / "ILSVRC"
    root.mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} {name}, other synonym\n" for w, (name, _, _) in CLASSES.items())
    )
    solution = ["ImageId,PredictionString"]
    val_index = 0
    for c, (wnid, (_, bg, obj)) in enumerate(CLASSES.items()):
        for i in range(TRAIN_PER_CLASS):
            size, box = SHAPES[(i + c) % len(SHAPES)]
            stem = f"{wnid}_{i}"
            _draw(ilsvrc / f"Data/CLS-LOC/train/{wnid}/{stem}.JPEG", size, [box], bg, obj)
            _xml(ilsvrc / f"Annotations/CLS-LOC/train/{wnid}/{stem}.xml", wnid, stem, size,
                 [(wnid, box)])  # fmt: skip
        for i in range(VAL_PER_CLASS):
            val_index += 1
            size, box = SHAPES[(i + 2 * c + 1) % len(SHAPES)]
            stem = f"ILSVRC2012_val_{val_index:08d}"
            _draw(ilsvrc / f"Data/CLS-LOC/val/{stem}.JPEG", size, [box], bg, obj)
            if val_as_csv:
                solution.append(f"{stem},{wnid} {' '.join(map(str, box))} ")
            else:
                _xml(ilsvrc / f"Annotations/CLS-LOC/val/{stem}.xml", "val", stem, size,
                     [(wnid, box)])  # fmt: skip
    if val_as_csv:
        (root / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    return root


# ----------------------------------------------------------------------------- scores


def test_scores_hand_checked(tmp_path):
    """Eqs. 1-2 on boxes worked out by hand, objects averaged per image, then per class."""
    ann = tmp_path / "ILSVRC/Annotations/CLS-LOC/train"
    # Image 1: 100x100, one centred 20x20 box -> C = 1, S = 0.04.
    _xml(ann / "n1/n1_1.xml", "n1", "n1_1", (100, 100), [("n1", (40, 40, 60, 60))])
    # Image 2: 200x100, two boxes:
    #   (0,0,50,50): centre (0.125, 0.25) -> 1 - max(0.375, 0.25) = 0.625; area 2500/20000
    #   (100,25,200,75): centre (0.75, 0.5) -> 1 - 0.25 = 0.75; area 5000/20000
    #   an object of another class (ignored) and a degenerate box (ignored)
    _xml(
        ann / "n1/n1_2.xml",
        "n1",
        "n1_2",
        (200, 100),
        [
            ("n1", (0, 0, 50, 50)),
            ("n1", (100, 25, 200, 75)),
            ("n2", (0, 0, 200, 100)),
            ("n1", (30, 30, 30, 60)),
        ],
    )
    # Class n2: one 10x10 box in the top-left corner of a 100x50 image (partly outside: clipped
    # to (0,0,5,5)): centre (0.025, 0.05) -> 1 - 0.475 = 0.525; area 25/5000 = 0.005.
    _xml(ann / "n2/n2_1.xml", "n2", "n2_1", (100, 50), [("n2", (-5, -5, 5, 5))])
    (tmp_path / "ILSVRC/Annotations/CLS-LOC/val").mkdir(parents=True)

    scores = hsi_scores.main(
        [f"--imagenet_dir={tmp_path}", f"--out={tmp_path / 'out'}", "--split=train"]
    )
    by = {s.wnid: s for s in scores}
    assert by["n1"].centeredness == pytest.approx((1.0 + (0.625 + 0.75) / 2) / 2)  # 0.84375
    assert by["n1"].size == pytest.approx((0.04 + (0.125 + 0.25) / 2) / 2)  # 0.11375
    assert (by["n1"].num_images, by["n1"].num_objects) == (2, 3)
    assert by["n2"].centeredness == pytest.approx(0.525)
    assert by["n2"].size == pytest.approx(0.005)

    with open(tmp_path / "out/class_scores_train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["wnid"] for r in rows] == ["n1", "n2"]
    assert tuple(rows[0]) == hsi_scores.CSV_COLUMNS
    assert float(rows[0]["centeredness_x_size"]) == pytest.approx(0.84375 * 0.11375, abs=1e-6)
    assert rows[0]["name"] == "n1"  # no LOC_synset_mapping.txt: the wnid
    png = tmp_path / "out/class_scores_train.png"
    with Image.open(png) as img:
        assert img.size[0] > 500


def test_plot_with_identical_scores(tmp_path):
    same = [hsi_scores.ClassScore(f"n{i}", f"c{i}", 0.8, 0.3, 1, 1) for i in range(3)]
    hsi_scores.plot(same, tmp_path / "same.png")
    assert (tmp_path / "same.png").stat().st_size > 0


def test_scores_val_from_csv_and_xml_agree(tmp_path):
    """Val boxes from LOC_val_solution.csv (sizes from the JPEG headers) = from the XMLs."""
    xml_root = make_imagenet(tmp_path / "xml")
    csv_root = make_imagenet(tmp_path / "csv", val_as_csv=True)
    from_xml = hsi_scores.compute_scores(ImageNetLayout(xml_root), "val")
    from_csv = hsi_scores.compute_scores(ImageNetLayout(csv_root), "val")
    assert [s.wnid for s in from_xml] == list(CLASSES)
    assert from_xml == from_csv
    assert from_xml[0].name == "alpha"
    # class 0's val images use SHAPES[1], [2], [3]
    expected = []
    for (w, h), (x0, y0, x1, y1) in SHAPES[1:4]:
        off = max(abs((x0 + x1) / 2 / w - 0.5), abs((y0 + y1) / 2 / h - 0.5))
        expected.append((1 - off, (x1 - x0) * (y1 - y0) / (w * h)))
    assert from_xml[0].centeredness == pytest.approx(np.mean([e[0] for e in expected]))
    assert from_xml[0].size == pytest.approx(np.mean([e[1] for e in expected]))


# ----------------------------------------------------------------------------- groups


def test_group_ids_and_categories():
    assert GROUP_NAMES[0] == "CeO_56" and GROUP_NAMES[11] == "CoR_112"
    assert group_id(84, "CoO") == 5 and group_size_placement(5) == (84, "CoO")
    assert GROUP_CATEGORIES == {
        "Easy": [4, 5, 8, 9],  # CeO/CoO at 84, 112
        "Medium": [0, 1, 10, 11],  # CeO/CoO at 56, CeR/CoR at 112
        "Hard": [2, 3, 6, 7],  # CeR/CoR at 56, 84
    }
    assert category(56, "CoR") == "Hard" and category(112, "CeR") == "Medium"
    with pytest.raises(ValueError, match="object size"):
        group_id(60, "CeO")


def test_paper_split_sizes():
    """Defaults give the paper's 400 train / 240 val / 600 test images per class (App. G)."""
    config = hsi_build.BuildConfig()
    per_class = {
        split: sum(config.per_group(split, g) for g in range(12))
        for split in ("train", "val", "test")
    }
    assert per_class == {"train": 400, "val": 240, "test": 600}


# ----------------------------------------------------------------------------- builder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_imagenet(tmp_path_factory.mktemp("imagenet"))
    out = tmp_path_factory.mktemp("hsi") / "built"
    records = hsi_build.build(root, out, SMALL, progress=False)
    return root, out, records


def _object_mask(image: np.ndarray, colour) -> np.ndarray:
    return np.abs(image.astype(int) - np.array(colour)).max(axis=-1) < 40


def _expected_rect(row: dict, layout: ImageNetLayout) -> tuple[int, int, int, int]:
    """(top, left, h, w) the group promises, from the source box's shape."""
    split, image_id = row["object_source"].split("/")
    ann = next(a for a in layout.annotations(split, row["wnid"]) if a.image_id == image_id)
    box = ann.largest_box
    crop_hw = (round(box.height), round(box.width))
    h, w = hsi_build.object_shape(crop_hw, int(row["size"]), row["resize"])
    top, left = hsi_build.object_offset((h, w), row["position"])
    return top, left, h, w


def test_build_counts_and_manifest(built):
    _, out, records = built
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == len(records) == 3 * (20 + 24 + 24 + 24)
    config = json.loads((out / "build_config.json").read_text())
    assert config["classes"] == list(CLASSES)
    assert config["class_names"] == ["alpha", "beta", "gamma"]
    assert config["splits"] == {"train": 60, "val": 72, "test": 72, "test_ar": 72}
    assert config["shortfalls"] == []
    assert config["group_categories"] == GROUP_CATEGORIES
    counts = Counter((r["split"], r["wnid"], int(r["group"])) for r in rows)
    for wnid in CLASSES:
        for g in range(12):
            easy = g in GROUP_CATEGORIES["Easy"]
            assert counts["train", wnid, g] == (3 if easy else 1)
            assert counts["val", wnid, g] == 2
            assert counts["test", wnid, g] == counts["test_ar", wnid, g] == 2
    for r in rows:
        size, placement = group_size_placement(int(r["group"]))
        k = ["CeO", "CoO", "CeR", "CoR"].index(placement) + 1
        assert r["path"].startswith(f"{r['split']}/{size}/Group_{k}/{r['wnid']}/")
        assert r["path"].endswith(f"_{k}_{size}.JPEG")
        assert (r["size"], r["placement"]) == (str(size), placement)
        assert r["group_name"] == GROUP_NAMES[int(r["group"])]
        assert r["category"] == category(size, placement)
        assert int(r["label"]) == list(CLASSES).index(r["wnid"])
        assert (out / r["path"]).is_file()
        if placement.endswith("R"):
            assert r["background_class"] == config["background_classes"][r["wnid"]]
            assert r["background_class"] != r["wnid"]
        else:
            assert r["background_class"] == r["wnid"]
            assert r["background_source"] == r["object_source"]
    # Disjoint sources: train and val come from disjoint ImageNet-train pools, test from val.
    sources = {s: {r["object_source"] for r in rows if r["split"] == s} for s in ("train", "val")}
    assert not sources["train"] & sources["val"]
    assert all(r["object_source"].startswith("val/") for r in rows if r["split"] == "test")
    val_bg = {r["background_source"] for r in rows if r["split"] == "val"}
    assert not val_bg & sources["train"]
    # Within a group, objects are distinct images.
    for key in counts:
        objs = [r["object_source"] for r in rows if (r["split"], r["wnid"], int(r["group"])) == key]
        assert len(set(objs)) == len(objs)


def test_build_pixels_match_groups(built):
    """Every image: the object colour is exactly in the promised rectangle; the rest is the
    background colour of the class the manifest names (the source object was inpainted away)."""
    root, out, _ = built
    layout = ImageNetLayout(root)
    colours = {w: (bg, obj) for w, (_, bg, obj) in CLASSES.items()}
    positions = Counter()
    for row in read_manifest(out / "manifest.csv"):
        with Image.open(out / row["path"]) as img:
            assert img.size == (224, 224) and img.mode == "RGB"
            image = np.asarray(img)
        top, left, h, w = _expected_rect(row, layout)
        mask = _object_mask(image, colours[row["wnid"]][1])
        ys, xs = np.nonzero(mask)
        found = (ys.min(), xs.min(), ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min())
        assert np.allclose(found, (top, left, h, w), atol=2), (row["path"], found)
        # JPEG blends the 1-px border of the object with the background; the rest is exact.
        assert mask[top + 1 : top + h - 1, left + 1 : left + w - 1].all(), row["path"]
        ring = np.zeros((224, 224), bool)
        ring[max(top - 4, 0) : top + h + 4, max(left - 4, 0) : left + w + 4] = True
        outside = ~ring
        bg = colours[row["background_class"]][0]
        assert _object_mask(image[outside], bg).mean() > 0.99, row["path"]
        positions[row["split"], row["position"], row["resize"]] += 1
    assert positions["train", "center", "square"] == positions["train", "top_right", "square"]
    corners = {p for (s, p, _) in positions if s == "test_ar"}
    assert corners - {"center"} <= set(hsi_build.CORNERS) and len(corners) >= 3
    assert {r for (s, _, r) in positions if s == "test_ar"} == {"aspect"}


def test_aspect_preserving_rule():
    assert hsi_build.object_shape((40, 20), 56, "aspect") == (112, 56)  # short side -> 56
    assert hsi_build.object_shape((20, 60), 112, "aspect") == (75, 224)  # long side capped
    assert hsi_build.object_shape((20, 60), 56, "square") == (56, 56)
    assert hsi_build.object_offset((56, 56), "center") == (84, 84)
    assert hsi_build.object_offset((56, 84), "top_right") == (0, 140)
    assert hsi_build.object_offset((112, 56), "bottom_left") == (112, 0)


def test_build_deterministic_and_resumable(built, tmp_path):
    root, out, records = built
    again = tmp_path / "again"
    shutil.copytree(out, again)
    victims = [r.path for r in records[::37]]
    for path in victims:
        (again / path).unlink()
    before = {p: (again / p).stat().st_mtime_ns for p in (records[1].path, records[2].path)}
    rebuilt = hsi_build.build(root, again, SMALL, progress=False)
    assert [r.row() for r in rebuilt] == [r.row() for r in records]
    for path in victims:  # rewritten byte for byte
        assert (again / path).read_bytes() == (out / path).read_bytes()
    for path, mtime in before.items():  # kept, not rewritten
        assert (again / path).stat().st_mtime_ns == mtime
    assert (again / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        hsi_build.build(root, again, hsi_build.BuildConfig(**{**vars(SMALL), "seed": 4}))


def test_plan_depends_on_seed_only(built):
    root, _, _ = built
    layout = ImageNetLayout(root)
    first, facts = hsi_build.plan(layout, SMALL)
    second, _ = hsi_build.plan(ImageNetLayout(root), SMALL)
    other, _ = hsi_build.plan(layout, hsi_build.BuildConfig(**{**vars(SMALL), "seed": 4}))
    assert [r.row() for r in first] == [r.row() for r in second]
    assert [r.row() for r in first] != [r.row() for r in other]
    assert facts["background_classes"] == {  # fixed per class, drawn from the seed
        w: r.background_class for r in first if r.placement == "CeR" for w in [r.wnid]
    }


def test_build_cli_class_subset(tmp_path):
    root = make_imagenet(tmp_path / "imagenet")
    argv = [
        f"--imagenet_dir={root}",
        f"--out={tmp_path / 'out'}",
        "--num_classes=2",
        "--train_per_easy_group=1",
        "--train_per_group=0",
        "--val_per_group=1",
        "--test_per_group=1",
        "--test_variants=",
        "--inpainter=mean",
        "--image_format=PNG",
    ]
    records = hsi_build.main(argv)
    classes = sorted({r.wnid for r in records})
    assert len(classes) == 2 and set(classes) < set(CLASSES)
    assert Counter(r.split for r in records) == {"train": 2 * 4, "val": 2 * 12, "test": 2 * 12}
    assert all(r.path.endswith(".png") and (tmp_path / "out" / r.path).is_file() for r in records)
    assert hsi_build.main(argv) == records  # a rerun writes nothing new, same manifest


def test_v2_backgrounds_come_from_spurious_list(tmp_path):
    root = make_imagenet(tmp_path)
    layout = ImageNetLayout(root)
    config = hsi_build.BuildConfig(classes=tuple(CLASSES), version="v2")
    backgrounds = hsi_build.background_classes(list(CLASSES), config)
    assert set(backgrounds.values()) <= set(hsi_build.V2_BACKGROUND_WNIDS)
    assert len(set(backgrounds.values())) == len(CLASSES)  # one distinct class per class
    with pytest.raises(ValueError, match="no annotated ImageNet train images"):
        hsi_build.plan(layout, config)  # the fixture has no snorkel, bobsled, ... images


def test_cv2_inpainting_removes_the_object(tmp_path):
    pytest.importorskip("cv2")
    root = make_imagenet(tmp_path)
    ann = ImageNetLayout(root).annotations("train", "n00000002")[0]
    background = hsi_build.inpainted_background(ann, hsi_build.get_inpainter("telea"), 15)
    bg, obj = CLASSES["n00000002"][1:]
    assert background.shape == (224, 224, 3)
    assert not _object_mask(background, obj).any()
    assert _object_mask(background, bg).mean() > 0.99


def test_custom_inpainter_spec():
    fill = hsi_build.get_inpainter("feature_export.hsi.build:mean_inpainter")
    image = np.zeros((4, 4, 3), np.uint8)
    image[0] = 200
    mask = np.zeros((4, 4), bool)
    mask[2:] = True
    assert (fill(image, mask)[2:] == 100).all()
    with pytest.raises(ValueError, match="unknown inpainter"):
        hsi_build.get_inpainter("lama")


# ----------------------------------------------------------------------------- loader


def test_loader_matches_manifest(built):
    _, out, _ = built
    ds = datasets.get("hard_spurious_imagenet", data_dir=str(out))
    assert ds.splits == ("train", "val", "test", "test_ar")
    assert ds.class_names == ["alpha", "beta", "gamma"]
    assert ds.group_names == list(GROUP_NAMES)
    assert ds.describe()["group_categories"] == GROUP_CATEGORIES
    assert ds.describe()["wnids"] == list(CLASSES)
    rows = read_manifest(out / "manifest.csv")
    for split in ds.splits:
        idx = ds.index(split)
        expected = [r for r in rows if r["split"] == split]
        assert idx.ids == [r["path"] for r in expected]
        assert idx.labels.tolist() == [int(r["label"]) for r in expected]
        assert idx.groups.tolist() == [int(r["group"]) for r in expected]
        for i, path in enumerate(idx.ids):  # path says class and group
            parts = Path(path).parts
            assert parts[3] == list(CLASSES)[idx.labels[i]]
            size, k = int(parts[1]), int(parts[2].removeprefix("Group_"))
            assert idx.groups[i] == group_id(size, ["CeO", "CoO", "CeR", "CoR"][k - 1])
    assert ds.load_image("test", 0).size == (224, 224)
    ar = datasets.get("hard_spurious_imagenet", data_dir=str(out), test_split="test_ar")
    assert ar.splits == ("train", "val", "test")
    assert ar.index("test").ids == ds.index("test_ar").ids
    assert ds.fingerprint() == datasets.get("hard_spurious_imagenet", data_dir=out).fingerprint()


def test_loader_reads_released_layout(built, tmp_path):
    """The authors' release has no manifest: the loader indexes the folders."""
    _, out, records = built
    released = tmp_path / "released"
    for split in ("train", "val", "test"):
        shutil.copytree(out / split, released / split)
    ds = datasets.get("hard_spurious_imagenet", data_dir=str(released))
    assert ds.describe()["layout"] == "released (scanned)"
    assert ds.splits == ("train", "val", "test")
    truth = {r.path: r for r in records}
    for split in ds.splits:
        idx = ds.index(split)
        assert sorted(idx.ids) == sorted(r.path for r in records if r.split == split)
        for path, label, group in zip(idx.ids, idx.labels, idx.groups, strict=True):
            assert (label, group) == (truth[path].label, truth[path].group)


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        datasets.get("hard_spurious_imagenet", data_dir=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="released layout"):
        datasets.get("hard_spurious_imagenet", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------- end to end


_HAVE_EXPORT = importlib.util.find_spec("feature_export.export") is not None


@pytest.mark.skipif(not _HAVE_EXPORT, reason="feature_export.export not available")
def test_end_to_end_build_export_load(built, tmp_path):
    """build -> export (random-init ResNet-50 at 16 px) -> hsfm_jax.data.features.load."""
    import torch

    from feature_export import backbones
    from feature_export.export import export_features
    from hsfm_jax.data import features

    _, out, _ = built
    ds = datasets.get("hard_spurious_imagenet", data_dir=str(out))
    if "resnet50" not in backbones.names():
        pytest.skip("no resnet50 backbone registered")
    backbone = backbones.get("resnet50", random_init=True, dataset=ds, image_size=16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a busy 2-core runner are several times slower
    try:
        meta = export_features(ds, backbone, tmp_path / "feat", batch_size=96, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    assert meta["group_categories"] == GROUP_CATEGORIES
    loaded = features.load(tmp_path / "feat", splits=("train", "val", "test", "test_ar"))
    assert loaded.num_classes == 3 and loaded.num_groups == 12
    assert loaded.train_group_counts().tolist() == [
        3 * (3 if g in GROUP_CATEGORIES["Easy"] else 1) for g in range(12)
    ]
    for split in ("val", "test", "test_ar"):
        assert np.bincount(loaded[split].groups, minlength=12).tolist() == [3 * 2] * 12
    assert loaded.test.ids == ds.index("test").ids


@pytest.mark.skipif(not _HAVE_EXPORT, reason="feature_export.export not available")
def test_experiment_reports_categories_on_test_and_test_ar(built, tmp_path):
    """build -> export -> experiments.train.run with the HSI config: per-category tables."""
    import json

    import torch

    from experiments import train
    from experiments.configs import hard_spurious_imagenet_resnet50 as hsi_config
    from feature_export import backbones
    from feature_export.export import export_features

    _, out, _ = built
    ds = datasets.get("hard_spurious_imagenet", data_dir=str(out))
    backbone = backbones.get("resnet50", random_init=True, dataset=ds, image_size=16)
    torch.set_num_threads(1)
    export_features(ds, backbone, tmp_path / "feat", batch_size=96, show_progress=False)
    config = hsi_config.get_config()
    config.features_dir = str(tmp_path / "feat")
    config.num_seeds = 2
    config.dfr.variants = ("paper_dfr",)
    config.dfr.paper.epochs = 20
    config.hsfm.update(support_per_class=4, hard_set_size=4, epochs=2, meta_steps=2, inner_steps=2)
    train.run(config, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(report["methods"]) >= {"erm", "paper_dfr", "hsfm", "hsfm_last"}
    for split in ("test", "test_ar"):
        categories = report["methods"]["hsfm"][split]["category_acc"]
        assert set(categories) == {"Easy", "Medium", "Hard"}
        assert all(0.0 <= v <= 1.0 for c in categories.values() for v in c["per_seed"])
    markdown = (tmp_path / "run" / "results.md").read_text()
    assert "## test: accuracy per category" in markdown
    assert "## test_ar: accuracy per category" in markdown
    assert "| method | Easy | Medium | Hard | overall |" in markdown
