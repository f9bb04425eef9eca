"""Writing a TFDS data dir offline, from the original files TFDS would download.

    python -m feature_export.datasets.tfds_prepare --dataset=fashion_mnist \\
        --files=/usr/share/datasets/fashion-mnist --tfds_data_dir=~/tensorflow_datasets

TFDS's own builder prepares the dataset (`tfds.builder(name).download_and_prepare`, as `tfds
build` does), given a manual_dir holding the files it registers for the dataset's URLs
(`builder.url_infos`): its download manager takes each from there instead of the network and
checks it against the registered sha256, so the data dir is the one `tfds build` writes. Any
dataset whose registered files carry a file name works; the Dominoes builder reads three:

    mnist          train-images-idx3-ubyte.gz, ... (4 idx files)
    fashion_mnist  the same 4 names (Fashion-MNIST's idx files)
    cifar10        cifar-10-binary.tar.gz (the binary version, not the python pickles)

Debian's `dataset-fashion-mnist` ships Fashion-MNIST's files with the gzip header normalised
(strip-nondeterminism: the file name dropped, the mtime fixed) and the deflate stream as
released: `restore_gzip_header` puts the released header back (`RELEASED_GZIP_MTIMES`, read
from the files in github.com/zalandoresearch/fashion-mnist), which gives TFDS's registered
checksums byte for byte. A file that matches neither way is refused before TFDS runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import sys
import tempfile
from pathlib import Path

# TFDS name -> {file name: the gzip mtime of the released file}. Each header was
# 1f8b 08 08 <mtime> 00 03 <name without .gz> 00.
RELEASED_GZIP_MTIMES: dict[str, dict[str, int]] = {
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": 0x59A7E9DE,
        "train-labels-idx1-ubyte.gz": 0x59A7E9DE,
        "t10k-images-idx3-ubyte.gz": 0x59A7E9F3,
        "t10k-labels-idx1-ubyte.gz": 0x59A7E9F3,
    },
}
GZIP_FNAME = 0x08  # header flag: a zero-terminated original file name follows the 10 bytes


def restore_gzip_header(data: bytes, *, filename: str, mtime: int) -> bytes:
    """A gzip file without a stored name -> the same deflate stream under the header `gzip
    filename` writes: FNAME set, `mtime`, the name without ".gz". Other headers: ValueError."""
    if len(data) < 18 or data[:3] != b"\x1f\x8b\x08":
        raise ValueError(f"{filename}: not a gzip file")
    if data[3] != 0:
        raise ValueError(f"{filename}: gzip header has flags {data[3]:#x}, expected none")
    name = filename.removesuffix(".gz").encode()
    header = data[:3] + bytes([GZIP_FNAME]) + struct.pack("<I", mtime) + data[8:10]
    return header + name + b"\x00" + data[10:]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stage_files(
    tfds_name: str, url_infos: dict, files_dir: str | os.PathLike, manual_dir: str | os.PathLike
) -> list[Path]:
    """Puts into manual_dir, under TFDS's file names, the files of `url_infos` ({url: UrlInfo
    (size, checksum, filename)}) found in files_dir: linked when their sha256 is the registered
    one, restored first (`restore_gzip_header`) when that gives it. -> the staged paths."""
    files_dir, manual_dir = Path(files_dir).expanduser(), Path(manual_dir)
    if not url_infos:
        raise ValueError(f"TFDS {tfds_name}: no registered download files to prepare it from")
    manual_dir.mkdir(parents=True, exist_ok=True)
    staged = []
    for url, info in sorted(url_infos.items()):
        if not info.filename:
            raise ValueError(f"TFDS {tfds_name}: {url} has no registered file name")
        source, target = files_dir / info.filename, manual_dir / info.filename
        if not source.is_file():
            raise FileNotFoundError(f"{source}: missing (TFDS {tfds_name} downloads it from {url})")
        if _sha256(source) == info.checksum:
            target.symlink_to(source.resolve())
        else:
            mtime = RELEASED_GZIP_MTIMES.get(tfds_name, {}).get(info.filename)
            restored = None
            if mtime is not None:
                restored = restore_gzip_header(
                    source.read_bytes(), filename=info.filename, mtime=mtime
                )
            if restored is None or hashlib.sha256(restored).hexdigest() != info.checksum:
                raise ValueError(
                    f"{source}: not the file TFDS {tfds_name} registers for {url} "
                    f"(sha256 {info.checksum})"
                )
            target.write_bytes(restored)
        staged.append(target)
    return staged


def prepare(
    tfds_name: str,
    files_dir: str | os.PathLike,
    tfds_data_dir: str | os.PathLike,
    *,
    file_format: str = "tfrecord",
) -> Path:
    """Prepares TFDS `tfds_name` in tfds_data_dir from the original files in files_dir (see the
    module docstring); nothing is downloaded. -> the dataset's version directory. Already
    prepared there: left as it is."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError(
            'preparing a TFDS data dir needs the tfds extra (pip install -e ".[tfds]")'
        ) from None
    tfds_data_dir = Path(tfds_data_dir).expanduser()
    try:
        builder = tfds.builder(
            tfds_name, data_dir=os.fspath(tfds_data_dir), file_format=file_format
        )
    except tfds.core.DatasetNotFoundError:
        raise ValueError(f"TFDS has no dataset {tfds_name!r}") from None
    if not builder.is_prepared():
        with tempfile.TemporaryDirectory(prefix=f"tfds_{tfds_name}_") as scratch:
            manual_dir = Path(scratch) / "manual"
            stage_files(tfds_name, builder.url_infos, files_dir, manual_dir)
            builder.download_and_prepare(
                download_dir=os.fspath(Path(scratch) / "downloads"),
                download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)),
            )
    return Path(builder.data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="TFDS name: mnist, fashion_mnist, ...")
    parser.add_argument("--files", required=True, help="directory of the original files")
    parser.add_argument("--tfds_data_dir", required=True, help="the TFDS data dir to write")
    parser.add_argument("--file_format", default="tfrecord", choices=("tfrecord", "array_record"))
    args = parser.parse_args(argv)
    try:
        path = prepare(args.dataset, args.files, args.tfds_data_dir, file_format=args.file_format)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 1
    print(f"prepared TFDS {args.dataset} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
