"""One shard = one safetensors file of concatenated feature rows, written atomically, read memory-mapped.

Tensors in a shard: ``features`` (R, D) in the extractor's dtype, ``offsets`` (N + 1,) int64 row offsets of
the N videos, ``start_s``/``end_s`` (R,) float64 seconds per row, and ``pooled`` (N, D) float32, the mean
over each video's rows computed once at write time so pooled reads never touch the feature rows.
The metadata carries the store fingerprint (so a foreign shard is detectable), the video ids, a checksum
of every tensor, and the shard's index records (one per video of its task, failed ones included), so the
index can be rebuilt from the shards alone (``avzsl store repair``; docs/store.md).

Reading parses the safetensors header ourselves and maps each tensor with ``np.memmap``: a read of one
video touches only its rows, and a truncated file is detected from sizes alone without reading data.
"""

from __future__ import annotations

import json
import math
import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from pipeline.store.checksum import ALGORITHM, array_digest, json_digest

SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
SAFETENSORS_NAMES = {np.dtype(dtype): name for name, dtype in SAFETENSORS_DTYPES.items()}
TENSOR_NAMES = ("features", "offsets", "start_s", "end_s", "pooled")
FIXED_DTYPES = {"offsets": np.int64, "start_s": np.float64, "end_s": np.float64, "pooled": np.float32}
METADATA_CHECKSUM = "metadata_checksum"  # covers every other metadata entry (ids, records, tensor checksums)


class ShardFormatError(Exception):
    """A shard file that cannot be read as a complete shard (truncated, not safetensors, wrong tensors)."""


@dataclass(frozen=True)
class TensorEntry:
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int  # byte offsets relative to the start of the data section
    end: int


def write_shard(
    path: Path,
    features: np.ndarray,
    offsets: np.ndarray,
    start_s: np.ndarray,
    end_s: np.ndarray,
    pooled: np.ndarray,
    metadata: dict[str, str],
) -> int:
    """Write a shard (with a checksum of every tensor in its metadata) atomically; returns its size."""
    tensors = {
        "features": np.ascontiguousarray(features),
        "offsets": np.ascontiguousarray(offsets, dtype=np.int64),
        "start_s": np.ascontiguousarray(start_s, dtype=np.float64),
        "end_s": np.ascontiguousarray(end_s, dtype=np.float64),
        "pooled": np.ascontiguousarray(pooled, dtype=np.float32),
    }
    checksums = {name: array_digest(array) for name, array in tensors.items()}
    layout = {name: [SAFETENSORS_NAMES[array.dtype], list(array.shape)] for name, array in tensors.items()}
    metadata = metadata | {
        "checksum_algorithm": ALGORITHM,
        "checksums": json.dumps(checksums),
        "tensors": json.dumps(layout),
    }
    data = save(tensors, metadata=metadata | {METADATA_CHECKSUM: json_digest(metadata)})
    atomic_write(path, lambda handle: handle.write(data))
    return len(data)


