"""The per-video index: parquet parts holding one commit record per video, the record that drives resume.

A task writes one part after its shard file, so a part on disk means its shard is complete. Parts are never
edited; a later record supersedes an earlier one for the same video_id (ordered by commit time, then the
``part`` column, the name of the commit that wrote the record), which is how re-extraction of a changed
file or a retried task takes effect without locks. Merging (:mod:`pipeline.store.merge`) rewrites many
parts as one and keeps every record as it was, ``part`` column included, so the order never changes.

Each part describes itself in its parquet metadata (format, version, store fingerprint, row count and a
checksum of its content). A part that cannot be read or whose content no longer matches its checksum is
*damaged*: readers skip it and say so, and ``avzsl store repair`` rebuilds its records from the shards.

In memory a table of records holds the columns whose values repeat (status, shard, part, ...) dictionary
encoded, so a million records take about 180 MB; :func:`to_pandas` gives the plain view.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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
        ("part", pa.string()),  # the commit that wrote the record (its first part file's name)
    ]
)
INDEX_COLUMNS = INDEX_SCHEMA.names
# Columns whose values repeat (a shard name per task, a handful of statuses): dictionary-encoded in memory.
REPEATED_COLUMNS = ("status", "outcome", "reason", "shard", "fingerprint", "part")
# zstd and no column statistics (no reader uses them): a part of a million records is about 25 MB.
WRITE_OPTIONS = {"compression": "zstd", "write_statistics": False}


class IndexPartError(Exception):
    """An index part that cannot be used: unreadable, or its content does not match its checksum."""


@dataclass(frozen=True)
class DamagedPart:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def records_table(records: list[dict]) -> pa.Table:
    """Records (dicts with the :data:`INDEX_COLUMNS`) as a table of records (see :func:`read_part`)."""
    return _conform(pa.Table.from_pylist(records, schema=INDEX_SCHEMA))


def write_part(
    path: Path, records: pa.Table | list[dict], fingerprint: str, *, sources: list[dict] | None = None
) -> None:
    """Write one index part atomically, with its self-description and content checksum.

    ``sources`` (name and rows of each part a merge rewrote, in order) goes into the description, so a
    merge cut short can later tell which of its source parts are safe to remove (:mod:`.merge`).
    """
    table = plain(records if isinstance(records, pa.Table) else records_table(records))
    description = {
        "format": PART_FORMAT,
        "version": PART_VERSION,
        "fingerprint": fingerprint,
        "rows": table.num_rows,
        "checksum_algorithm": ALGORITHM,
        "checksum": table_digest(table),
    }
    if sources is not None:
        description["sources"] = sources
    table = table.replace_schema_metadata({PART_METADATA_KEY: json.dumps(description)})
    atomic_write(path, lambda handle: pq.write_table(table, handle, **WRITE_OPTIONS))


def read_description(path: Path) -> dict:
    """A part's self-description, from its footer alone (no column data is read); {} for version 1."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(PART_METADATA_KEY)
        return json.loads(raw) if raw else {}
    except (OSError, pa.ArrowException, ValueError) as err:
        raise IndexPartError(f"unreadable ({type(err).__name__}: {err})") from None


def read_part(path: Path) -> pa.Table:
    """One part's records, checked against its own description; raises :class:`IndexPartError`.

    A part that vanished (merged away by the run holding the lease) raises ``FileNotFoundError``.
    """
    try:
        table = pq.read_table(path, read_dictionary=REPEATED_COLUMNS, use_threads=False)
    except FileNotFoundError:
        raise
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
    """The table in :data:`INDEX_SCHEMA` order, repeated columns dictionary-encoded (nulls for columns
    added since version 1)."""
    columns = []
    for field_ in INDEX_SCHEMA:
        if field_.name in table.column_names:
            column = table.column(field_.name)
            value_type = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
            if value_type != field_.type:
                raise IndexPartError(f"column {field_.name!r} has type {column.type}, expected {field_.type}")
        elif field_.name == "checksum":
            column = pa.chunked_array([pa.nulls(table.num_rows, field_.type)])
        else:
            raise IndexPartError(f"missing column {field_.name!r}")
        if field_.name in REPEATED_COLUMNS and not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        columns.append(column)
    return pa.Table.from_arrays(columns, names=INDEX_COLUMNS)


