"""The export entry point: a dataset x a frozen backbone -> a feature directory.

    python -m feature_export.export --dataset=digit_dominoes --backbone=digit_cnn --out=DIR \\
        [--data_dir=PATH] [--weights=PATH] [--random_init] [--device=cpu|cuda] \\
        [--batch_size=256] [--num_workers=0] [--dtype=float32|float16] \\
        [--dataset_arg key=value ...] [--backbone_arg key=value ...] [--force]

Writes the format of `hsfm_jax.data.features` (one place defines it) for every split of the dataset,
plus head.npz when the backbone has its own last layer for the dataset's classes.

Resumable and atomic. Each split is computed in chunks of rows; every finished chunk is saved at
once to `DIR/.partial-<split>/chunk-<i>.npy` (temp file + rename), so a killed export redoes at
most one chunk when rerun. When all chunks of a split exist they are assembled and the split is
written with `features.write_split` (a temp dir renamed into place). meta.json is written last,
and removed first when an export starts, so a directory is loadable only once complete.

meta.json carries `fingerprint`, a hash of (dataset fingerprint, backbone name, backbone weights
id, preprocessing, feature dtype). A directory whose meta.json has the same fingerprint is done
(`is_exported`); a different one is stale and is re-exported (the CLI and `export_features` say
so). The partial work dir records the fingerprint too, so chunks of another export are never
mixed in.

Datasets and backbones plug in through their registries (`feature_export.datasets`,
`feature_export.backbones`). The CLI passes each factory the keyword arguments it accepts:
`--data_dir` -> `data_dir`, `--weights` -> `weights`, `--random_init` -> `random_init`, the dataset
object itself -> `dataset` (for backbones that train on it, like digit_cnn), and any
`--dataset_arg` / `--backbone_arg key=value` (values parsed as Python literals when possible).
Passing a flag the factory does not take is an error, not silently ignored.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from feature_export import backbones, datasets
from feature_export.backbones.base import Backbone
from feature_export.datasets.base import ExportDataset
from hsfm_jax.data import features as feature_format
from hsfm_jax.runtime import ownership
from hsfm_jax.runtime.atomic import atomic_write

FINGERPRINT_KEY = "fingerprint"
_PARTIAL_PREFIX = ".partial-"
_FINGERPRINT_FILE = "fingerprint.txt"
_DTYPES = {"float32": np.float32, "float16": np.float16}


# ----------------------------------------------------------------------------- fingerprints


def export_fingerprint(
    dataset: ExportDataset, backbone: Backbone, *, dtype: str = "float32"
) -> str:
    """A short hash of everything the exported features depend on."""
    return _fingerprint(dataset.name, dataset.fingerprint(), backbone, dtype)


def _fingerprint(dataset_name: str, dataset_fingerprint: str, backbone: Backbone, dtype: str):
    parts = {
        "dataset": dataset_name,
        "dataset_fingerprint": dataset_fingerprint,
        "backbone": backbone.name,
        "weights_id": backbone.weights_id,
        "preprocessing": backbone.preprocessing,
        "dtype": dtype,
        "format_version": feature_format.FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _read_fingerprint(out_dir: Path) -> str | None:
    """The fingerprint in out_dir/meta.json, or None when there is no readable meta.json."""
    try:
        meta = json.loads((out_dir / feature_format.META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta.get(FINGERPRINT_KEY) if isinstance(meta, dict) else None


def _is_done(out_dir: Path, fingerprint: str, splits: Sequence[str]) -> bool:
    if _read_fingerprint(out_dir) != fingerprint:
        return False
    return all((out_dir / split / "features.npy").is_file() for split in splits)


def is_exported(
    out_dir: str | os.PathLike,
    dataset: ExportDataset,
    backbone: Backbone,
    *,
    dtype: str = "float32",
) -> bool:
    """True when out_dir holds a finished export of this dataset x backbone (same fingerprint)."""
    fingerprint = export_fingerprint(dataset, backbone, dtype=dtype)
    return _is_done(Path(out_dir), fingerprint, dataset.splits)


# ----------------------------------------------------------------------------- image loading


class _Images(torch.utils.data.Dataset):
    """Row i of a split -> (transformed image, i); errors come back as strings, not tracebacks."""

    def __init__(self, dataset: ExportDataset, split: str, transform: Callable, num_rows: int):
        self.dataset, self.split, self.transform = dataset, split, transform
        self.num_rows = num_rows

    def __len__(self):
        return self.num_rows

    def __getitem__(self, i: int):
        try:
            return self.transform(self.dataset.load_image(self.split, i)), i
        except (OSError, ValueError) as e:
            # Worker processes would wrap the exception in a multi-line traceback; carry the
            # one-line message to the main process instead and raise it there.
            return f"{type(e).__name__}: {e}", i


def _collate(items):
    for item, i in items:
        if isinstance(item, str):
            return item, i
    return torch.stack([item for item, _ in items]), torch.as_tensor([i for _, i in items])


# ----------------------------------------------------------------------------- export


def _chunk_path(work: Path, chunk: int) -> Path:
    return work / f"chunk-{chunk:05d}.npy"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array)


def _prepare_work_dir(out_dir: Path, split: str, fingerprint: str, chunk_size: int) -> Path:
    """`.partial-<split>/` for this export; chunks of another one (or chunk size) are discarded."""
    work = out_dir / f"{_PARTIAL_PREFIX}{split}"
    marker = work / _FINGERPRINT_FILE
    key = f"{fingerprint} chunk_size={chunk_size}"
    if work.exists() and (not marker.is_file() or marker.read_text().strip() != key):
        shutil.rmtree(work)
    if not work.exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-partial-{split}-", dir=out_dir))
        (tmp / _FINGERPRINT_FILE).write_text(key + "\n")
        os.replace(tmp, work)
    return work


def _export_split(
    dataset: ExportDataset,
    backbone: Backbone,
    split: str,
    work: Path,
    *,
    num_rows: int,
    chunk_size: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    dtype: np.dtype,
    show_progress: bool,
    on_chunk: Callable[[str, int], None] | None,
    multiprocessing_context: str | None,
) -> None:
    """Computes the chunks of `split` missing from `work`."""
    num_chunks = -(-num_rows // chunk_size)
    todo = [c for c in range(num_chunks) if not _chunk_path(work, c).is_file()]
    done_rows = num_rows - sum(min(chunk_size, num_rows - c * chunk_size) for c in todo)
    batches, batch_chunk = [], []
    for c in todo:
        for start in range(c * chunk_size, min((c + 1) * chunk_size, num_rows), batch_size):
            batches.append(
                list(range(start, min(start + batch_size, (c + 1) * chunk_size, num_rows)))
            )
            batch_chunk.append(c)
    if not batches:
        return
    loader = torch.utils.data.DataLoader(
        _Images(dataset, split, backbone.transform, num_rows),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        multiprocessing_context=multiprocessing_context if num_workers else None,
    )
    progress = tqdm(
        total=num_rows,
        initial=done_rows,
        desc=f"{dataset.name}/{split}",
        unit="img",
        disable=not show_progress,
    )
    pending: list[np.ndarray] = []
    with progress, torch.inference_mode():
        for batch_index, (images, rows) in enumerate(loader):
            if isinstance(images, str):
                raise ValueError(f"{dataset.name}/{split} row {int(rows)}: {images}")
            out = backbone.module(images.to(device, non_blocking=True))
            out = out.float().cpu().numpy()
            if out.shape != (len(rows), backbone.feature_dim):
                raise ValueError(
                    f"backbone {backbone.name}: output shape {out.shape}, expected "
                    f"({len(rows)}, {backbone.feature_dim})"
                )
            if not np.isfinite(out).all():
                bad = int(rows[np.flatnonzero(~np.isfinite(out).all(axis=1))[0]])
                raise ValueError(
                    f"backbone {backbone.name}: non-finite features at {split} row {bad}"
                )
            pending.append(out.astype(dtype))
            progress.update(len(rows))
            chunk = batch_chunk[batch_index]
            if batch_index + 1 == len(batches) or batch_chunk[batch_index + 1] != chunk:
                _save_atomic(_chunk_path(work, chunk), np.concatenate(pending))
                pending = []
                if on_chunk is not None:
                    on_chunk(split, chunk)


def _assemble(work: Path, num_rows: int, chunk_size: int, feature_dim: int, dtype) -> np.ndarray:
    """The chunks of a split as one (N, d) memmap in the work dir (bounded memory)."""
    path = work / "features-assembled.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(num_rows, feature_dim))
    for c in range(-(-num_rows // chunk_size)):
        chunk = np.load(_chunk_path(work, c), allow_pickle=False)
        start = c * chunk_size
        if chunk.shape != (min(chunk_size, num_rows - start), feature_dim):
            raise ValueError(
                f"{_chunk_path(work, c)}: unexpected shape {chunk.shape}; rerun the export"
            )
        out[start : start + len(chunk)] = chunk
    out.flush()
    return out


def export_features(
    dataset: ExportDataset,
    backbone: Backbone,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    chunk_size: int | None = None,
    show_progress: bool = True,
    force: bool = False,
    num_threads: int | None = None,
    on_chunk: Callable[[str, int], None] | None = None,
    multiprocessing_context: str | None = None,
) -> dict:
    """Exports every split of `dataset` through `backbone` into `out_dir`; returns meta.json.

    An export that is already done (same fingerprint) is left as is, unless `force`. A stale one
    (another fingerprint) is replaced. An interrupted one resumes from its saved chunks.

    Args:
      dataset: the images, labels and groups.
      backbone: the frozen feature extractor (its `head`, if any, becomes head.npz).
      out_dir: the feature directory (created).
      batch_size: images per forward pass.
      num_workers: DataLoader worker processes for image loading.
      device: torch device for the forward pass ("cpu", "cuda", "cuda:1").
      dtype: "float32" or "float16" features on disk.
      chunk_size: rows per resumable chunk (default 16 batches).
      show_progress: tqdm bars.
      force: redo even a finished export.
      num_threads: torch CPU threads during the export (restored after); None keeps torch's
        setting. 1 is much faster for small networks on a busy or small machine.
      on_chunk: called as on_chunk(split, chunk_index) after each chunk is saved (for tests and
        progress hooks; an exception there interrupts the export like a kill would).
      multiprocessing_context: of the DataLoader workers (default: fork). The exporter runs in
        its own process (`hsfm_jax.data.inputs` starts it as a subprocess); a caller that has other
        threads running, such as JAX's, passes "spawn".

    Raises:
      ValueError / FileNotFoundError: bad input (the message names the file, split and row).
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunk_size = chunk_size or 16 * batch_size
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_dir = Path(out_dir)
    ownership.check_ours(out_dir, ("features",), "--out")
    dataset_fingerprint = dataset.fingerprint()
    fingerprint = _fingerprint(dataset.name, dataset_fingerprint, backbone, dtype)
    if not force and _is_done(out_dir, fingerprint, dataset.splits):
        return json.loads((out_dir / feature_format.META_FILE).read_text())

    num_classes, num_groups = len(dataset.class_names), len(dataset.group_names)
    indices = {split: dataset.index(split) for split in dataset.splits}
    for split, index in indices.items():
        _check_index(dataset.name, split, index, num_classes, num_groups)
    if backbone.head is not None:
        weight, bias = backbone.head
        if weight.shape != (num_classes, backbone.feature_dim) or bias.shape != (num_classes,):
            raise ValueError(
                f"backbone {backbone.name}: head has shapes {weight.shape}, {bias.shape}; "
                f"dataset {dataset.name} needs ({num_classes}, {backbone.feature_dim}), ({num_classes},)"
            )

    feature_format.mark_features(out_dir, "export")
    (out_dir / feature_format.META_FILE).unlink(missing_ok=True)  # invalid until the end
    (out_dir / feature_format.HEAD_FILE).unlink(missing_ok=True)
    for leftover in out_dir.glob(".tmp-*"):  # from writes killed halfway (never read)
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _export(
            dataset,
            backbone,
            out_dir,
            indices=indices,
            fingerprint=fingerprint,
            dataset_fingerprint=dataset_fingerprint,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            dtype=dtype,
            chunk_size=chunk_size,
            show_progress=show_progress,
            on_chunk=on_chunk,
            multiprocessing_context=multiprocessing_context,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _export(
    dataset: ExportDataset,
    backbone: Backbone,
    out_dir: Path,
    *,
    indices: dict,
    fingerprint: str,
    dataset_fingerprint: str,
    batch_size: int,
    num_workers: int,
    device: str,
    dtype: str,
    chunk_size: int,
    show_progress: bool,
    on_chunk: Callable[[str, int], None] | None,
    multiprocessing_context: str | None,
) -> dict:
    torch_device = torch.device(device)
    module = backbone.module.to(torch_device).eval()
    backbone = dataclasses.replace(backbone, module=module)
    start_time = time.perf_counter()
    works = {}
    for split, index in indices.items():
        work = works[split] = _prepare_work_dir(out_dir, split, fingerprint, chunk_size)
        _export_split(
            dataset,
            backbone,
            split,
            work,
            num_rows=len(index.ids),
            chunk_size=chunk_size,
            batch_size=batch_size,
            num_workers=num_workers,
            device=torch_device,
            dtype=np.dtype(_DTYPES[dtype]),
            show_progress=show_progress,
            on_chunk=on_chunk,
            multiprocessing_context=multiprocessing_context,
        )
        features = _assemble(work, len(index.ids), chunk_size, backbone.feature_dim, _DTYPES[dtype])
        feature_format.write_split(out_dir, split, features, index.labels, index.groups, index.ids)
        del features
    if backbone.head is not None:
        feature_format.write_head(out_dir, *backbone.head)
    meta = feature_format.make_meta(
        dataset=dataset.name,
        backbone=backbone.name,
        class_names=dataset.class_names,
        group_names=dataset.group_names,
        feature_dim=backbone.feature_dim,
        split_sizes={split: len(index.ids) for split, index in indices.items()},
        preprocessing=backbone.preprocessing,
        fingerprint=fingerprint,
        dataset_fingerprint=dataset_fingerprint,
        weights_id=backbone.weights_id,
        feature_dtype=dtype,
        export_seconds=round(time.perf_counter() - start_time, 3),
        **dataset.describe(),
    )
    feature_format.write_meta(out_dir, meta)
    for work in works.values():
        shutil.rmtree(work, ignore_errors=True)
    return meta


def _check_index(name: str, split: str, index, num_classes: int, num_groups: int) -> None:
    labels, groups = np.asarray(index.labels), np.asarray(index.groups)
    if len(labels) == 0:
        raise ValueError(f"{name}/{split}: split is empty")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(
            f"{name}/{split} row {bad[0]} ({index.ids[bad[0]]}): label {labels[bad[0]]} "
            f"out of range [0, {num_classes})"
        )
    bad = np.flatnonzero((groups < -1) | (groups >= max(num_groups, 0)))
    if bad.size:
        raise ValueError(
            f"{name}/{split} row {bad[0]} ({index.ids[bad[0]]}): group {groups[bad[0]]} "
            f"out of range [-1, {num_groups})"
        )


# ----------------------------------------------------------------------------- CLI


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_kwargs(pairs: Sequence[str], flag: str) -> dict:
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--{flag} expects key=value, got {pair!r}")
        kwargs[key] = _parse_value(value)
    return kwargs


def call_factory(kind: str, name: str, factory: Callable, kwargs: dict, optional: dict):
    """Calls a registry factory with `kwargs` (all must be accepted) and the `optional` ones it takes."""
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = {k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    for key in kwargs:
        if not takes_any and key not in accepted:
            raise ValueError(
                f"{kind} {name!r} takes no argument {key!r}; it takes {sorted(accepted) or 'none'}"
            )
    extra = {k: v for k, v in optional.items() if takes_any or k in accepted}
    return factory(**extra, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m feature_export.export",
        description="Export frozen-backbone features of a dataset to a feature directory.",
    )
    parser.add_argument("--dataset", required=True, help=f"one of {datasets.names()}")
    parser.add_argument("--backbone", required=True, help=f"one of {backbones.names()}")
    parser.add_argument("--out", required=True, help="the feature directory to write")
    parser.add_argument("--data_dir", help="the dataset's local directory (published layout)")
    parser.add_argument("--weights", help="backbone weights file")
    parser.add_argument("--random_init", action="store_true", help="random backbone (tests only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=sorted(_DTYPES))
    parser.add_argument("--num_threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--chunk_size", type=int, default=None, help="rows per resumable chunk")
    parser.add_argument(
        "--dataset_arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra keyword argument of the dataset factory (repeatable)",
    )
    parser.add_argument(
        "--backbone_arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra keyword argument of the backbone factory (repeatable)",
    )
    parser.add_argument(
        "--source",
        default=None,
        help="where the dataset is read from, e.g. 'tfds' (dataset_arg source)",
    )
    parser.add_argument(
        "--tfds_data_dir", default=None, help="local TFDS data_dir (with --source=tfds)"
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="mixed-precision forward pass (fp16 on CUDA, bf16 on CPU)",
    )
    parser.add_argument("--force", action="store_true", help="redo even a finished export")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def build_dataset(name: str, data_dir: str | None, dataset_args: Sequence[str], **extra):
    """The dataset `name` from CLI-style arguments (shared by export and train_erm)."""
    kwargs = parse_kwargs(dataset_args, "dataset_arg")
    kwargs.update({k: v for k, v in extra.items() if v is not None})
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    return call_factory("dataset", name, datasets.factory(name), kwargs, {})


class _Autocast(torch.nn.Module):
    """Runs a module under torch.autocast (float16 on CUDA, bfloat16 on CPU); float32 out."""

    def __init__(self, module: torch.nn.Module, device_type: str):
        super().__init__()
        self.module, self.device_type = module, device_type
        self.dtype = torch.float16 if device_type == "cuda" else torch.bfloat16

    def forward(self, images):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.module(images).float()


def with_mixed_precision(backbone: Backbone, device: str) -> Backbone:
    """The backbone run under autocast; recorded in its preprocessing (so in the fingerprint)."""
    wrapped = _Autocast(backbone.module, torch.device(device).type)
    note = f"; forward pass in mixed precision ({str(wrapped.dtype).removeprefix('torch.')})"
    return dataclasses.replace(
        backbone, module=wrapped, preprocessing=backbone.preprocessing + note
    )


def check_out(out: str, inputs: dict[str, str | None]) -> None:
    """--out must be a new or empty directory or a feature directory hsfm_jax wrote, apart from
    every input path (`inputs`: {flag: path}); checked before anything is built or read."""
    ownership.check_ours(out, ("features",), "--out")
    ownership.check_apart(out, "--out", **{k: v for k, v in inputs.items() if v})


def run(args: argparse.Namespace) -> dict:
    """Builds the dataset and the backbone from parsed flags and exports."""
    check_out(
        args.out,
        {
            "--data_dir": args.data_dir,
            "--tfds_data_dir": args.tfds_data_dir,
            "--weights": args.weights,
        },
    )
    dataset = build_dataset(
        args.dataset,
        args.data_dir,
        args.dataset_arg,
        source=args.source,
        tfds_data_dir=args.tfds_data_dir,
    )
    backbone_kwargs = parse_kwargs(args.backbone_arg, "backbone_arg")
    if args.weights is not None:
        backbone_kwargs["weights"] = args.weights
    if args.random_init:
        backbone_kwargs["random_init"] = True
    backbone = call_factory(
        "backbone",
        args.backbone,
        backbones.factory(args.backbone),
        backbone_kwargs,
        {"dataset": dataset},
    )
    if args.amp:
        backbone = with_mixed_precision(backbone, args.device)
    out_dir = Path(args.out)
    previous = _read_fingerprint(out_dir)
    expected = export_fingerprint(dataset, backbone, dtype=args.dtype)
    if previous is not None and previous != expected:
        print(f"{out_dir}: stale export (fingerprint {previous}, now {expected}); re-exporting")
    elif previous == expected and not args.force:
        print(f"{out_dir}: already exported (fingerprint {expected}); --force to redo")
    return export_features(
        dataset,
        backbone,
        out_dir,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        dtype=args.dtype,
        chunk_size=args.chunk_size,
        show_progress=not args.quiet,
        force=args.force,
        num_threads=args.num_threads,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        meta = run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 1
    sizes = ", ".join(f"{k} {v}" for k, v in meta["splits"].items())
    print(
        f"{args.out}: {meta['dataset']} x {meta['backbone']}, d={meta['feature_dim']}, {sizes} "
        f"(fingerprint {meta[FINGERPRINT_KEY]}, {time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
