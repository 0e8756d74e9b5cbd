"""The worker side of an extraction job: build extractors once per process, run one shard, commit it.

A task is all-or-nothing from the store's point of view (its index part is the commit record), so a
SIGKILL at any point loses at most the shards in flight, and a re-run redoes exactly those. A source file
that vanished since the plan never replaces a video's finished features by ``not_found``: that result is
dropped and the old record stays. Each finished video is reported through ``progress`` (the client's
progress bar advances per video, not per shard).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.cluster import worker_device
from pipeline.store import FeatureStore
from workflows.extract.config import ExtractConfig, builder, runner
from workflows.extract.plan import ShardTask, source_stat

log = logging.getLogger(__name__)

PROGRESS_TOPIC = "avzsl-extract-progress"  # Dask event topic: one event per finished video
NOT_FOUND = "not_found"

_EXTRACTORS: dict[tuple, Any] = {}  # per worker process: built extractors, kept across tasks


@dataclass(frozen=True)
class StoreTarget:
    """Where one extractor's features go, and the spec fingerprint its workers must reproduce."""

    path: str
    fingerprint: str


@dataclass
class ShardResult:
    key: str
    videos: int
    counts: dict[str, Counter] = field(default_factory=dict)  # extractor -> Counter of outcome
    worker: str = ""


def get_extractor(cfg: ExtractConfig, name: str, target: StoreTarget) -> Any:
    """Build an extractor once per worker process and keep it; check it matches the client's spec."""
    device = worker_device(cfg.device)
    options = cfg.options.get(name, {})
    weights = cfg.weights_for(name)
    key = (cfg.builder, name, weights, device, cfg.mode, tuple(sorted(options.items())))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = builder(cfg)(name, weights=weights, device=device, mode=cfg.mode, **options)
        torch = sys.modules.get("torch")  # only when the extractor uses it: importing torch costs seconds
        if torch is not None:
            torch.set_num_threads(cfg.threads_per_worker)
    extractor = _EXTRACTORS[key]
    if extractor.spec.fingerprint() != target.fingerprint:
        raise RuntimeError(
            f"{name}: this worker built fingerprint {extractor.spec.fingerprint()}, the client "
            f"{target.fingerprint}; workers must see the same weights files and library versions"
        )
    return extractor


def run_shard(
    task: ShardTask,
    cfg: ExtractConfig,
    targets: dict[str, StoreTarget],
    progress: Callable[[str, str], None] | None = None,
) -> ShardResult:
    """Extract one shard for its extractors and commit one shard per store. Runs on a worker.

    ``progress(task_key, video_id)`` is called once per video as soon as every extractor has its result
    (default: a Dask event on :data:`PROGRESS_TOPIC`, when running on a Dask worker).
    """
    progress = progress or _dask_progress
    run_videos, video_job = runner(cfg)
    extractors = [get_extractor(cfg, name, targets[name]) for name in task.extractors]
    stores = {name: FeatureStore.open(targets[name].path) for name in task.extractors}
    writers = {name: store.writer(task.key) for name, store in stores.items()}
    stats = {v.video_id: source_stat(v.path) for v in task.videos}
    paths = {v.video_id: v.path or "" for v in task.videos}
    result = ShardResult(
        task.key, len(task.videos), {name: Counter() for name in task.extractors}, _worker_name()
    )
    pending = {(v.video_id, name) for v in task.videos for name in task.extractors}
    keep = {(v.video_id, name) for v in task.videos for name in v.has_rows}
    left = Counter(video_id for video_id, _ in pending)  # results still to come per video

    def record(video_id: str, name: str, features, start_s, end_s, status: str, reason: str | None) -> None:
        if str(status) == NOT_FOUND and (video_id, name) in keep:
            result.counts[name]["source_missing"] += 1  # the features it has stay; see the docstring
        else:
            writers[name].add(
                video_id, features, start_s, end_s, status, reason, paths[video_id], *stats[video_id]
            )
            result.counts[name][str(status)] += 1
        pending.discard((video_id, name))
        left[video_id] -= 1
        if left[video_id] == 0:
            progress(task.key, video_id)

    for video in task.videos:
        if not video.path:
            for name in task.extractors:
                record(video.video_id, name, None, None, None, "no_path", "the manifest has no file path")
    jobs = [video_job(v.video_id, v.path) for v in task.videos if v.path]
    by_spec = {extractor.spec.name: name for name, extractor in zip(task.extractors, extractors, strict=True)}
    try:
        for item in run_videos(
            jobs,
            extractors,
            batch_size=cfg.batch_size,
            decode_timeout_s=cfg.decode_timeout_s,
            prefetch_videos=cfg.prefetch_videos,
            decode_isolation=cfg.decode_isolation,
            decode_device=cfg.decode_device,
        ):
            name = item.extractor if isinstance(item.extractor, str) else item.extractor.spec.name
            name = by_spec.get(name, name)
            if (item.video_id, name) not in pending:
                log.warning(
                    "task %s: ignoring an unexpected or repeated result for %s/%s",
                    task.key,
                    item.video_id,
                    name,
                )
                continue
            record(
                item.video_id, name, item.features, item.start_s, item.end_s, str(item.status), item.reason
            )
    except Exception as err:  # a runner failure must not lose the shard's finished videos
        log.exception("task %s: the extraction runner failed", task.key)
        reason = f"extraction runner failed: {type(err).__name__}: {err}"
        for video_id, name in sorted(pending):
            record(video_id, name, None, None, None, "error", reason)
    for video_id, name in sorted(pending):
        record(video_id, name, None, None, None, "error", "the runner returned no result for this video")
    for writer in writers.values():
        writer.commit()
    return result


def _dask_progress(task_key: str, video_id: str) -> None:
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        get_worker().log_event(PROGRESS_TOPIC, {"task": task_key, "video": video_id})


def _worker_name() -> str:
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        return str(get_worker().name)
    return f"pid {os.getpid()}"
