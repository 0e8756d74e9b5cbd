"""The per-video index: one parquet part per committed shard, the commit record that drives resume.

A part is written after its shard file, so a part on disk means its shard is complete. Parts are never
edited; a later part supersedes an earlier one for the same video_id (ordered by commit time, then
part name), which is how re-extraction of a changed file or a retried task takes effect without locks.

Each part describes itself in its parquet metadata (format, version, store fingerprint, row count and a
checksum of its content). A part that cannot be read or whose content no longer matches its checksum is
*damaged*: readers skip it and say so, and ``avzsl store repair`` rebuilds its records from the shards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.checksum import ALGORITHM, table_digest
from pipeline.store.shard import atomic_write

STATUSES = ("ok", "partial", "failed")
PART_FORMAT = "avzsl-index-part"
PART_VERSION = 2
PART_METADATA_KEY = b"avzsl_index"

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
        ("checksum", pa.string()),  # of the video's features + start_s + end_s rows; null if none
        ("source_path", pa.string()),
        ("source_size", pa.int64()),
        ("source_mtime", pa.float64()),
        ("fingerprint", pa.string()),
        ("committed_ns", pa.int64()),
        ("part", pa.string()),
    ]
)
INDEX_COLUMNS = INDEX_SCHEMA.names


class IndexPartError(Exception):
    """An index part that cannot be used: unreadable, or its content does not match its checksum."""


@dataclass(frozen=True)
class DamagedPart:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def write_part(path: Path, records: list[dict], fingerprint: str) -> None:
    """Write one index part atomically, with its self-description and content checksum."""
    table = pa.Table.from_pylist(records, schema=INDEX_SCHEMA)
    description = {
        "format": PART_FORMAT,
        "version": PART_VERSION,
        "fingerprint": fingerprint,
        "rows": table.num_rows,
        "checksum_algorithm": ALGORITHM,
        "checksum": table_digest(table),
    }
    table = table.replace_schema_metadata({PART_METADATA_KEY: json.dumps(description)})
    atomic_write(path, lambda handle: pq.write_table(table, handle))


def read_part(path: Path) -> pa.Table:
    """One part's records, checked against its own description; raises :class:`IndexPartError`."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException, ValueError) as err:
        raise IndexPartError(f"unreadable ({type(err).__name__}: {err})") from None
    raw = (table.schema.metadata or {}).get(PART_METADATA_KEY)
    if raw is None:  # a part of format version 1: no description, no checksum
        return _conform(table)
    try:
        description = json.loads(raw)
    except ValueError:
        raise IndexPartError("damaged description (not JSON)") from None
    if description.get("format") != PART_FORMAT or description.get("version", 0) > PART_VERSION:
        raise IndexPartError(f"not an index part this avzsl reads ({description.get('format')!r})")
    table = _conform(table)
    if table.num_rows != description.get("rows") or table_digest(table) != description.get("checksum"):
        raise IndexPartError("content does not match its checksum")
    return table


def _conform(table: pa.Table) -> pa.Table:
    """The table in :data:`INDEX_SCHEMA` (columns added since version 1 filled with nulls)."""
    columns = []
    for field in INDEX_SCHEMA:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                raise IndexPartError(f"column {field.name!r} has type {column.type}, expected {field.type}")
            columns.append(column)
        elif field.name == "checksum":
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            raise IndexPartError(f"missing column {field.name!r}")
    return pa.Table.from_arrays(columns, schema=INDEX_SCHEMA)


def list_parts(index_dir: Path) -> list[Path]:
    """Committed index parts (temp files of writers still in flight are not parts)."""
    if not index_dir.is_dir():
        return []
    return sorted(p for p in index_dir.glob("*.parquet") if not p.name.startswith("."))


def read_parts(parts: list[Path]) -> tuple[pd.DataFrame, list[DamagedPart]]:
    """Every record of the readable parts, in commit order, and the damaged parts that were skipped."""
    tables, damaged = [], []
    for path in parts:
        try:
            tables.append(read_part(path))
        except IndexPartError as err:
            damaged.append(DamagedPart(path, str(err)))
    if not tables:
        return INDEX_SCHEMA.empty_table().to_pandas(), damaged
    frame = pa.concat_tables(tables).to_pandas()
    return frame.sort_values(["committed_ns", "part"], kind="stable").reset_index(drop=True), damaged


def latest_per_video(records: pd.DataFrame) -> pd.DataFrame:
    """One row per video_id: its most recent record."""
    latest = records.drop_duplicates("video_id", keep="last")
    return latest.set_index("video_id", drop=False).rename_axis(None)
