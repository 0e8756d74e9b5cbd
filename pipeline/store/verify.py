"""Integrity check of a feature store: index parts, shard headers and sizes, and (unless quick) checksums.

Finds damaged index parts, truncated, unreadable or damaged shards (a checksum mismatch: every tensor of
every shard is re-hashed unless ``quick``), foreign shards (another fingerprint), current index records
(the latest of each video) that point at missing shards or disagree with their shard's own records, orphaned shards (no index part: a crash
between the two renames) and leftover temp files of writers that died. Errors say how to recover:
``avzsl store repair`` sets damaged files aside, rebuilds the index from the shards and marks the videos
whose data is gone as not done, so the next extraction run redoes exactly them (docs/store.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.store.index import latest_per_video, list_parts, read_parts, to_pandas
from pipeline.store.shard import ShardFormatError, ShardReader
from pipeline.store.store import FeatureStore


@dataclass(frozen=True)
class Problem:
    kind: str  # truncated | unreadable | damaged | foreign | missing | bad_index | orphaned | temp_file
    path: str
    message: str
    severity: str = "error"  # error: data is wrong or unreachable; warning: harmless leftovers

    def __str__(self) -> str:
        return f"{self.severity}: {self.kind}: {self.path}: {self.message}"


def verify_store(store: FeatureStore, *, quick: bool = False) -> list[Problem]:
    """Every problem found; ``quick`` skips re-hashing the feature data (headers, sizes and index only)."""
    repair = f"run `avzsl store repair {store.path}`, then re-run the extraction to redo its videos"
    read = read_parts(list_parts(store.index_dir), store.fingerprint)
    problems = [
        Problem("bad_index", str(p.path), f"damaged index part ({p.reason}); {repair}") for p in read.damaged
    ]
    readers: dict[str, ShardReader] = {}
    shard_files = {name: store.shards_dir / name for name in store.shard_names()}
    for name, path in sorted(shard_files.items()):
        try:
            reader = ShardReader(path)
        except ShardFormatError as err:
            kind = "truncated" if "truncated" in str(err) else "unreadable"
            problems.append(Problem(kind, str(path), f"{err}; {repair}"))
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
        bad = [] if quick else reader.damaged_tensors()
        if bad:
            problems.append(Problem("damaged", str(path), f"checksum mismatch in {bad}; {repair}"))
            continue
        readers[name] = reader
    for path in read.foreign:
        problems.append(
            Problem(
                "foreign", str(path), f"index part written for another fingerprint than {store.fingerprint}"
            )
        )
    latest = to_pandas(latest_per_video(read.records))
    problems += _check_records(store, latest, shard_files, readers, repair)
    referenced = set(read.records.column("shard").drop_null().cast("string").to_pylist())
    for name in sorted(set(shard_files) - referenced):
        problems.append(
            Problem(
                "orphaned",
                str(shard_files[name]),
                "no index part refers to it (its writer died before the commit, or its part was damaged); "
                "`avzsl store repair` commits its records, `avzsl store compact` removes what is unused",
                "warning",
            )
        )
    for folder in (store.shards_dir, store.index_dir):
        for tmp in sorted(folder.glob(".*.tmp-*")):
            problems.append(
                Problem("temp_file", str(tmp), "temporary file of an interrupted writer", "warning")
            )
    return problems


def _check_records(
    store: FeatureStore,
    records: pd.DataFrame,
    shard_files: dict,
    readers: dict[str, ShardReader],
    repair: str,
) -> list[Problem]:
    problems = []
    with_rows = records[records["shard"].notna()]
    for shard, group in with_rows.groupby("shard", sort=True):
        if shard not in shard_files:
            ids = list(group["video_id"][:3])
            problems.append(
                Problem(
                    "missing",
                    str(store.shards_dir / shard),
                    f"index refers to a missing shard (videos {ids}); {repair}",
                )
            )
            continue
        reader = readers.get(shard)
        if reader is None:
            continue  # already reported as truncated, unreadable, damaged or foreign
        rows = reader.entries["features"].shape[0]
        offsets = np.asarray(reader.array("offsets"))
        ids = reader.video_ids
        own = {r["video_id"]: r.get("checksum") for r in reader.records}
        for rec in group.itertuples():
            ok = (
                0 <= rec.row < len(ids)
                and ids[rec.row] == rec.video_id
                and rec.row_offset == offsets[rec.row]
                and rec.row_offset + rec.row_count == offsets[rec.row + 1] <= rows
                and (not own or own.get(rec.video_id) == rec.checksum)
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
