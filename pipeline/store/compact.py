"""Compaction: merge the index parts into one and delete shards no current record uses.

A long job leaves one index part per task and, after re-extractions, shards whose videos were all
superseded. Compaction keeps reads of the index fast and reclaims that space. It runs under the store
lease, so no extraction is writing meanwhile. It first runs a quick repair (damaged parts set aside and
their records recovered from the shards, orphaned shards' records committed), so no shard that a damaged
part still needed is taken for unused. The merged part is written, read back and compared with the
records it replaces before any old part is removed, so a crash or a bad write at any point leaves a
readable store with every record (at worst duplicated, identically).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from pipeline.store.index import (
    IndexPartError,
    latest_per_video,
    list_parts,
    read_part,
    read_parts,
    write_part,
)
from pipeline.store.lease import StoreLease
from pipeline.store.repair import RepairReport, repair_store
from pipeline.store.store import SHARD_SUFFIX, FeatureStore, StoreError

_CHECKED = ["video_id", "status", "outcome", "shard", "row", "row_offset", "row_count", "checksum"]


@dataclass
class CompactReport:
    parts_merged: int = 0
    shards_removed: int = 0
    bytes_freed: int = 0
    repair: RepairReport = field(default_factory=RepairReport)


def compact_store(store: FeatureStore) -> CompactReport:
    report = CompactReport()
    with StoreLease(store.path):
        report.repair = repair_store(store, quick=True, lease=False)
        parts = list_parts(store.index_dir)
        records, damaged = read_parts(parts)
        if damaged:  # repair has just set them aside: one appearing now is a disk going bad
            raise StoreError(f"{store.path}: index parts damaged during compaction: {damaged[0]}")
        latest = latest_per_video(records)
        if len(parts) > 1:
            name = f"compact-{uuid.uuid4().hex[:12]}.parquet"
            table = latest.reset_index(drop=True).assign(part=name).astype(object)
            merged = table.where(table.notna(), None).to_dict("records")  # nulls, not NaN, for arrow
            write_part(store.index_dir / name, merged, store.fingerprint)
            _check_written(store, name, latest)
            for part in parts:
                part.unlink()
            report.parts_merged = len(parts)
        used = set(latest["shard"].dropna())
        for shard in store.shards_dir.glob(f"*{SHARD_SUFFIX}"):
            if not shard.name.startswith(".") and shard.name not in used:
                report.bytes_freed += shard.stat().st_size
                shard.unlink()
                report.shards_removed += 1
    store.refresh()
    return report


def _check_written(store: FeatureStore, name: str, expected) -> None:
    """Read the merged part back; remove it and stop if it is not exactly the records it replaces."""
    path = store.index_dir / name
    try:
        back = read_part(path).to_pandas()
        same = back[_CHECKED].equals(expected.reset_index(drop=True)[_CHECKED])
        problem = None if same else "its records differ from the parts it merges"
    except IndexPartError as err:
        problem = str(err)
    if problem is not None:
        path.unlink(missing_ok=True)
        raise StoreError(f"{store.path}: the merged index part failed its check ({problem}); nothing removed")
