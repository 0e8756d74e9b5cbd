"""Which videos still need work, grouped into shard tasks.

A video is redone only when it is absent from a store, its stored rows are gone (the shard file is
missing, or ``avzsl store repair`` marked it ``lost``), its last attempt did not finish for a reason that
is not the video's (``error``: our runner crashed; ``crashed``: its decoder was killed twice, e.g. by the
OOM killer), its source file changed (size or mtime), or it failed and ``retry_failed`` is set.
A missing source file never undoes finished features: the video keeps them, and the plan lists it
(``missing_sources``) so the run can say so. Videos needing the same extractors are grouped into shards
of ``shard_size``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipeline.manifest import VideoManifest
from pipeline.store import LOST, FeatureStore

# Not the video's fault: redone by every run (never a final status; see docs/store.md).
RETRY_ALWAYS = ("error", "crashed", LOST)
MISSING = (-1, 0.0)  # source_stat of an absent file


@dataclass(frozen=True)
class VideoItem:
    video_id: str
    path: str | None
    has_rows: tuple[str, ...] = ()  # extractors that hold rows for it: a vanished source must not undo them


@dataclass(frozen=True)
class ShardTask:
    key: str
    videos: tuple[VideoItem, ...]
    extractors: tuple[str, ...]


@dataclass
class Plan:
    tasks: list[ShardTask]
    done: int  # videos with nothing to do
    missing_sources: list[str] = field(default_factory=list)  # kept features whose source file is gone


def source_stat(path: str | None) -> tuple[int, float]:
    """(size, mtime) of a source file; :data:`MISSING` when it is absent."""
    try:
        stat = os.stat(path) if path else None
    except OSError:
        stat = None
    return (stat.st_size, stat.st_mtime) if stat else MISSING


def has_rows(record: Any | None, shards: set[str]) -> bool:
    """The record points at rows that are on disk."""
    return record is not None and isinstance(record["shard"], str) and record["shard"] in shards


def needs_work(record: Any | None, stat: tuple[int, float], retry_failed: bool, shards: set[str]) -> bool:
    if record is None or record["outcome"] in RETRY_ALWAYS:
        return True
    if isinstance(record["shard"], str) and record["shard"] not in shards:
        return True  # its rows are gone (the shard was deleted)
    if stat == MISSING and has_rows(record, shards):
        return False  # never trade finished features for a not_found
    if (int(record["source_size"]), float(record["source_mtime"])) != stat:
        return True  # the file changed (or appeared/disappeared) since it was extracted
    return retry_failed and record["status"] != "ok"


def final_mask(index: pd.DataFrame, shards: set[str]) -> pd.Series:
    """Per record: the video reached a status a plain re-run keeps (ok, partial, or the input's failure)."""
    gone = index["shard"].notna() & ~index["shard"].isin(list(shards))
    return ~(index["outcome"].isin(RETRY_ALWAYS) | gone)


def plan_tasks(
    manifest: VideoManifest, stores: dict[str, FeatureStore], shard_size: int, retry_failed: bool = False
) -> Plan:
    """Shards of the videos still to do, grouped by the set of extractors they need (see the docstring)."""
    indexes = {name: store.index() for name, store in stores.items()}
    shards = {name: store.shard_names() for name, store in stores.items()}
    groups: dict[tuple[str, ...], list[VideoItem]] = {}
    plan = Plan([], 0)
    for entry in manifest.entries():
        stat = source_stat(entry.path)
        records = {name: _record(index, entry.video_id) for name, index in indexes.items()}
        wanted = tuple(n for n, r in records.items() if needs_work(r, stat, retry_failed, shards[n]))
        kept = tuple(n for n, r in records.items() if has_rows(r, shards[n]))
        if stat == MISSING and kept:
            plan.missing_sources.append(entry.video_id)
        if wanted:
            groups.setdefault(wanted, []).append(VideoItem(entry.video_id, entry.path, kept))
        else:
            plan.done += 1
    for names, items in groups.items():
        for start in range(0, len(items), shard_size):
            chunk = tuple(items[start : start + shard_size])
            digest = hashlib.sha1("\n".join([*names, *(v.video_id for v in chunk)]).encode()).hexdigest()[:12]
            plan.tasks.append(ShardTask(f"shard-{digest}", chunk, names))
    return plan


def _record(index: pd.DataFrame, video_id: str) -> pd.Series | None:
    return index.loc[video_id] if video_id in index.index else None
