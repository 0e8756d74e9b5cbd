"""Compaction: merge the index parts into one and delete shards no current record uses.

A long job leaves one index part per task and, after re-extractions, shards whose videos were all
superseded. Compaction keeps reads of the index fast and reclaims that space. It runs under the store
lease, so no extraction is writing meanwhile; the merged part is committed before the old parts are
removed, so a crash at any point leaves a readable store (at worst with duplicate, identical records).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pipeline.store.index import latest_per_video, list_parts, read_parts, write_part
from pipeline.store.lease import StoreLease
from pipeline.store.store import SHARD_SUFFIX, FeatureStore


@dataclass
class CompactReport:
    parts_merged: int = 0
    shards_removed: int = 0
    bytes_freed: int = 0


def compact_store(store: FeatureStore) -> CompactReport:
    report = CompactReport()
    with StoreLease(store.path):
        parts = list_parts(store.index_dir)
        shards = [p for p in store.shards_dir.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith(".")]
        latest = latest_per_video(read_parts(parts))
        if len(parts) > 1:
            name = f"compact-{uuid.uuid4().hex[:12]}.parquet"
            table = latest.reset_index(drop=True).assign(part=name).astype(object)
            records = table.where(table.notna(), None).to_dict("records")  # nulls, not NaN, for arrow
            write_part(store.index_dir / name, records)
            for part in parts:
                part.unlink()
            report.parts_merged = len(parts)
        used = set(latest["shard"].dropna())
        for shard in shards:
            if shard.name not in used:
                report.bytes_freed += shard.stat().st_size
                shard.unlink()
                report.shards_removed += 1
        for folder in (store.shards_dir, store.index_dir):
            for tmp in folder.glob(".*.tmp-*"):  # left by writers that died; none is live under the lease
                tmp.unlink()
    store.refresh()
    return report
