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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.manifest import VideoManifest
from pipeline.store import LOST, FeatureStore

# Not the video's fault: redone by every run (never a final status; see docs/store.md).
RETRY_ALWAYS = ("error", "crashed", LOST)
MISSING = (-1, 0.0)  # source_stat of an absent file
_STAT_BATCH = 65536


class VideoItem(NamedTuple):
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


# ----------------------------------------------------------------------------- the rule, per video
def has_rows(record: Any | None, shards: set[str]) -> bool:
    """The record points at rows that are on disk."""
    return record is not None and isinstance(record["shard"], str) and record["shard"] in shards


def needs_work(record: Any | None, stat: tuple[int, float], retry_failed: bool, shards: set[str]) -> bool:
    """Whether a video needs work for one store: the definition :class:`StoreView` computes for all
    videos at once (``record``: its latest record or None, ``stat``: its source's (size, mtime))."""
    if record is None or record["outcome"] in RETRY_ALWAYS:
        return True
    if isinstance(record["shard"], str) and record["shard"] not in shards:
        return True  # its rows are gone (the shard was deleted)
    if stat == MISSING and has_rows(record, shards):
        return False  # never trade finished features for a not_found
    if (int(record["source_size"]), float(record["source_mtime"])) != stat:
        return True  # the file changed (or appeared/disappeared) since it was extracted
    return retry_failed and record["status"] != "ok"


# ----------------------------------------------------------------------------- the rule, for all videos
def final_mask(records: pa.Table, shards: set[str]) -> np.ndarray:
    """Per record: the video reached a status a plain re-run keeps (ok, partial, or the input's failure)."""
    gone = _valid(records.column("shard")) & ~_isin(records.column("shard"), shards)
    return ~(_isin(records.column("outcome"), RETRY_ALWAYS) | gone)


class StoreView:
    """One store's latest records lined up with the manifest's videos (a hash join on video_id).

    Every array has one entry per manifest video; a video absent from the store has ``present`` False.
    """

    def __init__(self, latest: pa.Table, shards: set[str], video_ids: pa.Array):
        found = pc.index_in(video_ids, value_set=latest.column("video_id"))
        self.present = found.is_valid().to_numpy(zero_copy_only=False)
        at = found.fill_null(0).to_numpy(zero_copy_only=False)

        def column(values: np.ndarray, absent: Any) -> np.ndarray:
            if not latest.num_rows:
                return np.full(len(at), absent)
            return np.where(self.present, values[at], absent)

        shard = latest.column("shard")
        self.retry_always = column(_isin(latest.column("outcome"), RETRY_ALWAYS), False)
        self.has_shard = column(_valid(shard), False)
        self.has_rows = column(_valid(shard) & _isin(shard, shards), False)
        self.final = column(final_mask(latest, shards), False)
        self.ok = column(_isin(latest.column("status"), ("ok",)), False)
        self.failed = column(_isin(latest.column("status"), ("failed",)), False)
        self.size = column(latest.column("source_size").to_numpy(), -2)
        self.mtime = column(latest.column("source_mtime").to_numpy(), np.nan)
        self._latest, self._at = latest, at

    def needs_work(self, size: np.ndarray, mtime: np.ndarray, retry_failed: bool) -> np.ndarray:
        """:func:`needs_work` for every video (``size``/``mtime``: its source's, :data:`MISSING` if absent)."""
        gone = self.has_shard & ~self.has_rows
        missing = (size == MISSING[0]) & (mtime == MISSING[1])
        changed = (self.size != size) | (self.mtime != mtime)
        redo = changed | (retry_failed & ~self.ok)
        return ~self.present | self.retry_always | gone | (~(missing & self.has_rows) & redo)

    def count(self, column: str, where: np.ndarray) -> dict[str, int]:
        """How many of the present videos selected by ``where`` have each value of ``column``, most first."""
        values = self._latest.column(column).combine_chunks()
        if not pa.types.is_dictionary(values.type):
            values = values.dictionary_encode()
        codes = values.indices.to_numpy(zero_copy_only=False)[self._at[where & self.present]]
        counts = np.bincount(codes, minlength=len(values.dictionary))
        named = [
            (int(n), str(name)) for n, name in zip(counts, values.dictionary.to_pylist(), strict=True) if n
        ]
        return {name: n for n, name in sorted(named, key=lambda item: (-item[0], item[1]))}


def _valid(column: pa.ChunkedArray) -> np.ndarray:
    return column.is_valid().to_numpy(zero_copy_only=False) if len(column) else np.zeros(0, bool)


def _isin(column: pa.ChunkedArray, values: Sequence[str] | set[str]) -> np.ndarray:
    """Per entry: its value is one of ``values`` (null: False); a dictionary column is looked up through
    its (few) distinct values."""
    if not len(column):
        return np.zeros(0, bool)
    array = column.combine_chunks()
    value_set = pa.array(sorted(values), pa.string())
    if not pa.types.is_dictionary(array.type):
        return pc.is_in(array, value_set=value_set).fill_null(False).to_numpy(zero_copy_only=False)
    hit = pc.is_in(array.dictionary, value_set=value_set).fill_null(False).to_numpy(zero_copy_only=False)
    hit = np.append(hit, False)  # the code given to nulls
    return hit[array.indices.fill_null(len(hit) - 1).to_numpy(zero_copy_only=False)]


