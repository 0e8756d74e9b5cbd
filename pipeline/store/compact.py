"""Compaction: merge the index parts into one holding only current records; delete shards none uses.

Runs merge index parts as they go (:mod:`.merge`), keeping every record; after re-extractions the index
still holds superseded records, and shards whose videos were all superseded take space. Compaction drops
both. It runs under the store lease, so no extraction is writing meanwhile. It first runs a quick repair
(damaged parts set aside and their records recovered from the shards, orphaned shards' records
committed), so no shard that a damaged part still needed is taken for unused. The merged part is written,
read back and compared with the records it replaces before any old part is removed, so a crash or a bad
write at any point leaves a readable store with every record (at worst duplicated, identically).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.store.index import (
    IndexPartError,
    latest_per_video,
    list_parts,
    plain,
    read_part,
    read_parts,
    write_part,
)
from pipeline.store.lease import StoreLease
from pipeline.store.merge import level_of, merged_name, remove_sources
from pipeline.store.repair import RepairReport, repair_store
from pipeline.store.store import SHARD_SUFFIX, FeatureStore, StoreError


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
        read = read_parts(parts)
        if read.damaged or read.vanished:  # repair has just set damaged ones aside: a disk going bad
            what = read.damaged[0] if read.damaged else f"{read.vanished[0]}: removed meanwhile"
            raise StoreError(f"{store.path}: index parts damaged during compaction: {what}")
        latest = latest_per_video(read.records)
        if len(parts) > 1:
            name = merged_name(max([1, *(level_of(p.name) for p in parts)]))
            write_part(store.index_dir / name, latest, store.fingerprint)
            _check_written(store, name, latest)
            remove_sources(parts)
            report.parts_merged = len(parts)
        used = set(latest.column("shard").drop_null().cast("string").to_pylist())
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
        same = plain(read_part(path)).equals(plain(expected))
        problem = None if same else "its records differ from the parts it merges"
    except (FileNotFoundError, IndexPartError) as err:
        problem = str(err)
    if problem is not None:
        path.unlink(missing_ok=True)
        raise StoreError(f"{store.path}: the merged index part failed its check ({problem}); nothing removed")
