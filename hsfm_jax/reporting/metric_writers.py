"""Training curves as TensorBoard event files: one run per method and seed.

  tensorboard --logdir <workdir>/tensorboard

A run's curves are what its compiled programs returned (HSFM's per-epoch history, NeuronTune's
per-epoch tuning metrics, the per-checkpoint selection score and loss of GroupDRO, JTT and AFR),
written after the program returns: no host callback runs inside a scan. Layout::

  <workdir>/tensorboard/<method>/seed_<s>/events.out.tfevents.<time>.<host>.<pid>

The event files are written here, not by a library writer: a scalar event is a few bytes of
protobuf in a TFRecord frame, and this ~100-line encoder needs no dependency (tensorboardX adds a
package; `clu.metric_writers` adds TensorFlow or tensorboardX); `tensorboard` is only needed to
view them. `read_scalars` reads them back (tests/reporting/test_metric_writers.py also reads them with
TensorBoard's own loader). benchmarks/results/metric_writers_cpu.json times this writer against
tensorboardX on the same scalars.

Tags (steps are 1-based epochs, or training steps at each checkpoint):

- hsfm: every per-epoch scalar of history.json (``outer_loss_before``, ``outer_loss_after``,
  ``edit_norm``, ``val_selection``, ``val_*``, ``test_*``) and ``hard_set/<group>``, the hard
  set's examples per group;
- neurontune: ``<threshold>/val_selection``, ``<threshold>/val_sfit`` and
  ``<threshold>/tune_loss`` per lambda threshold;
- group_dro, jtt, afr: ``<grid point>/val_selection`` and ``<grid point>/val_loss`` at every
  checkpoint (step: training steps so far), the grid point named by its settings.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hsfm_jax.runtime import atomic

DIRECTORY = "tensorboard"

# ------------------------------------------------------------------------ event file encoding


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord frames."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _frame(record: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the bytes, their masked CRC."""
    length = struct.pack("<Q", len(record))
    return (
        length
        + struct.pack("<I", _masked_crc(length))
        + record
        + struct.pack("<I", _masked_crc(record))
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 fields encode negatives as 10-byte two's complement
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, summary: bytes = b"", file_version: str = "") -> bytes:
    """An `Event` proto: wall_time (1, double), step (2, int64), file_version (3), summary (5)."""
    out = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if file_version:
        out += _length_delimited(3, file_version.encode())
    if summary:
        out += _length_delimited(5, summary)
    return out


def _scalar_summary(values: Mapping[str, float]) -> bytes:
    """A `Summary` proto of `Value`s: tag (1, string), simple_value (2, float)."""
    return b"".join(
        _length_delimited(1, _length_delimited(1, tag.encode()) + b"\x15" + struct.pack("<f", v))
        for tag, v in values.items()
    )


def write_scalars(
    run_dir: str | os.PathLike,
    scalars: Mapping[str, np.ndarray],
    steps: Mapping[str, np.ndarray],
    *,
    wall_time: float | None = None,
) -> Path:
    """Writes one event file of scalar curves into `run_dir` and returns its path.

    Args:
      scalars: {tag: (K,) values}; NaN stays NaN.
      steps: {tag: (K,) int steps} of the same tags.
      wall_time: the events' time stamp (default: now).
    """
    wall_time = time.time() if wall_time is None else float(wall_time)
    by_step: dict[int, dict[str, float]] = {}
    for tag, values in scalars.items():
        values, at = np.asarray(values, np.float64).ravel(), np.asarray(steps[tag]).ravel()
        if values.shape != at.shape:
            raise ValueError(f"{tag}: {values.shape[0]} values for {at.shape[0]} steps")
        for step, value in zip(at.tolist(), values.tolist(), strict=True):
            by_step.setdefault(int(step), {})[tag] = value
    records = [_event(wall_time, 0, file_version="brain.Event:2")]
    records += [
        _event(wall_time, step, summary=_scalar_summary(by_step[step])) for step in sorted(by_step)
    ]
    run_dir = Path(run_dir)
    path = run_dir / f"events.out.tfevents.{int(wall_time)}.{socket.gethostname()}.{os.getpid()}"
    with atomic.atomic_write(path) as f:
        f.write(b"".join(_frame(r) for r in records))
    return path


# ---------------------------------------------------------------------------------- reading


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes):
    """(field number, wire type, value) of a protobuf message (the wire types used here)."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def read_scalars(run_dir: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps (K,) int64, values (K,) float32)} of every event file in `run_dir`, checking
    every frame's CRCs."""
    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            record = data[pos + 12 : pos + 12 + length]
            (crc,) = struct.unpack_from("<I", data, pos + 12 + length)
            if _masked_crc(data[pos : pos + 8]) != struct.unpack_from("<I", data, pos + 8)[0]:
                raise ValueError(f"{path}: bad length checksum at byte {pos}")
            if _masked_crc(record) != crc:
                raise ValueError(f"{path}: bad record checksum at byte {pos}")
            pos += 16 + length
            step = 0
            for field, _, value in _fields(record):
                if field == 2:
                    step = value
                if field != 5:
                    continue
                for _, _, summary_value in _fields(value):
                    tag, scalar = None, None
                    for f, _, v in _fields(summary_value):
                        if f == 1:
                            tag = v.decode()
                        elif f == 2:
                            (scalar,) = struct.unpack("<f", v)
                    if tag is not None and scalar is not None:
                        found.setdefault(tag, []).append((step, scalar))
    return {
        tag: (
            np.asarray([s for s, _ in points], np.int64),
            np.asarray([v for _, v in points], np.float32),
        )
        for tag, points in found.items()
    }


def write_run(
    workdir: str | os.PathLike, curves: Mapping[str, list[tuple[dict, np.ndarray]]]
) -> list[Path]:
    """Writes `curves` {method: per seed (scalars, steps)} as runs <workdir>/tensorboard/
    <method>/seed_<s>; returns the event files."""
    root = Path(workdir) / DIRECTORY
    wall_time = time.time()
    paths = []
    for name, seeds in curves.items():
        for s, (scalars, at) in enumerate(seeds):
            if scalars:
                steps = dict.fromkeys(scalars, at)
                paths.append(
                    write_scalars(root / name / f"seed_{s}", scalars, steps, wall_time=wall_time)
                )
    return paths