def atomic_write(path: Path, write) -> None:
    """Write ``path`` through a temp file (mode 0666 less the umask) + fsync + rename.

    ``write`` gets the open binary handle. The temp file is removed on any failure (a full disk, a kill
    signal turned into an exception), so a failed write leaves nothing behind but the old file.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk so a rename never publishes an empty file after a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardReader:
    """Memory-mapped access to one shard; construction validates the header and the file size."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries, self.metadata, self.data_start = read_header(self.path)
        missing = [name for name in TENSOR_NAMES if name not in self.entries]
        if missing:
            raise ShardFormatError(f"{self.path}: not a feature shard (missing tensors {missing})")
        wrong = [n for n, dtype in FIXED_DTYPES.items() if self.entries[n].dtype != np.dtype(dtype)]
        if wrong:
            raise ShardFormatError(f"{self.path}: damaged header (unexpected dtype of {wrong})")
        expected = self.metadata.get(METADATA_CHECKSUM)
        rest = {k: v for k, v in self.metadata.items() if k != METADATA_CHECKSUM}
        if expected is not None and json_digest(rest) != expected:
            raise ShardFormatError(f"{self.path}: damaged header (metadata checksum mismatch)")
        layout = json.loads(self.metadata.get("tensors", "{}"))
        actual = {n: [SAFETENSORS_NAMES[e.dtype], list(e.shape)] for n, e in self.entries.items()}
        if layout and layout != actual:
            raise ShardFormatError(f"{self.path}: damaged header (tensor dtypes or shapes changed)")
        self._maps: dict[str, np.ndarray] = {}

    @property
    def video_ids(self) -> list[str]:
        return json.loads(self.metadata.get("video_ids", "[]"))

    @property
    def fingerprint(self) -> str:
        return self.metadata.get("fingerprint", "")

    @property
    def checksums(self) -> dict[str, str]:
        """Checksum per tensor written with the shard; empty for shards of format version 1."""
        return json.loads(self.metadata.get("checksums", "{}"))

    @property
    def records(self) -> list[dict]:
        """The index records committed with this shard (empty for shards of format version 1)."""
        return json.loads(self.metadata.get("records", "[]"))

    def damaged_tensors(self, names: tuple[str, ...] = TENSOR_NAMES) -> list[str]:
        """Tensors whose bytes no longer match their recorded checksum (reads every byte of them)."""
        expected = self.checksums
        return [n for n in names if n in expected and array_digest(self.array(n)) != expected[n]]

    def read(self, name: str) -> np.ndarray:
        """The named tensor read into memory with one read (no memory map: cheaper for small tensors,
        such as ``pooled``, of which a pooled read of a whole store takes one per shard)."""
        entry = self.entries[name]
        with open(self.path, "rb") as handle:
            handle.seek(self.data_start + entry.begin)
            data = handle.read(entry.end - entry.begin)
        if len(data) != entry.end - entry.begin:
            raise ShardFormatError(f"{self.path}: truncated (tensor {name!r} cut short)")
        return np.frombuffer(data, dtype=entry.dtype).reshape(entry.shape)

    def array(self, name: str) -> np.ndarray:
        """The named tensor as a read-only memory map (empty tensors as plain empty arrays)."""
        if name not in self._maps:
            entry = self.entries[name]
            if entry.end == entry.begin:
                self._maps[name] = np.empty(entry.shape, dtype=entry.dtype)
            else:
                self._maps[name] = np.memmap(
                    self.path,
                    dtype=entry.dtype,
                    mode="r",
                    offset=self.data_start + entry.begin,
                    shape=entry.shape,
                )
        return self._maps[name]


def read_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str], int]:
    """Parse a safetensors header and check that the file holds every byte it announces."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            raw_len = handle.read(8)
            if len(raw_len) < 8:
                raise ShardFormatError(f"{path}: truncated ({size} bytes, no safetensors header)")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > 100_000_000:
                raise ShardFormatError(f"{path}: not a safetensors file (header length {header_len})")
            if 8 + header_len > size:
                raise ShardFormatError(
                    f"{path}: truncated ({size} bytes on disk, header alone is {8 + header_len})"
                )
            header = json.loads(handle.read(header_len))
            if not isinstance(header, dict):
                raise ShardFormatError(f"{path}: damaged header (not a JSON object)")
    except (OSError, ValueError, UnicodeDecodeError) as err:
        if isinstance(err, ShardFormatError):
            raise
        raise ShardFormatError(f"{path}: unreadable shard header: {err}") from None
    try:
        metadata = dict(header.pop("__metadata__", {}) or {})
        entries: dict[str, TensorEntry] = {}
        data_end = 0
        for name, info in header.items():
            if info.get("dtype") not in SAFETENSORS_DTYPES:
                raise ShardFormatError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
            begin, end = (int(v) for v in info["data_offsets"])
            shape = tuple(int(n) for n in info["shape"])
            entry = TensorEntry(np.dtype(SAFETENSORS_DTYPES[info["dtype"]]), shape, begin, end)
            if end - begin != math.prod(shape) * entry.dtype.itemsize:
                raise ShardFormatError(f"{path}: damaged header (tensor {name!r} shape and size disagree)")
            entries[name] = entry
            data_end = max(data_end, end)
        spans = sorted((e.begin, e.end) for e in entries.values())
        if any(b != a for (_, a), (b, _) in zip([(0, 0), *spans], spans, strict=False)):
            raise ShardFormatError(f"{path}: damaged header (tensors do not tile the data section)")
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise ShardFormatError(f"{path}: damaged header ({type(err).__name__}: {err})") from None
    data_start = 8 + header_len
    if size < data_start + data_end:
        raise ShardFormatError(f"{path}: truncated ({size} bytes on disk, {data_start + data_end} expected)")
    if size > data_start + data_end:
        raise ShardFormatError(f"{path}: damaged ({size} bytes on disk, {data_start + data_end} expected)")
    return entries, metadata, data_start
