"""FeatureStore: one directory per extractor + config fingerprint, written by many workers without locks.

Layout::

    STORE/header.json                          extractor spec, fingerprint, versions, dim/dtype, created
    STORE/shards/<task-key>-<uuid>.safetensors concatenated rows + offsets + timestamps + pooled means,
                                               with checksums and the task's index records in its header
    STORE/index/<task-key>-<uuid>.parquet      the commit record of that shard (one row per video)
    STORE/quarantine/                          damaged files set aside by ``avzsl store repair``

Each writer owns its shard name, so no lock is needed on the hot path. The tensor file is renamed into
place first and the index part second: a crash between the two leaves an orphaned shard (reported by
``verify``, ignored by readers), never an index row pointing at missing data. Resume reads only the index.
Every video's rows carry a checksum (in the index and in the shard), checked on every read; the format
and its guarantees are described in docs/store.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import UserError
from pipeline.provenance import library_versions
from pipeline.store.checksum import ALGORITHM, array_digest
from pipeline.store.index import (
    STATUSES,
    DamagedPart,
    PartsRead,
    concat,
    empty_records,
    in_commit_order,
    latest_per_video,
    list_parts,
    read_parts,
    to_pandas,
    write_part,
)
from pipeline.store.lease import LEASE_FILE, LOCK_FILE, held_here
from pipeline.store.merge import Merge, merge_levels, remove_merged_sources
from pipeline.store.shard import ShardFormatError, ShardReader, atomic_write, write_shard

log = logging.getLogger(__name__)

FORMAT_NAME = "avzsl-feature-store"
FORMAT_VERSION = 2  # 2: checksums, self-describing index parts, records in shard headers
HEADER_FILE = "header.json"
SHARDS_DIR = "shards"
INDEX_DIR = "index"
QUARANTINE_DIR = "quarantine"
SHARD_SUFFIX = ".safetensors"
_OPEN_SHARDS = 128
_RELISTS = 10  # how often one read of the index lists the folder again after parts were merged away


class StoreError(UserError):
    """A store that cannot be created, opened or read as asked; the message says which path and why."""


class FeatureStore:
    """Read and write access to one feature store directory (see the module docstring for the layout)."""

    def __init__(self, path: Path, header: dict[str, Any], *, check_reads: bool = True):
        self.path = Path(path)
        self.header = header
        self.check_reads = check_reads  # compare every read against its checksum (docs/store.md)
        self._latest: pa.Table | None = None  # one record per video, in commit order
        self._read: set[str] = set()  # the parts whose records _latest includes
        self._stale = True
        self._frame: pd.DataFrame | None = None  # the pandas view of _latest, built on demand
        self._damaged: list[DamagedPart] = []
        self._readers: OrderedDict[str, ShardReader] = OrderedDict()

    # ----------------------------------------------------------------- creation
    @classmethod
    def create(
        cls,
        path: str | Path,
        spec: dict[str, Any],
        fingerprint: str,
        *,
        dim: int | None = None,
        dtype: str | None = None,
        random_weights: bool | None = None,
    ) -> FeatureStore:
        """Create a store, or open it when it exists with the same fingerprint (resume).

        ``dim``/``dtype`` default to the spec's ``output_dim``/``output_dtype`` (or ``dim``/``dtype``);
        ``random_weights`` to the spec's flag. An existing store with another fingerprint is refused.
        A folder without a header that holds no data either (a create interrupted by a kill or a full
        disk) is simply initialised again.
        """
        path = Path(path)
        if (path / HEADER_FILE).exists():
            store = cls.open(path)
            if store.fingerprint != fingerprint:
                raise StoreError(
                    f"{path}: holds features with fingerprint {store.fingerprint}, not {fingerprint} "
                    f"(extractor or config changed); write to a new directory or remove this store"
                )
            return store
        if path.is_dir():
            leftovers = _not_blank(path)
            if leftovers:
                raise StoreError(
                    f"{path}: has no {HEADER_FILE} but holds {leftovers[0]}"
                    f"{f' and {len(leftovers) - 1} more' if len(leftovers) > 1 else ''}; "
                    "choose an empty directory (a store's data is never overwritten)"
                )
            for tmp in path.glob(f".{HEADER_FILE}.tmp-*"):  # what a create cut short left
                tmp.unlink()
        elif path.exists():
            raise StoreError(f"{path}: is a file, not a store directory; choose another path")
        header = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "checksum_algorithm": ALGORITHM,
            "fingerprint": fingerprint,
            "spec": spec,
            "dim": _first(dim, spec.get("output_dim"), spec.get("dim")),
            "dtype": _first(dtype, spec.get("output_dtype"), spec.get("dtype")),
            "random_weights": bool(_first(random_weights, spec.get("random_weights"), False)),
            "versions": library_versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if header["dtype"] is not None:
            header["dtype"] = np.dtype(header["dtype"]).name
        (path / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        (path / INDEX_DIR).mkdir(exist_ok=True)
        text = (json.dumps(header, indent=2, sort_keys=True) + "\n").encode()
        atomic_write(path / HEADER_FILE, lambda handle: handle.write(text))
        return cls.open(path)

    @classmethod
    def open(cls, path: str | Path, *, check_reads: bool = True) -> FeatureStore:
        """Open an existing store; ``check_reads=False`` skips the checksum check of each read."""
        path = Path(path)
        header_path = path / HEADER_FILE
        if not header_path.is_file():
            raise StoreError(
                f"{path}: not a feature store ({HEADER_FILE} missing); create it with `avzsl extract`"
            )
        try:
            header = json.loads(header_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise StoreError(f"{header_path}: unreadable header: {err}") from None
        if header.get("format") != FORMAT_NAME:
            raise StoreError(
                f"{header_path}: not an avzsl feature store header (format={header.get('format')!r})"
            )
        if header.get("format_version", 0) > FORMAT_VERSION:
            raise StoreError(
                f"{header_path}: format version {header['format_version']} is newer than this avzsl"
            )
        return cls(path, header, check_reads=check_reads)

    # ----------------------------------------------------------------- header
    @property
    def fingerprint(self) -> str:
        return self.header["fingerprint"]

    @property
    def dim(self) -> int | None:
        return self.header.get("dim")

    @property
    def random_weights(self) -> bool:
        return bool(self.header.get("random_weights"))

    @property
    def shards_dir(self) -> Path:
        return self.path / SHARDS_DIR

    @property
    def index_dir(self) -> Path:
        return self.path / INDEX_DIR

    @property
    def quarantine_dir(self) -> Path:
        return self.path / QUARANTINE_DIR

    # ----------------------------------------------------------------- index
    def refresh(self) -> None:
        """Make the next read of the index see the parts committed since; only those parts are read."""
        self._stale = True

    def records(self) -> pd.DataFrame:
        """Every index record of every readable part, superseded ones included, in commit order.

        Damaged parts are skipped (their videos read as not done) and listed in :attr:`damaged_parts`.
        """
        read = self._read_listed(set())
        self._note_damaged(read.damaged)
        return to_pandas(in_commit_order(read.records))

    def index_table(self) -> pa.Table:
        """One record per video (its latest) as an arrow table in commit order, repeated columns
        dictionary-encoded; cached. After :meth:`refresh` only the parts committed since are read (all of
        them again only when a part this object read was removed by another process, e.g. a compaction)."""
        if self._latest is None or self._stale:
            listed = {p.name for p in list_parts(self.index_dir)}
            if self._latest is None or not self._read <= listed:
                self._latest, self._read = None, set()
            read = self._read_listed(self._read)
            known = [] if self._latest is None else [self._latest]
            if read.records.num_rows or self._latest is None:
                self._latest = latest_per_video(concat([*known, read.records]))
                self._frame = None
            self._read |= {p.name for p in read.read}
            self._note_damaged(read.damaged)
            self._stale = False
        return self._latest

    def _read_listed(self, done: set[str]) -> PartsRead:
        """Read the listed parts not in ``done``. A part merged away between the listing and its read is
        found again in the merged part, which is in place before its sources go: so list again."""
        tried, tables, result = set(done), [], PartsRead(empty_records())
        for _ in range(_RELISTS):
            todo = [p for p in list_parts(self.index_dir) if p.name not in tried]
            read = read_parts(todo)
            tried |= {p.name for p in todo}
            tables.append(read.records)
            result.read += read.read
            result.sizes += read.sizes
            result.damaged += read.damaged
            if not read.vanished:
                break
        result.records = concat(tables)
        return result

    def _note_damaged(self, damaged: list[DamagedPart]) -> None:
        known = {d.path for d in self._damaged}
        for part in damaged:
            if part.path not in known:
                log.warning(
                    "%s: index part %s is damaged (%s) and skipped; its videos count as not done until "
                    "`avzsl store repair %s` recovers them from the shards",
                    self.path,
                    part.path.name,
                    part.reason,
                    self.path,
                )
        self._damaged = damaged

    def index(self) -> pd.DataFrame:
        """One row per video (its latest record), indexed by video_id: the pandas view of
        :meth:`index_table`, built when first asked for."""
        latest = self.index_table()
        if self._frame is None:
            self._frame = to_pandas(latest).set_index("video_id", drop=False).rename_axis(None)
        return self._frame

    @property
    def damaged_parts(self) -> list[DamagedPart]:
        """Index parts the last read of the index had to skip (see :meth:`records`)."""
        self.index_table()
        return list(self._damaged)

    def merge_index(self, *, fan_in: int | None = None, leftovers: bool = False) -> list[Merge]:
        """Merge index parts level by level (:mod:`pipeline.store.merge`; ``fan_in`` defaults to its
        ``FAN_IN``); only under this process's lease.

        ``leftovers``: first remove the sources a merge cut short left beside its merged part (once per
        run is enough: only a killed merge leaves them). The cached index stays valid: a merge keeps every
        record.
        """
        if not held_here(self.path):
            raise StoreError(f"{self.path}: merging the index needs the store lease (`StoreLease`)")
        if leftovers:
            remove_merged_sources(self.index_dir)
        merges = merge_levels(self.index_dir, self.fingerprint, fan_in)
        for merge in merges:  # the cache holds the records of the sources it read: no need to read them again
            if self._read.issuperset(merge.sources):
                self._read.add(merge.merged)
            self._read -= set(merge.sources)
        return merges

    def shard_names(self) -> set[str]:
        """File names of the committed-or-orphaned shards on disk (one directory listing)."""
        if not self.shards_dir.is_dir():
            return set()
        return {
            name
            for name in os.listdir(self.shards_dir)
            if name.endswith(SHARD_SUFFIX) and not name.startswith(".")
        }

    def video_ids(self, status: str | None = "ok") -> list[str]:
        """Sorted ids of videos whose latest status is ``status`` (``None``: every video)."""
        latest = self.index_table()
        ids = latest.column("video_id")
        if status is not None:
            if status not in STATUSES:
                raise StoreError(f"unknown status {status!r}; expected one of {STATUSES} or None")
            ids = ids.filter(pc.equal(latest.column("status").cast(pa.string()), status))
        return ids.take(pc.sort_indices(ids)).to_pylist()

    # ----------------------------------------------------------------- reads
    def _record(self, video_id: str) -> pd.Series:
        index = self.index()
        if video_id not in index.index:
            raise StoreError(f"{self.path}: no video {video_id!r} in this store")
        record = index.loc[video_id]
        if record["shard"] is None or pd.isna(record["shard"]):
            raise StoreError(
                f"{self.path}: video {video_id!r} has no features ({record['status']}: {record['reason']})"
            )
        return record

    def _reader(self, shard: str) -> ShardReader:
        reader = self._readers.get(shard)
        if reader is None:
            try:
                reader = ShardReader(self.shards_dir / shard)
            except (ShardFormatError, FileNotFoundError) as err:
                raise StoreError(f"{err}; {self._repair_hint()}") from None
            self._readers[shard] = reader
            if len(self._readers) > _OPEN_SHARDS:
                self._readers.popitem(last=False)
        else:
            self._readers.move_to_end(shard)
        return reader

    def features(self, video_id: str) -> np.ndarray:
        """The (T, D) feature rows of one video; read through a memory map, only its rows are touched."""
        return self._rows(video_id)[0]

    def timestamps(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(start_s, end_s) of each feature row of one video, seconds from the start of the file."""
        _, start_s, end_s = self._rows(video_id)
        return start_s, end_s

    def _rows(self, video_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, start_s and end_s rows of one video, checked against the video's checksum."""
        record = self._record(video_id)
        start, stop = int(record["row_offset"]), int(record["row_offset"]) + int(record["row_count"])
        reader = self._reader(record["shard"])
        rows = tuple(np.array(reader.array(name)[start:stop]) for name in ("features", "start_s", "end_s"))
        expected = record["checksum"]
        if self.check_reads and isinstance(expected, str) and array_digest(*rows) != expected:
            raise StoreError(
                f"{self.shards_dir / record['shard']}: the rows of video {video_id!r} do not match their "
                f"checksum (damaged data); {self._repair_hint()}"
            )
        return rows

    def _pooled(self, shard: str) -> np.ndarray:
        """A shard's pooled array, checked against its checksum."""
        reader = self._reader(shard)
        try:
            pooled = reader.read("pooled")
        except (ShardFormatError, FileNotFoundError) as err:
            raise StoreError(f"{err}; {self._repair_hint()}") from None
        expected = reader.checksums.get("pooled")
        if self.check_reads and expected is not None and array_digest(pooled) != expected:
            raise StoreError(
                f"{reader.path}: its pooled features do not match their checksum (damaged data); "
                f"{self._repair_hint()}"
            )
        return pooled

    def _repair_hint(self) -> str:
        return f"run `avzsl store repair {self.path}`, then re-run the extraction to redo what it lost"

    def pooled(self, video_ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
        """Mean feature per video, (N, D) float32, from the per-shard pooled arrays (no feature rows read).

        ``video_ids=None`` means every video whose status is ok, sorted; otherwise the given order.
        Linear in the videos: they are grouped by shard with one sort, and each shard is opened once.
        """
        ids = self.video_ids("ok") if video_ids is None else list(video_ids)
        latest = self.index_table()
        found = pc.index_in(pa.array(ids, pa.string()), value_set=latest.column("video_id"))
        if found.null_count:
            missing = [v for v, hit in zip(ids, found.is_valid().to_pylist(), strict=True) if not hit]
            raise StoreError(f"{self.path}: {len(missing)} video(s) not in the store, e.g. {missing[:3]}")
        positions = found.to_numpy(zero_copy_only=False)
        shard = latest.column("shard").combine_chunks().take(pa.array(positions))
        if shard.null_count:
            bad = [v for v, s in zip(ids, shard.is_null().to_pylist(), strict=True) if s][:3]
            raise StoreError(
                f"{self.path}: {shard.null_count} video(s) have no features (failed), e.g. {bad}"
            )
        rows = latest.column("row").to_numpy()[positions]
        codes = shard.indices.to_numpy(zero_copy_only=False)
        names = shard.dictionary.to_pylist()
        order = np.argsort(codes, kind="stable")
        starts = np.flatnonzero(np.diff(codes[order], prepend=-1))
        out: np.ndarray | None = None if self.dim is None else np.empty((len(ids), self.dim), np.float32)
        for begin, end in zip(starts, [*starts[1:], len(order)], strict=True):
            where = order[begin:end]
            block = self._pooled(names[codes[where[0]]])[rows[where]]
            if out is None:
                out = np.empty((len(ids), block.shape[1]), dtype=np.float32)
            out[where] = block
        if out is None:
            out = np.empty((0, self.dim or 0), dtype=np.float32)
        return ids, out

    # ----------------------------------------------------------------- writes
    def writer(self, task_key: str) -> ShardWriter:
        """A writer for one new shard named after ``task_key`` plus a unique suffix."""
        return ShardWriter(self, task_key)

    # ----------------------------------------------------------------- maintenance
    def summary(self) -> dict[str, Any]:
        """Counts by status and outcome, rows and bytes: what ``avzsl store info`` prints."""
        latest = self.index_table()
        shard_files = [p for p in self.shards_dir.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith(".")]
        status = latest.column("status").cast(pa.string())
        failed = latest.column("outcome").cast(pa.string()).filter(pc.equal(status, "failed"))
        return {
            "path": str(self.path),
            "extractor": self.header.get("spec", {}).get("name"),
            "fingerprint": self.fingerprint,
            "random_weights": self.random_weights,
            "dim": self.dim,
            "dtype": self.header.get("dtype"),
            "videos": latest.num_rows,
            "by_status": {s: int(pc.sum(pc.equal(status, s)).as_py() or 0) for s in STATUSES},
            "failed_by_outcome": {str(k): int(v) for k, v in failed.to_pandas().value_counts().items()},
            "rows": int(pc.sum(latest.column("row_count")).as_py() or 0),
            "shards": len(shard_files),
            "index_parts": len(list_parts(self.index_dir)),
            "damaged_index_parts": [str(part) for part in self._damaged],
            "bytes": sum(p.stat().st_size for p in shard_files)
            + sum(p.stat().st_size for p in list_parts(self.index_dir)),
        }


class ShardWriter:
    """Collects the results of one task and commits them as one shard + one index part."""

    def __init__(self, store: FeatureStore, task_key: str):
        self.store = store
        self.name = f"{_safe_name(task_key)}-{uuid.uuid4().hex[:12]}"
        self._entries: list[dict[str, Any]] = []
        self._arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.committed = False

    def add(
        self,
        video_id: str,
        features: np.ndarray | None,
        start_s: np.ndarray | None,
        end_s: np.ndarray | None,
        status: str,
        reason: str | None,
        source_path: str,
        source_size: int,
        source_mtime: float,
    ) -> None:
        """Record one video. ``status`` is ok, partial, failed, or a typed failure outcome (e.g. no_audio)."""
        if self.committed:
            raise StoreError(f"shard {self.name}: already committed; take a new writer")
        status = str(status)
        outcome = status
        if status not in ("ok", "partial"):
            status = "failed"
        rows = None
        if status != "failed":
            rows = self._check_rows(video_id, features, start_s, end_s)
            if rows is None:
                status, outcome, reason = "failed", "empty", "the extractor returned no feature rows"
        self._entries.append(
            {
                "video_id": str(video_id),
                "status": status,
                "outcome": outcome,
                "reason": reason,
                "source_path": str(source_path),
                "source_size": int(source_size),
                "source_mtime": float(source_mtime),
                "has_rows": rows is not None,
            }
        )
        if rows is not None:
            self._arrays.append(rows)

    def _check_rows(
        self, video_id, features, start_s, end_s
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if features is None:
            return None
        features = np.asarray(features)
        if features.ndim != 2:
            raise StoreError(f"video {video_id!r}: features must be (T, D), got shape {features.shape}")
        if features.shape[0] == 0:
            return None
        dim, dtype = self.store.dim, self.store.header.get("dtype")
        if dim is not None and features.shape[1] != dim:
            raise StoreError(f"video {video_id!r}: feature dim {features.shape[1]} != store dim {dim}")
        if dtype is not None and features.dtype != np.dtype(dtype):
            raise StoreError(f"video {video_id!r}: dtype {features.dtype} != store dtype {dtype}")
        if self._arrays and (self._arrays[0][0].shape[1], self._arrays[0][0].dtype) != (
            features.shape[1],
            features.dtype,
        ):
            raise StoreError(f"video {video_id!r}: shape/dtype differs from earlier videos of this shard")
        start = np.asarray(start_s, dtype=np.float64)
        end = np.asarray(end_s, dtype=np.float64)
        if start.shape != (features.shape[0],) or end.shape != (features.shape[0],):
            raise StoreError(
                f"video {video_id!r}: start_s/end_s must have one entry per row ({features.shape[0]})"
            )
        return features, start, end

    def __len__(self) -> int:
        return len(self._entries)

    def commit(self) -> str | None:
        """Write the shard file (if any rows) then the index part; returns the shard file name or None.

        The shard's header carries the same records as the part, so the index can be rebuilt from it.
        """
        if self.committed:
            raise StoreError(f"shard {self.name}: already committed")
        self.committed = True
        if not self._entries:
            return None
        committed_ns = time.time_ns()
        part = f"{self.name}.parquet"
        shard_name = f"{self.name}{SHARD_SUFFIX}" if self._arrays else None
        counts = [a[0].shape[0] for a in self._arrays]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        slot = iter(range(len(self._arrays)))
        records = []
        for entry in self._entries:
            row = next(slot) if entry.pop("has_rows") else -1
            records.append(
                entry
                | {
                    "shard": shard_name if row >= 0 else None,
                    "row": row,
                    "row_offset": int(offsets[row]) if row >= 0 else -1,
                    "row_count": counts[row] if row >= 0 else 0,
                    "checksum": array_digest(*self._arrays[row]) if row >= 0 else None,
                    "fingerprint": self.store.fingerprint,
                    "committed_ns": committed_ns,
                    "part": part,
                }
            )
        if shard_name is not None:
            write_shard(
                self.store.shards_dir / shard_name,
                np.concatenate([a[0] for a in self._arrays]),
                offsets,
                np.concatenate([a[1] for a in self._arrays]),
                np.concatenate([a[2] for a in self._arrays]),
                np.stack([a[0].astype(np.float32).mean(axis=0) for a in self._arrays]),
                {
                    "fingerprint": self.store.fingerprint,
                    "video_ids": json.dumps([r["video_id"] for r in records if r["row"] >= 0]),
                    "records": json.dumps(records),
                },
            )
        write_part(self.store.index_dir / part, records, self.store.fingerprint)
        self.store.refresh()
        return shard_name


def find_stores(path: str | Path) -> list[Path]:
    """The store at ``path``, or every store directly inside it (an ``avzsl extract --out`` folder)."""
    path = Path(path)
    if (path / HEADER_FILE).is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / HEADER_FILE).is_file()) if path.is_dir() else []
    if not found:
        raise StoreError(
            f"{path}: not a feature store ({HEADER_FILE} missing) and no store inside it; "
            "pass a store or the --out folder of `avzsl extract`"
        )
    return found


def _not_blank(path: Path) -> list[str]:
    """What a header-less store folder holds beyond what an interrupted create leaves (empty = blank)."""
    leftovers = []
    for entry in sorted(path.iterdir()):
        if entry.name in (SHARDS_DIR, INDEX_DIR) and entry.is_dir():
            leftovers += [str(p) for p in sorted(entry.iterdir()) if not p.name.startswith(".")]
        elif not (entry.name.startswith(f".{HEADER_FILE}.tmp-") or entry.name in (LEASE_FILE, LOCK_FILE)):
            leftovers.append(str(entry))
    return leftovers


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _safe_name(task_key: str) -> str:
    """A file-name-safe version of a task key (Dask keys contain brackets, quotes and commas)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(task_key)).strip("._")[:80] or "task"