def plain(table: pa.Table) -> pa.Table:
    """The table with every column in :data:`INDEX_SCHEMA`'s type (dictionaries decoded)."""
    return pa.Table.from_arrays(
        [
            table.column(f.name).cast(f.type) if table.column(f.name).type != f.type else table.column(f.name)
            for f in INDEX_SCHEMA
        ],
        schema=INDEX_SCHEMA,
    )


def empty_records() -> pa.Table:
    return _conform(INDEX_SCHEMA.empty_table())


def concat(tables: list[pa.Table]) -> pa.Table:
    """Tables of records as one table (no copy: each column keeps its chunks and their dictionaries)."""
    return pa.concat_tables(tables) if tables else empty_records()


def list_parts(index_dir: Path) -> list[Path]:
    """Committed index parts (temp files of writers still in flight are not parts)."""
    if not index_dir.is_dir():
        return []
    return sorted(p for p in index_dir.glob("*.parquet") if not p.name.startswith("."))


@dataclass
class PartsRead:
    """What a read of index parts found: every record of the readable ones, and what went wrong."""

    records: pa.Table  # in the order of the parts (see :func:`in_commit_order`)
    read: list[Path] = field(default_factory=list)  # the parts whose records ``records`` holds
    sizes: list[int] = field(default_factory=list)  # how many records each of them holds
    damaged: list[DamagedPart] = field(default_factory=list)
    vanished: list[Path] = field(default_factory=list)  # listed, then gone before they were read
    foreign: list[Path] = field(default_factory=list)  # readable, but records of another fingerprint


def read_parts(parts: list[Path], fingerprint: str | None = None) -> PartsRead:
    """Read and check each part; damaged ones are skipped and listed (``fingerprint``: flag foreign ones)."""
    tables, result = [], PartsRead(empty_records())
    for path in parts:
        try:
            table = read_part(path)
        except FileNotFoundError:
            result.vanished.append(path)
            continue
        except IndexPartError as err:
            result.damaged.append(DamagedPart(path, str(err)))
            continue
        tables.append(table)
        result.read.append(path)
        result.sizes.append(table.num_rows)
        if fingerprint is not None and not of_store(table, fingerprint):
            result.foreign.append(path)
    result.records = concat(tables)
    return result


def of_store(records: pa.Table, fingerprint: str) -> bool:
    """Every record carries ``fingerprint`` (a part holding any other is foreign to the store)."""
    column = records.column("fingerprint").cast(pa.string())
    return column.null_count == 0 and pc.all(pc.equal(column, fingerprint)).as_py() is not False


def commit_order(records: pa.Table) -> np.ndarray:
    """Positions of the records sorted by commit time, then commit name (stable: file order breaks ties)."""
    part = records.select(["part"]).unify_dictionaries().column("part").combine_chunks()
    if pa.types.is_dictionary(part.type):  # rank the (few) distinct names, then sort the codes
        names = part.dictionary.to_numpy(zero_copy_only=False)
        rank = np.empty(len(names), dtype=np.int64)
        rank[np.argsort(names, kind="stable")] = np.arange(len(names))
        part_key = rank[part.indices.to_numpy(zero_copy_only=False)]
    else:
        part_key = pc.rank(part, sort_keys="ascending", tiebreaker="dense").to_numpy()
    committed = records.column("committed_ns").to_numpy()
    return np.lexsort((part_key, committed))


def in_commit_order(records: pa.Table) -> pa.Table:
    return records.take(commit_order(records))


def latest_per_video(records: pa.Table) -> pa.Table:
    """One record per video_id: its most recent (see the module docstring), in commit order; each column
    one chunk."""
    order = pa.array(commit_order(records))
    ids = records.column("video_id").take(order).combine_chunks().dictionary_encode()
    codes = ids.indices.to_numpy(zero_copy_only=False)
    _, first_from_end = np.unique(codes[::-1], return_index=True)
    last = np.sort(len(codes) - 1 - first_from_end)
    return records.take(order.take(pa.array(last))).combine_chunks()


def to_pandas(records: pa.Table) -> pd.DataFrame:
    """Plain pandas view of records (strings, not categories), as callers of the index have always had."""
    return plain(records).to_pandas()
