"""Repair: set damaged files aside, rebuild the index from the shards, mark what is gone as not done.

Every shard's header holds the index records committed with it, so the index is a cache that can be
rebuilt. Repair runs under the store lease and:

1. moves damaged or foreign index parts and damaged, truncated or foreign shards to ``STORE/quarantine/`` (never
   deletes them: a person may want to look);
2. re-commits, from the shards' own headers, every record that no readable part holds and no record of
   the index supersedes (the records of a damaged part, and of a shard whose writer died before its part
   was written), exactly as it was committed;
3. marks every video whose latest record points at a shard that is gone as ``lost`` (status failed), an
   outcome every extraction run redoes, so the next run redoes exactly those videos.

``quick`` skips re-hashing the shards' data (a damaged tensor is then not found). See docs/store.md.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.store.index import (
    concat,
    latest_per_video,
    list_parts,
    plain,
    read_parts,
    records_table,
    write_part,
)
from pipeline.store.lease import StoreLease
from pipeline.store.shard import ShardFormatError, ShardReader
from pipeline.store.store import INDEX_DIR, SHARDS_DIR, FeatureStore

LOST = "lost"  # the outcome of a video whose stored rows are gone; every run redoes it


@dataclass
class RepairReport:
    quarantined: list[str] = field(default_factory=list)  # "path: why" of every file set aside
    recovered: int = 0  # records re-committed from shard headers
    lost: list[str] = field(default_factory=list)  # videos marked not done (redone by the next run)
    temp_files_removed: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.quarantined or self.recovered or self.lost or self.temp_files_removed)

    def __str__(self) -> str:
        return (
            f"set aside {len(self.quarantined)} damaged file(s), recovered {self.recovered} index record(s) "
            f"from shard headers, marked {len(self.lost)} video(s) as not done"
        )


def repair_store(store: FeatureStore, *, quick: bool = False, lease: bool = True) -> RepairReport:
    """Repair ``store`` (see the module docstring); ``lease=False`` when the caller already holds it."""
    with StoreLease(store.path) if lease else contextlib.nullcontext():
        report = RepairReport()
        read = read_parts(list_parts(store.index_dir), store.fingerprint)
        for part in read.damaged:
            _quarantine(store, INDEX_DIR, part.path, part.reason, report)
        for path in read.foreign:
            why = "index part of another store (foreign fingerprint)"
            _quarantine(store, INDEX_DIR, path, why, report)
        ours = np.array([p not in read.foreign for p in read.read], dtype=bool)
        own = read.records.filter(np.repeat(ours, read.sizes))
        newer = _NewerThanIndex(latest_per_video(own))
        part = f"repair-{uuid.uuid4().hex[:12]}.parquet"
        intact, recovered = set(), []
        for name, records in _intact_shards(store, quick, report):
            intact.add(name)
            recovered += [record for record in records if newer(record)]
        report.recovered = len(recovered)
        latest = latest_per_video(concat([own, records_table(recovered)]))
        shard = latest.column("shard").cast(pa.string())
        gone = latest.filter(
            pc.and_(pc.is_valid(shard), pc.invert(pc.is_in(shard, pa.array(sorted(intact)))))
        )
        now = time.time_ns()
        lost = [_lost_record(record, part, now) for record in plain(gone).to_pylist()]
        report.lost = sorted(r["video_id"] for r in lost)
        if recovered or lost:
            write_part(store.index_dir / part, [*recovered, *lost], store.fingerprint)
        for folder in (store.shards_dir, store.index_dir):
            for tmp in folder.glob(".*.tmp-*"):  # left by writers that died; none is live under the lease
                tmp.unlink()
                report.temp_files_removed += 1
    store.refresh()
    return report


class _NewerThanIndex:
    """Whether a record from a shard header would change the index: its video is absent, or the record
    is more recent than the video's latest record (a record the index holds, or one it supersedes, would
    change nothing; records keep their commit name through merges, so either compares equal or older)."""

    def __init__(self, latest: pa.Table):
        self.position = {v: i for i, v in enumerate(latest.column("video_id").to_pylist())}
        self.committed = latest.column("committed_ns").to_numpy()
        part = latest.column("part").combine_chunks()
        self.part_names = part.dictionary.to_pylist()
        self.part_codes = part.indices.to_numpy(zero_copy_only=False)

    def __call__(self, record: dict) -> bool:
        i = self.position.get(record["video_id"])
        if i is None:
            return True
        current = (int(self.committed[i]), self.part_names[self.part_codes[i]])
        return (record["committed_ns"], record["part"]) > current


def _intact_shards(store: FeatureStore, quick: bool, report: RepairReport):
    """(name, index records) of each shard that is whole and ours; the others are quarantined."""
    for name in sorted(store.shard_names()):
        path = store.shards_dir / name
        try:
            reader = ShardReader(path)
        except ShardFormatError as err:
            _quarantine(store, SHARDS_DIR, path, str(err), report)
            continue
        if reader.fingerprint != store.fingerprint:
            _quarantine(store, SHARDS_DIR, path, f"foreign fingerprint {reader.fingerprint!r}", report)
            continue
        bad = [] if quick else reader.damaged_tensors()
        if bad:
            _quarantine(store, SHARDS_DIR, path, f"checksum mismatch in {bad}", report)
            continue
        yield name, reader.records


def _lost_record(record: dict, part: str, committed_ns: int) -> dict:
    reason = f"its rows (shard {record['shard']}) are gone or damaged; redone by the next extraction run"
    return record | {
        "status": "failed",
        "outcome": LOST,
        "reason": reason,
        "shard": None,
        "row": -1,
        "row_offset": -1,
        "row_count": 0,
        "checksum": None,
        "committed_ns": committed_ns,
        "part": part,
    }


def _quarantine(store: FeatureStore, kind: str, path: Path, why: str, report: RepairReport) -> None:
    target = store.quarantine_dir / kind / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target = target.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}")
    os.replace(path, target)
    report.quarantined.append(f"{path} -> {target}: {why}")