def source_stats(paths: pa.Array, where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`source_stat` of every path (null: no path) as a size and an mtime array; with ``where``, of
    the selected paths only (the others read as :data:`MISSING`)."""
    size = np.full(len(paths), MISSING[0], dtype=np.int64)
    mtime = np.full(len(paths), MISSING[1], dtype=np.float64)
    todo = np.arange(len(paths)) if where is None else np.flatnonzero(where)
    for start in range(0, len(todo), _STAT_BATCH):  # a batch of Python strings at a time: little memory
        batch = todo[start : start + _STAT_BATCH]
        stats = [source_stat(path) for path in paths.take(pa.array(batch)).to_pylist()]
        size[batch] = [s for s, _ in stats]
        mtime[batch] = [m for _, m in stats]
    return size, mtime


# ----------------------------------------------------------------------------- the plan
def plan_tasks(
    manifest: VideoManifest, stores: dict[str, FeatureStore], shard_size: int, retry_failed: bool = False
) -> Plan:
    """Shards of the videos still to do, grouped by the set of extractors they need (see the docstring).

    The tasks of :func:`plan_tasks_per_video` (the definition), computed for all videos at once: a hash
    join of the manifest with each store's index and vectorised :func:`needs_work`, so a million videos
    plan in seconds (benchmarks/job_scale.py). Videos keep the manifest's order; a group (a set of
    extractors) comes where its first video does.
    """
    ids, paths = manifest.video_id_array(), manifest.path_array()
    views = [StoreView(store.index_table(), store.shard_names(), ids) for store in stores.values()]
    # A video no store holds is to do whatever its file is: only the others need their source's stat.
    size, mtime = source_stats(paths, np.logical_or.reduce([v.present for v in views], initial=False))
    names = list(stores)
    wanted = np.zeros(len(ids), dtype=np.int64)  # bit i: the video needs work for store i
    kept = np.zeros(len(ids), dtype=np.int64)  # bit i: store i holds its rows
    for bit, view in enumerate(views):
        wanted |= view.needs_work(size, mtime, retry_failed).astype(np.int64) << bit
        kept |= view.has_rows.astype(np.int64) << bit
    missing = (size == MISSING[0]) & (mtime == MISSING[1])
    plan = Plan([], int((wanted == 0).sum()))
    plan.missing_sources = ids.filter(pa.array(missing & (kept != 0))).to_pylist()
    todo = np.flatnonzero(wanted)
    groups, first = np.unique(wanted[todo], return_index=True)
    kept_names = {bits: _names(bits, names) for bits in np.unique(kept[todo]).tolist()}
    for group in groups[np.argsort(first)]:
        members = pa.array(todo[wanted[todo] == group])
        items = list(
            map(
                VideoItem,
                ids.take(members).to_pylist(),
                paths.take(members).to_pylist(),
                [kept_names[bits] for bits in kept[members.to_numpy()].tolist()],
            )
        )
        plan.tasks += _shards(_names(int(group), names), items, shard_size)
    return plan


def plan_tasks_per_video(
    manifest: VideoManifest, stores: dict[str, FeatureStore], shard_size: int, retry_failed: bool = False
) -> Plan:
    """The plan one video at a time, as the rule reads: :func:`plan_tasks` gives the same, faster."""
    indexes = {name: store.index() for name, store in stores.items()}
    shards = {name: store.shard_names() for name, store in stores.items()}
    groups: dict[tuple[str, ...], list[VideoItem]] = {}
    plan = Plan([], 0)
    for entry in manifest.entries():
        stat = source_stat(entry.path)
        records = {
            name: index.loc[entry.video_id] if entry.video_id in index.index else None
            for name, index in indexes.items()
        }
        wanted = tuple(n for n, r in records.items() if needs_work(r, stat, retry_failed, shards[n]))
        kept = tuple(n for n, r in records.items() if has_rows(r, shards[n]))
        if stat == MISSING and kept:
            plan.missing_sources.append(entry.video_id)
        if wanted:
            groups.setdefault(wanted, []).append(VideoItem(entry.video_id, entry.path, kept))
        else:
            plan.done += 1
    for names, items in groups.items():
        plan.tasks += _shards(names, items, shard_size)
    return plan


def _shards(extractors: tuple[str, ...], items: list[VideoItem], shard_size: int) -> list[ShardTask]:
    """Consecutive videos of one group, ``shard_size`` per task, each task named by what it holds."""
    tasks = []
    for start in range(0, len(items), shard_size):
        chunk = tuple(items[start : start + shard_size])
        digest = hashlib.sha1("\n".join([*extractors, *(v.video_id for v in chunk)]).encode()).hexdigest()
        tasks.append(ShardTask(f"shard-{digest[:12]}", chunk, extractors))
    return tasks


def _names(bits: int, names: list[str]) -> tuple[str, ...]:
    return tuple(name for i, name in enumerate(names) if bits >> i & 1)
