"""Which videos still need work, grouped into shard tasks.

A video is redone only when it is absent from a store, its source file changed (size or mtime), its last
attempt failed through our fault rather than the video's (``error``), or it failed and ``retry_failed`` is
set. Videos needing the same extractors are grouped into shards of ``shard_size``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from pipeline.manifest import VideoManifest
from pipeline.store import FeatureStore

RETRY_ALWAYS = ("error",)  # our failure (runner crash), not the video's: redone by every re-run


@dataclass(frozen=True)
class VideoItem:
    video_id: str
    path: str | None


@dataclass(frozen=True)
class ShardTask:
    key: str
    videos: tuple[VideoItem, ...]
    extractors: tuple[str, ...]


def source_stat(path: str | None) -> tuple[int, float]:
    """(size, mtime) of a source file; (-1, 0.0) when it is absent."""
    try:
        stat = os.stat(path) if path else None
    except OSError:
        stat = None
    return (stat.st_size, stat.st_mtime) if stat else (-1, 0.0)


def needs_work(record: Any | None, stat: tuple[int, float], retry_failed: bool) -> bool:
    if record is None:
        return True
    if (int(record["source_size"]), float(record["source_mtime"])) != stat:
        return True  # the file changed (or appeared/disappeared) since it was extracted
    if record["outcome"] in RETRY_ALWAYS:
        return True
    return retry_failed and record["status"] != "ok"


def plan_tasks(
    manifest: VideoManifest, stores: dict[str, FeatureStore], shard_size: int, retry_failed: bool = False
) -> tuple[list[ShardTask], int]:
    """Shards of the videos still to do, grouped by the set of extractors they need; also the done count."""
    indexes = {name: store.index() for name, store in stores.items()}
    groups: dict[tuple[str, ...], list[VideoItem]] = {}
    done = 0
    for entry in manifest.entries():
        stat = source_stat(entry.path)
        wanted = tuple(
            name
            for name, index in indexes.items()
            if needs_work(
                index.loc[entry.video_id] if entry.video_id in index.index else None, stat, retry_failed
            )
        )
        if wanted:
            groups.setdefault(wanted, []).append(VideoItem(entry.video_id, entry.path))
        else:
            done += 1
    tasks = []
    for names, items in groups.items():
        for start in range(0, len(items), shard_size):
            chunk = tuple(items[start : start + shard_size])
            digest = hashlib.sha1("\n".join([*names, *(v.video_id for v in chunk)]).encode()).hexdigest()[:12]
            tasks.append(ShardTask(f"shard-{digest}", chunk, names))
    return tasks, done
