"""The per-video index: one parquet part per committed shard, the commit record that drives resume.

A part is written after its shard file, so a part on disk means its shard is complete. Parts are never
edited; a later part supersedes an earlier one for the same video_id (ordered by commit time, then
part name), which is how re-extraction of a changed file or a retried task takes effect without locks.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.shard import fsync_file

STATUSES = ("ok", "partial", "failed")

INDEX_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("status", pa.string()),  # ok | partial | failed
        ("outcome", pa.string()),  # the typed decode/extract outcome (e.g. no_audio, timeout)
        ("reason", pa.string()),
        ("shard", pa.string()),  # file name under shards/, null when no rows were stored
        ("row", pa.int64()),  # position of the video in the shard's pooled/offsets arrays, -1 if none
        ("row_offset", pa.int64()),
        ("row_count", pa.int64()),
        ("source_path", pa.string()),
        ("source_size", pa.int64()),
        ("source_mtime", pa.float64()),
        ("fingerprint", pa.string()),
        ("committed_ns", pa.int64()),
        ("part", pa.string()),
    ]
)
INDEX_COLUMNS = INDEX_SCHEMA.names


def write_part(path: Path, records: list[dict]) -> None:
    """Write one index part atomically (temp + fsync + rename)."""
    table = pa.Table.from_pylist(records, schema=INDEX_SCHEMA)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp)
        fsync_file(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def list_parts(index_dir: Path) -> list[Path]:
    """Committed index parts (temp files of writers still in flight are not parts)."""
    if not index_dir.is_dir():
        return []
    return sorted(p for p in index_dir.glob("*.parquet") if not p.name.startswith("."))


def read_parts(parts: list[Path]) -> pd.DataFrame:
    """Every record of the given parts, in commit order."""
    if not parts:
        return INDEX_SCHEMA.empty_table().to_pandas()
    tables = [pq.read_table(p, schema=INDEX_SCHEMA) for p in parts]
    frame = pa.concat_tables(tables).to_pandas()
    return frame.sort_values(["committed_ns", "part"], kind="stable").reset_index(drop=True)


def latest_per_video(records: pd.DataFrame) -> pd.DataFrame:
    """One row per video_id: its most recent record."""
    latest = records.drop_duplicates("video_id", keep="last")
    return latest.set_index("video_id", drop=False).rename_axis(None)
