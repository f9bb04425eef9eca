"""The on-disk feature format: one place that reads, validates and writes it.

A feature directory holds the frozen-backbone features of one dataset x backbone::

    meta.json              {"format_version": 1, "dataset", "backbone", "num_classes",
                            "num_groups", "class_names", "group_names", "feature_dim",
                            "splits": {"train": N_train, "val": N_val, "test": N_test},
                            "preprocessing"}
    <split>/features.npy   (N, d) float32 or float16, loadable with mmap_mode="r"
    <split>/labels.npy     (N,) int, in [0, C)
    <split>/groups.npy     (N,) int, in [0, G), or -1 where the group is unknown
    <split>/ids.txt        optional: one id or image path per row
    head.npz               optional: weight (C, d), bias (C,), the backbone's own last layer

Datasets without groups (fine-grained sets) have ``num_groups == 0`` and groups all -1.
Two-attribute datasets use ``group = label * num_spurious_values + spurious_value``
(Waterbirds: ``2 * y + place``).

Every check raises ``FileNotFoundError`` or ``ValueError`` naming the file and the problem,
so a bad directory never reaches JAX.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from hsfm_jax.data import buckets
from hsfm_jax.runtime import atomic, ownership
from hsfm_jax.runtime.atomic import atomic_write

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
META_FILE = "meta.json"
HEAD_FILE = "head.npz"
_META_KEYS = (
    "format_version",
    "dataset",
    "backbone",
    "num_classes",
    "num_groups",
    "class_names",
    "group_names",
    "feature_dim",
    "splits",
    "preprocessing",
)
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
# Elements per chunk of the finite check (64 MiB as float32): a split larger than memory is
# checked through its memmap without holding more than a few chunks.
_FINITE_CHECK_ELEMENTS = 2**24


def to_device(values, dtype) -> jax.Array:
    """A host array on the device as `dtype`: cast by NumPy, then one transfer.

    ``jnp.asarray`` of a NumPy array compiles a small conversion program for each new shape and
    dtype, about 15 ms apiece in a fresh process: most of what a warm method spent outside its
    own compiled program (measured on AFR's entry point, 2-core CPU).
    """
    return jax.device_put(np.asarray(values, dtype))


@dataclasses.dataclass(frozen=True)
class Split:
    """One split on the host.

    Attributes:
      features: (N, d) float32 or float16 (possibly a read-only memmap).
      labels: (N,) int32 in [0, C).
      groups: (N,) int32 in [0, G), or -1 where unknown.
      ids: optional list of N strings (image ids or paths).
      dtype: the float dtype the methods compute in; `to_arrays` casts the features to it
        (`with_dtype` sets it for a whole feature set).
      row_buckets: whether `to_arrays` pads the rows to their bucket (`hsfm_jax.data.buckets`;
        `with_row_buckets` sets it for a whole feature set).
    """

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    ids: list[str] | None = None
    dtype: np.dtype = np.dtype(np.float32)
    row_buckets: bool = False

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def has_groups(self) -> bool:
        return bool(self.groups.size) and bool(np.all(self.groups >= 0))

    @property
    def num_rows(self) -> int:
        """The rows `to_arrays` sends: `num_examples`, or its bucket with `row_buckets`."""
        n = self.num_examples
        return buckets.rows(n) if self.row_buckets else n

    def to_arrays(self, dtype=None) -> SplitArrays:
        """Device arrays for jitted code, features cast to the split's `dtype` (or `dtype`);
        `num_rows` rows, the padding ones with label -1 (`hsfm_jax.data.buckets`)."""
        features, labels, groups = buckets.pad(
            np.asarray(self.features, self.dtype if dtype is None else dtype),
            np.asarray(self.labels, np.int32),
            np.asarray(self.groups, np.int32),
            self.num_rows,
        )
        return SplitArrays(
            features=jax.device_put(features),
            labels=jax.device_put(labels),
            groups=jax.device_put(groups),
        )


class SplitArrays(struct.PyTreeNode):
    """A split as a pytree of device arrays, passed whole into jitted functions.

    Attributes:
      features: (N, d) float.
      labels: (N,) int32.
      groups: (N,) int32, -1 where unknown.
    """

    features: jnp.ndarray
    labels: jnp.ndarray
    groups: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """A validated feature set: a feature directory (`load`) or arrays (`from_arrays`, whose
    ``path`` is ``<arrays>``)."""

    path: Path
    meta: dict
    splits: dict[str, Split]
    head_weight: np.ndarray | None = None  # (C, d)
    head_bias: np.ndarray | None = None  # (C,)

    @classmethod
    def from_arrays(
        cls,
        *,
        train: Sequence,
        val: Sequence,
        test: Sequence,
        class_names: Sequence[str] | None = None,
        group_names: Sequence[str] | None = None,
        dataset: str = "arrays",
        backbone: str = "arrays",
    ) -> FeatureSet:
        """A feature set from (features, labels[, groups]) arrays per split (`from_arrays`)."""
        return from_arrays(
            train=train,
            val=val,
            test=test,
            class_names=class_names,
            group_names=group_names,
            dataset=dataset,
            backbone=backbone,
        )

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def num_groups(self) -> int:
        return int(self.meta["num_groups"])

    @property
    def feature_dim(self) -> int:
        return int(self.meta["feature_dim"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def group_names(self) -> list[str]:
        return list(self.meta["group_names"])

    @property
    def group_labels(self) -> str:
        """The group labels methods may read: "all", or "none" when `without_group_labels` removed them (the label-free track)."""
        return self.meta.get("group_labels", "all")

    @property
    def has_head(self) -> bool:
        return self.head_weight is not None

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def val(self) -> Split:
        return self.splits["val"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    @property
    def dtype(self) -> np.dtype:
        """The float dtype every method computes in (arrays, scalers, rates, heads): float32
        unless `with_dtype` set another."""
        return self.train.dtype

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise KeyError(f"{self.path}: no split {split!r}; loaded {sorted(self.splits)}")
        return self.splits[split]

    def train_group_counts(self) -> np.ndarray:
        """(G,) number of train examples per group (zeros when groups are unknown)."""
        groups = self.train.groups
        return np.bincount(groups[groups >= 0], minlength=self.num_groups)[: self.num_groups]


def without_group_labels(data: FeatureSet) -> FeatureSet:
    """`data` with no group label left: every split's groups -1, ``num_groups`` 0, marked
    ``group_labels="none"`` (so "auto" settings resolve to their label-free choices).

    What every method receives under ``config.group_labels="none"``: none of them can read a group
    label, of any split (`hsfm_jax.runtime.experiment` reports test metrics from the original data).
    """
    splits = {
        name: dataclasses.replace(split, groups=np.full_like(split.groups, -1))
        for name, split in data.splits.items()
    }
    meta = {**data.meta, "num_groups": 0, "group_names": [], "group_labels": "none"}
    return dataclasses.replace(data, meta=meta, splits=splits)


COMPUTE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def with_dtype(data: FeatureSet, dtype) -> FeatureSet:
    """`data` whose methods compute in `dtype` (float32 or float64: the config's ``float64``).

    float64 needs ``jax_enable_x64`` on (JAX would silently compute in float32 otherwise).
    """
    dtype = np.dtype(dtype)
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype must be float32 or float64, got {dtype}")
    if dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError("float64 needs jax_enable_x64 on (config.float64=True sets it)")
    splits = {name: dataclasses.replace(s, dtype=dtype) for name, s in data.splits.items()}
    return dataclasses.replace(data, splits=splits)


def with_row_buckets(data: FeatureSet, on: bool = True) -> FeatureSet:
    """`data` whose splits go on the device padded to their row bucket (`hsfm_jax.data.buckets`:
    a dataset of other split sizes in the same buckets reuses every compiled program)."""
    splits = {name: dataclasses.replace(s, row_buckets=bool(on)) for name, s in data.splits.items()}
    return dataclasses.replace(data, splits=splits)


def split_by_class(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Splits rows in two, stratified by class: (first, second), `first` ~ `fraction` of each class.

    Used for protocols that fit on one part of val and select models on the other (HSFM's
    fine-grained protocol splits val 50/50). Deterministic given `seed`.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    first = []
    for c in np.unique(split.labels):
        rows = rng.permutation(np.flatnonzero(split.labels == c))
        first.append(rows[: int(round(fraction * rows.size))])
    mask = np.zeros(split.num_examples, bool)
    mask[np.concatenate(first)] = True

    def take(rows):
        ids = None if split.ids is None else [split.ids[i] for i in rows]
        return dataclasses.replace(
            split,
            features=np.asarray(split.features[rows]),
            labels=split.labels[rows],
            groups=split.groups[rows],
            ids=ids,
        )

    return take(np.flatnonzero(mask)), take(np.flatnonzero(~mask))


def with_splits(data: FeatureSet, **splits: Split) -> FeatureSet:
    """A copy of `data` with splits replaced or added (meta's split sizes updated)."""
    new = {**data.splits, **splits}
    meta = {**data.meta, "splits": {name: s.num_examples for name, s in new.items()}}
    return dataclasses.replace(data, splits=new, meta=meta)


def _visible_files(path: Path) -> list[Path]:
    """Every file under `path` a loader may read, following symlinked directories (each real
    directory once), without hidden entries (temporaries, markers, locks)."""
    files, seen = [], set()
    for root, dirs, names in os.walk(path, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root, n) for n in sorted(names) if not n.startswith(".")]
    return files


def fingerprint(path: str | os.PathLike) -> str:
    """Identifies the files of a feature directory: meta.json's bytes and, for every other file
    (through symlinks: split directories may link elsewhere), its resolved path, size,
    modification time and inode; regenerated or relinked features get another fingerprint."""
    path = Path(path)
    digest = hashlib.sha256((path / META_FILE).read_bytes())
    for file in _visible_files(path):
        if file == path / META_FILE:
            continue
        stat = file.stat()
        digest.update(
            f"{file.relative_to(path)}>{os.path.realpath(file)}:{stat.st_size}:"
            f"{stat.st_mtime_ns}:{stat.st_ino};".encode()
        )
    return digest.hexdigest()[:16]


def split_validation(data: FeatureSet, fraction: float, seed: int) -> FeatureSet:
    """With `fraction` > 0, val becomes two class-stratified parts (`split_by_class`).

    `val` keeps the first part (HSFM's hard set, DFR's fitting data); the new `select` split holds
    the rest and is where every method's model selection and reported val metrics happen.
    """
    if not fraction:
        return data
    fit, select = split_by_class(data.val, fraction, seed)
    for name, part in (("fitting", fit), ("selection", select)):
        if part.num_examples == 0:
            raise ValueError(
                f"val_split.fraction={fraction} leaves the {name} part of {data.path}/val "
                f"({data.val.num_examples} examples) empty"
            )
    return with_splits(data, val=fit, select=select)


# ----------------------------------------------------------------------------- reading


def _read_meta(path: Path) -> dict:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: missing (is {path} a feature directory?)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{meta_path}: nested too deeply to be a meta.json") from None
    return check_meta(meta, meta_path)


def check_meta(meta, where: str | Path) -> dict:
    """Checks a meta dict (`make_meta`); errors name `where` (meta.json's path)."""
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{where}: unknown format_version {meta['format_version']!r} "
            f"(this hsfm_jax reads {FORMAT_VERSION})"
        )
    for key in ("num_classes", "num_groups", "feature_dim"):
        value = meta[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{where}: field {key!r} must be a non-negative int, got {value!r}")
    if meta["num_classes"] < 2:
        raise ValueError(f"{where}: num_classes must be >= 2, got {meta['num_classes']}")
    if meta["feature_dim"] < 1:
        raise ValueError(f"{where}: feature_dim must be >= 1, got {meta['feature_dim']}")
    if len(meta["class_names"]) != meta["num_classes"]:
        raise ValueError(
            f"{where}: class_names has {len(meta['class_names'])} entries, "
            f"num_classes is {meta['num_classes']}"
        )
    if len(meta["group_names"]) != meta["num_groups"]:
        raise ValueError(
            f"{where}: group_names has {len(meta['group_names'])} entries, "
            f"num_groups is {meta['num_groups']}"
        )
    if not isinstance(meta["splits"], dict):
        raise ValueError(f"{where}: field 'splits' must map split name to size")
    return meta


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from None


def _check_int_vector(path: Path, values: np.ndarray, n: int, low: int, high: int, what: str):
    if values.ndim != 1 or values.shape[0] != n:
        raise ValueError(f"{path}: expected shape ({n},), got {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{path}: expected integer {what}, got dtype {values.dtype}")
    if n and (values.min() < low or values.max() >= high):
        bad = int(np.flatnonzero((values < low) | (values >= high))[0])
        raise ValueError(
            f"{path}: {what} out of range [{low}, {high}) at row {bad}: {int(values[bad])}"
        )


def max_abs_feature(dim: int) -> float:
    """The largest |feature| whose row's squared norm (over `dim` entries) stays finite in
    float32: larger values overflow the products every method computes (logits, H H^T)."""
    return float(np.sqrt(np.finfo(np.float32).max / max(dim, 1)))


def _check_finite(path: Path, features: np.ndarray):
    limit = max_abs_feature(features.shape[1])
    chunk_rows = max(1, _FINITE_CHECK_ELEMENTS // max(features.shape[1], 1))
    if features.dtype == np.float16 and limit >= float(np.finfo(np.float16).max):
        _check_finite_float16(path, features, chunk_rows)
        return
    for start in range(0, features.shape[0], chunk_rows):
        chunk = np.asarray(features[start : start + chunk_rows], np.float32)
        finite = np.isfinite(chunk)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite.all(axis=1))[0])
            raise ValueError(f"{path}: non-finite value (NaN or inf) in row {row}")
        too_large = np.abs(chunk) > limit
        if too_large.any():
            row, column = np.argwhere(too_large)[0]
            raise ValueError(
                f"{path}: |value| {abs(chunk[row, column]):.3g} in column {column} (row "
                f"{start + row}) exceeds {limit:.3g}, where float32 products overflow; "
                "rescale the features"
            )


def _check_finite_float16(path: Path, features: np.ndarray, chunk_rows: int):
    """float16 features: every finite value is below the overflow limit, so only finiteness is
    checked, on the bits (exponent all ones: inf or NaN) without casting a chunk to float."""
    for start in range(0, features.shape[0], chunk_rows):
        bits = np.asarray(features[start : start + chunk_rows]).view(np.uint16)
        bad = (bits & 0x7C00) == 0x7C00
        if bad.any():
            row = start + int(np.flatnonzero(bad.any(axis=1))[0])
            raise ValueError(f"{path}: non-finite value (NaN or inf) in row {row}")


def _load_split(path: Path, name: str, meta: dict, mmap: bool) -> Split:
    split_dir = path / name
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: missing split directory {name!r}")
    features = _load_array(split_dir / "features.npy", mmap)
    labels = np.asarray(_load_array(split_dir / "labels.npy", mmap=False))
    groups = np.asarray(_load_array(split_dir / "groups.npy", mmap=False))
    ids = None
    ids_path = split_dir / "ids.txt"
    if ids_path.is_file():
        ids = ids_path.read_text().splitlines()
    return check_split(
        name, features, labels, groups, ids, meta, where=lambda file: split_dir / file
    )


def check_split(
    name: str,
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    ids: Sequence[str] | None,
    meta: dict,
    *,
    where: Callable[[str], str | Path],
    sizes_from: str = "meta.json",
) -> Split:
    """Checks one split against `meta` (shapes, dtypes, finite features, label and group ranges)
    and returns it; errors name ``where(<file name>)``, e.g. ``<dir>/train/groups.npy``."""
    n = meta["splits"][name]
    d, num_classes, num_groups = meta["feature_dim"], meta["num_classes"], meta["num_groups"]

    features_path = where("features.npy")
    if features.ndim != 2 or features.shape != (n, d):
        raise ValueError(
            f"{features_path}: expected shape ({n}, {d}) from {sizes_from}, got {features.shape}"
        )
    if features.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{features_path}: expected float32 or float16, got {features.dtype}")
    _check_finite(features_path, features)
    _check_int_vector(where("labels.npy"), labels, n, 0, num_classes, "labels")
    _check_int_vector(where("groups.npy"), groups, n, -1, max(num_groups, 0), "groups")
    if ids is not None and len(ids) != n:
        raise ValueError(f"{where('ids.txt')}: expected {n} lines, got {len(ids)}")
    ids = None if ids is None else list(ids)
    return Split(features, labels.astype(np.int32), groups.astype(np.int32), ids)


_ARRAY_NAMES = {"features.npy": "features", "labels.npy": "labels", "groups.npy": "groups"}


def from_arrays(
    *,
    train: Sequence,
    val: Sequence,
    test: Sequence,
    class_names: Sequence[str] | None = None,
    group_names: Sequence[str] | None = None,
    dataset: str = "arrays",
    backbone: str = "arrays",
) -> FeatureSet:
    """A feature set from in-memory arrays, checked as `load` checks a directory.

    Args:
      train, val, test: ``(features, labels)`` or ``(features, labels, groups)``: features
        (N, d) float (cast to float32 unless float16, as `save` writes them), labels (N,) int in
        [0, C), groups (N,) int in [0, G) or -1 where unknown (all -1 when left out).
      class_names: C names; default ``class 0`` ... for C = 1 + the largest train label.
      group_names: G names; default ``group 0`` ... for G = 1 + the largest train group (0 when
        no train row has a group). Val and test labels and groups must lie in these ranges.
      dataset, backbone: names for the results' title.

    Raises:
      ValueError: a shape, dtype or value is wrong; the message names the split and array
        (``val groups: groups out of range [-1, 4) at row 7: 5``).
    """
    given = {"train": train, "val": val, "test": test}
    arrays = {}
    for name, value in given.items():
        if not isinstance(value, Sequence) or len(value) not in (2, 3):
            raise ValueError(
                f"{name}: expected (features, labels) or (features, labels, groups), "
                f"got {type(value).__name__}"
            )
        features = np.asarray(value[0])
        if features.dtype not in _FLOAT_DTYPES:
            features = features.astype(np.float32)
        labels = np.asarray(value[1])
        groups = np.asarray(value[2]) if len(value) == 3 else np.full(labels.shape, -1, np.int32)
        arrays[name] = (features, labels, groups)
    train_features, train_labels, train_groups = arrays["train"]
    if train_features.ndim != 2:
        raise ValueError(f"train features: expected shape (N, d), got {train_features.shape}")

    def count(values) -> int:
        ints = np.issubdtype(values.dtype, np.integer) and values.ndim == 1 and values.size
        return int(values.max()) + 1 if ints else 0

    if class_names is None:
        class_names = [f"class {i}" for i in range(count(train_labels))]
    if group_names is None:
        group_names = [f"group {i}" for i in range(max(count(train_groups), 0))]
    meta = make_meta(
        dataset=dataset,
        backbone=backbone,
        class_names=[str(c) for c in class_names],
        group_names=[str(g) for g in group_names],
        feature_dim=train_features.shape[1],
        split_sizes={name: len(features) for name, (features, _, _) in arrays.items()},
        preprocessing="",
    )
    check_meta(meta, "from_arrays")
    splits = {
        name: check_split(
            name,
            *arrays[name],
            None,
            meta,
            where=lambda file, name=name: f"{name} {_ARRAY_NAMES[file]}",
            sizes_from="its rows and train's columns",
        )
        for name in given
    }
    return FeatureSet(Path("<arrays>"), meta, splits)


def load(
    path: str | os.PathLike, *, splits: Sequence[str] = SPLITS, mmap: bool = True
) -> FeatureSet:
    """Loads and validates a feature directory.

    Args:
      path: the feature directory.
      splits: which splits to load; each must be listed in meta.json.
      mmap: memory-map features (they are read once to check they are finite).

    Returns:
      A `FeatureSet`.

    Raises:
      FileNotFoundError: the directory, meta.json, a split or one of its files is missing.
      ValueError: any field, shape, dtype or value is wrong; the message names the file.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: feature directory does not exist")
    meta = _read_meta(path)
    for name in splits:
        if name not in meta["splits"]:
            raise ValueError(
                f"{path / META_FILE}: split {name!r} not listed in 'splits' "
                f"(has {sorted(meta['splits'])})"
            )
    loaded = {name: _load_split(path, name, meta, mmap) for name in splits}

    head_weight = head_bias = None
    head_path = path / HEAD_FILE
    if head_path.is_file():
        head_weight, head_bias = _load_head(head_path, meta)
    return FeatureSet(path, meta, loaded, head_weight, head_bias)


def _load_head(head_path: Path, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(head_path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            if "weight" not in npz or "bias" not in npz:
                raise ValueError(f"{head_path}: needs arrays 'weight' and 'bias', has {npz.files}")
            weight = np.asarray(npz["weight"], np.float32)
            bias = np.asarray(npz["bias"], np.float32)
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        if str(e).startswith(f"{head_path}:"):
            raise
        raise ValueError(f"{head_path}: not a readable .npz ({_first_line(e)})") from None
    c, d = meta["num_classes"], meta["feature_dim"]
    if weight.shape != (c, d):
        raise ValueError(f"{head_path}: weight must have shape ({c}, {d}), got {weight.shape}")
    if bias.shape != (c,):
        raise ValueError(f"{head_path}: bias must have shape ({c},), got {bias.shape}")
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise ValueError(f"{head_path}: non-finite values in the head")
    return weight, bias


# ----------------------------------------------------------------------------- writing


def mark_features(path: Path, made_by: str) -> None:
    """Creates feature directory `path` as hsfm_jax's (marker: kind "features", `made_by`), or
    checks that the existing one is. A directory that already has a marker keeps it."""
    ownership.check_ours(path, ("features",), "feature directory")
    path.mkdir(parents=True, exist_ok=True)
    if ownership.read(path) is None:
        ownership.mark(path, "features", made_by=made_by)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _atomic_replace_dir(tmp: Path, final: Path) -> None:
    """Moves `tmp` to `final`; an existing `final` is replaced only when it is a split directory
    hsfm_jax wrote (`ownership`), else `tmp` is removed and nothing else is touched."""
    if os.path.lexists(final):
        try:
            ownership.check_ours(final, ("split",), "split directory")
        except ValueError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        aside = final.with_name(f".tmp-old-{final.name}-{tmp.name}")
        os.rename(final, aside)
        os.rename(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
        return
    os.replace(tmp, final)


def write_split(
    path: str | os.PathLike,
    name: str,
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    ids: Sequence[str] | None = None,
) -> None:
    """Writes `<path>/<name>/` atomically: a temp dir renamed into place.

    A killed writer leaves at most a `.tmp-*` directory, which `load` never reads.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    features = np.asarray(features)
    if features.dtype not in _FLOAT_DTYPES:
        features = features.astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=path))
    atomic.chmod_as_umask(tmp, 0o777)
    ownership.mark(tmp, "split")
    np.save(tmp / "features.npy", features)
    np.save(tmp / "labels.npy", np.asarray(labels, np.int64))
    np.save(tmp / "groups.npy", np.asarray(groups, np.int64))
    if ids is not None:
        (tmp / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
    _atomic_replace_dir(tmp, path / name)


def write_head(path: str | os.PathLike, weight: np.ndarray, bias: np.ndarray) -> None:
    """Writes head.npz (weight (C, d), bias (C,)) atomically."""
    with atomic_write(Path(path) / HEAD_FILE) as f:
        np.savez(f, weight=np.asarray(weight, np.float32), bias=np.asarray(bias, np.float32))


def make_meta(
    *,
    dataset: str,
    backbone: str,
    class_names: Sequence[str],
    group_names: Sequence[str],
    feature_dim: int,
    split_sizes: Mapping[str, int],
    preprocessing: str,
    **extra,
) -> dict:
    """Builds a meta.json dict; `extra` keys (fingerprints, seeds, notes) are kept."""
    return {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "backbone": backbone,
        "num_classes": len(class_names),
        "num_groups": len(group_names),
        "class_names": list(class_names),
        "group_names": list(group_names),
        "feature_dim": int(feature_dim),
        "splits": {k: int(v) for k, v in split_sizes.items()},
        "preprocessing": preprocessing,
        **extra,
    }


def write_meta(path: str | os.PathLike, meta: dict) -> None:
    """Writes meta.json atomically. Write it last: a directory without it never loads."""
    with atomic_write(Path(path) / META_FILE, "w") as f:
        json.dump(meta, f, indent=2)


def save(
    path: str | os.PathLike,
    *,
    splits: Mapping[str, Split],
    head: tuple[np.ndarray, np.ndarray] | None = None,
    made_by: str = "features.save",
    **meta_fields,
) -> dict:
    """Writes a whole feature directory (splits, optional head, then meta.json last).

    `meta_fields` are `make_meta`'s (dataset, backbone, class_names, group_names, preprocessing
    and any extra field); feature_dim and the split sizes come from `splits`. `path` must be
    missing, empty or a feature directory hsfm_jax wrote (`ownership`); a new one is marked as
    made by `made_by`. Returns the meta dict written.
    """
    path = Path(path)
    mark_features(path, made_by)
    if (path / META_FILE).exists():
        (path / META_FILE).unlink()  # the directory is invalid until the new meta lands
    dims = {s.features.shape[1] for s in splits.values()}
    if len(dims) != 1:
        raise ValueError(f"{path}: splits disagree on feature_dim: {sorted(dims)}")
    for name, split in splits.items():
        write_split(path, name, split.features, split.labels, split.groups, split.ids)
    if head is not None:
        write_head(path, *head)
    meta = make_meta(
        feature_dim=dims.pop(),
        split_sizes={name: s.num_examples for name, s in splits.items()},
        **meta_fields,
    )
    write_meta(path, meta)
    return meta
