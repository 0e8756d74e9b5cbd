"""Integrity check of a feature store from sizes, headers and the index alone (no feature data is read).

Finds truncated or unreadable shards, foreign shards (another fingerprint), index records pointing at
missing shards or at rows a shard does not have, orphaned shards (no index part: a crash between the
two renames, harmless but wasted space) and leftover temp files of writers that died.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from pipeline.store.index import INDEX_SCHEMA, list_parts, read_parts
from pipeline.store.shard import ShardFormatError, ShardReader
from pipeline.store.store import SHARD_SUFFIX, FeatureStore


@dataclass(frozen=True)
class Problem:
    kind: str  # truncated | unreadable | foreign | missing | bad_index | orphaned | temp_file
    path: str
    message: str
    severity: str = "error"  # error: data is wrong or unreachable; warning: harmless leftovers

    def __str__(self) -> str:
        return f"{self.severity}: {self.kind}: {self.path}: {self.message}"


def verify_store(store: FeatureStore) -> list[Problem]:
    problems: list[Problem] = []
    parts = list_parts(store.index_dir)
    good_parts = []
    for part in parts:
        try:
            schema = pq.read_schema(part)
            if not set(INDEX_SCHEMA.names) <= set(schema.names):
                raise ValueError(f"missing columns {sorted(set(INDEX_SCHEMA.names) - set(schema.names))}")
            good_parts.append(part)
        except (OSError, ValueError) as err:
            problems.append(Problem("bad_index", str(part), f"unreadable index part: {err}"))
    records = read_parts(good_parts)
    readers: dict[str, ShardReader] = {}
    shard_files = {p.name: p for p in store.shards_dir.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith(".")}
    for name, path in sorted(shard_files.items()):
        try:
            reader = ShardReader(path)
        except ShardFormatError as err:
            kind = "truncated" if "truncated" in str(err) else "unreadable"
            problems.append(
                Problem(kind, str(path), f"{err}; delete it and re-run the extraction to redo its videos")
            )
            continue
        if reader.fingerprint != store.fingerprint:
            problems.append(
                Problem(
                    "foreign",
                    str(path),
                    f"written with fingerprint {reader.fingerprint or '(none)'}, store is {store.fingerprint}",
                )
            )
            continue
        readers[name] = reader
    foreign = records[records["fingerprint"] != store.fingerprint]
    for part in sorted(set(foreign["part"])):
        problems.append(
            Problem("foreign", part, f"index part written for another fingerprint than {store.fingerprint}")
        )
    problems += _check_records(store, records, shard_files, readers)
    referenced = set(records["shard"].dropna())
    for name in sorted(set(shard_files) - referenced):
        problems.append(
            Problem(
                "orphaned",
                str(shard_files[name]),
                "no index part refers to it (writer died before commit)",
                "warning",
            )
        )
    for folder in (store.shards_dir, store.index_dir):
        for tmp in sorted(folder.glob(".*.tmp-*")):
            problems.append(
                Problem("temp_file", str(tmp), "temporary file of an interrupted writer", "warning")
            )
    return problems


def _check_records(store, records, shard_files, readers) -> list[Problem]:
    problems = []
    with_rows = records[records["shard"].notna()]
    for shard, group in with_rows.groupby("shard", sort=True):
        if shard not in shard_files:
            ids = list(group["video_id"][:3])
            problems.append(
                Problem(
                    "missing",
                    str(store.shards_dir / shard),
                    f"index refers to a missing shard (videos {ids})",
                )
            )
            continue
        reader = readers.get(shard)
        if reader is None:
            continue  # already reported as truncated, unreadable or foreign
        rows = reader.entries["features"].shape[0]
        offsets = np.asarray(reader.array("offsets"))
        ids = reader.video_ids
        for rec in group.itertuples():
            ok = (
                0 <= rec.row < len(ids)
                and ids[rec.row] == rec.video_id
                and rec.row_offset == offsets[rec.row]
                and rec.row_offset + rec.row_count == offsets[rec.row + 1] <= rows
            )
            if not ok:
                problems.append(
                    Problem("bad_index", rec.part, f"record of {rec.video_id!r} does not match shard {shard}")
                )
        dim = store.dim
        if dim is not None and reader.entries["features"].shape[1:] != (dim,):
            problems.append(
                Problem("bad_index", str(shard_files[shard]), f"feature dim is not the store's {dim}")
            )
    return problems
