"""Batch feature extraction as Dask tasks: plan shards of the manifest, run them anywhere, resume from the index.

The client builds each extractor once to learn its spec, creates (or reopens) one FeatureStore per
extractor, takes each store's run lease, and plans tasks from the stores' indexes: a video is redone only
when it is absent, its source file changed (size or mtime), or it failed and ``retry_failed`` is set.
Videos needing the same extractors are grouped into shards of ``shard_size``; each task decodes each of
its videos once for all its extractors and commits one shard per store. A task is all-or-nothing from
the store's point of view (its index part is the commit record), so a SIGKILL at any point loses at most
the shards in flight, and a re-run redoes exactly those.

On a worker, extractors are built once per process and kept (:data:`_EXTRACTORS`); the builder and the
per-video runner are named by import path (the runner's module also defines ``VideoJob``), so other
backends (and test doubles) plug in unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.cluster import SlurmOptions, connect, validate_spec, worker_device
from pipeline.config import ConfigError, ConfigModel, atomic_write_text
from pipeline.manifest import VIDEO_EXTENSIONS, ManifestError, VideoManifest
from pipeline.store import FeatureStore, StoreLease

log = logging.getLogger(__name__)

DEFAULT_BUILDER = "extractors.registry:build_extractor"
DEFAULT_RUNNER = "extractors.runner:extract_videos"
STORES_FILE = "stores.json"
RETRY_ALWAYS = ("error",)  # our failure (runner crash), not the video's: redone by every re-run
_EXTRACTORS: dict[tuple, Any] = {}  # per worker process: built extractors, kept across tasks


DecodeIsolation = Literal["process", "none"]  # see extractors.runner.OPENERS


class ExtractConfig(ConfigModel):
    """Everything ``avzsl extract`` needs; written next to the stores as ``config.yaml``."""

    videos: list[str]
    extractors: list[str]
    out: str
    cluster: str = "local"
    workers: int | None = None
    threads_per_worker: int = 1
    device: str = "cpu"
    weights: dict[str, str] = {}  # extractor name -> local path, or "random" (explicit random init)
    mode: Literal["clean", "benchmark"] = "clean"
    options: dict[str, dict[str, Any]] = {}  # extractor name -> builder options (e.g. {"vit": {"fps": 0.5}})
    shard_size: int = 16
    batch_size: int = 32
    decode_timeout_s: float = 600.0
    decode_isolation: DecodeIsolation = "process"  # none: no time limit, for trusted inputs
    prefetch_videos: int | None = None  # decode threads per worker; None: the runner's default for the device
    retry_failed: bool = False
    task_retries: int = 1
    builder: str = DEFAULT_BUILDER
    runner: str = DEFAULT_RUNNER
    slurm: SlurmOptions = SlurmOptions()


@dataclass(frozen=True)
class VideoItem:
    video_id: str
    path: str | None


@dataclass(frozen=True)
class ShardTask:
    key: str
    videos: tuple[VideoItem, ...]
    extractors: tuple[str, ...]


@dataclass(frozen=True)
class WorkerContext:
    """What a worker needs besides the task; small and picklable."""

    builder: str
    runner: str
    weights: dict[str, str]
    fingerprints: dict[str, str]  # extractor name -> expected spec fingerprint
    options: dict[str, dict[str, Any]]  # extractor name -> builder options
    stores: dict[str, str]  # extractor name -> store path
    device: str
    mode: str
    batch_size: int
    decode_timeout_s: float
    prefetch_videos: int | None
    threads_per_worker: int
    decode_isolation: str


@dataclass
class ShardResult:
    key: str
    videos: int
    counts: dict[str, Counter] = field(default_factory=dict)  # extractor -> Counter of outcome
    worker: str = ""


@dataclass
class ExtractSummary:
    planned_videos: int = 0
    planned_tasks: int = 0
    skipped_videos: int = 0  # already done before this run
    stores: dict[str, str] = field(default_factory=dict)
    status: dict[str, dict[str, int]] = field(default_factory=dict)  # extractor -> status -> count (manifest)
    failed: dict[str, dict[str, int]] = field(default_factory=dict)  # extractor -> outcome -> count
    failed_tasks: list[str] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)  # per (video, extractor) outcomes of this run
    dashboard: str | None = None

    @property
    def exit_code(self) -> int:
        """Non-zero only when nothing could be done: no usable features at all, or every task failed."""
        usable = sum(s.get("ok", 0) + s.get("partial", 0) for s in self.status.values())
        if self.planned_tasks and len(self.failed_tasks) == self.planned_tasks:
            return 1
        return 0 if usable or not self.status else 1


# ----------------------------------------------------------------------------- inputs
def load_manifest(sources: list[str]) -> VideoManifest:
    """A manifest parquet, a CSV, a folder (class sub-folders, or plain videos) or a list of video paths."""
    if not sources:
        raise ConfigError("--videos: give a manifest parquet, a CSV, a folder or video paths")
    if len(sources) == 1:
        path = Path(sources[0])
        if path.suffix == ".parquet":
            return VideoManifest.read_parquet(path)
        if path.suffix == ".csv":
            return VideoManifest.from_csv(path)
        if path.is_dir():
            try:
                return VideoManifest.from_folder(path)
            except ManifestError:
                files = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
                if not files:
                    raise ManifestError(
                        f"{path}: no video files found ({sorted(VIDEO_EXTENSIONS)})"
                    ) from None
                return VideoManifest.from_paths(files, root=path)
    return VideoManifest.from_paths(sources)


def resolve_weights(names: list[str], weights: dict[str, str]) -> dict[str, str]:
    """Weights per extractor; ``{"*": "random"}`` applies to all. A missing entry is a usage error."""
    resolved = {}
    for name in names:
        value = weights.get(name, weights.get("*"))
        if not value:
            raise ConfigError(
                f"no weights for extractor {name!r}: pass --weights {name}=/path/to/weights "
                f"(or --weights {name}=random for an explicitly random, non-pretrained network)"
            )
        resolved[name] = value
    return resolved


def resolve(ref: str) -> Callable:
    """Import ``module:attribute``."""
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ConfigError(f"{ref!r}: expected module:function")
    return getattr(importlib.import_module(module), attr)


def store_dir(out: str | Path, name: str, fingerprint: str) -> Path:
    """One store per extractor + config fingerprint."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "extractor"
    return Path(out) / f"{safe}-{fingerprint[:10]}"


# ----------------------------------------------------------------------------- planning
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


# ----------------------------------------------------------------------------- worker side
def get_extractor(ctx: WorkerContext, name: str) -> Any:
    """Build an extractor once per worker process and keep it; check it matches the client's spec."""
    device = worker_device(ctx.device)
    options = ctx.options.get(name, {})
    key = (ctx.builder, name, ctx.weights[name], device, ctx.mode, tuple(sorted(options.items())))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = resolve(ctx.builder)(
            name, weights=ctx.weights[name], device=device, mode=ctx.mode, **options
        )
        torch = sys.modules.get("torch")  # only when the extractor uses it: importing torch costs seconds
        if torch is not None:
            torch.set_num_threads(ctx.threads_per_worker)
    extractor = _EXTRACTORS[key]
    if extractor.spec.fingerprint() != ctx.fingerprints[name]:
        raise RuntimeError(
            f"{name}: this worker built fingerprint {extractor.spec.fingerprint()}, the client "
            f"{ctx.fingerprints[name]}; workers must see the same weights files and library versions"
        )
    return extractor


def run_shard(task: ShardTask, ctx: WorkerContext) -> ShardResult:
    """Extract one shard for its extractors and commit one shard per store. Runs on a worker."""
    module = ctx.runner.partition(":")[0]
    video_job = resolve(f"{module}:VideoJob")  # the runner's module defines its job type
    extractors = [get_extractor(ctx, name) for name in task.extractors]
    stores = {name: FeatureStore.open(ctx.stores[name]) for name in task.extractors}
    writers = {name: store.writer(task.key) for name, store in stores.items()}
    stats = {v.video_id: source_stat(v.path) for v in task.videos}
    paths = {v.video_id: v.path or "" for v in task.videos}
    result = ShardResult(
        task.key, len(task.videos), {name: Counter() for name in task.extractors}, _worker_name()
    )
    pending = {(v.video_id, name) for v in task.videos for name in task.extractors}

    def record(video_id: str, name: str, features, start_s, end_s, status: str, reason: str | None) -> None:
        writers[name].add(
            video_id, features, start_s, end_s, status, reason, paths[video_id], *stats[video_id]
        )
        result.counts[name][str(status)] += 1
        pending.discard((video_id, name))

    for video in task.videos:
        if not video.path:
            for name in task.extractors:
                record(video.video_id, name, None, None, None, "no_path", "the manifest has no file path")
    jobs = [video_job(v.video_id, v.path) for v in task.videos if v.path]
    runner = resolve(ctx.runner)
    by_spec = {extractor.spec.name: name for name, extractor in zip(task.extractors, extractors, strict=True)}
    try:
        for item in runner(
            jobs,
            extractors,
            batch_size=ctx.batch_size,
            decode_timeout_s=ctx.decode_timeout_s,
            prefetch_videos=ctx.prefetch_videos,
            decode_isolation=ctx.decode_isolation,
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


def _worker_name() -> str:
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        return str(get_worker().name)
    return f"pid {os.getpid()}"


# ----------------------------------------------------------------------------- client side
def prepare_stores(
    cfg: ExtractConfig, weights: dict[str, str]
) -> tuple[dict[str, FeatureStore], dict[str, str]]:
    """Build each extractor once here to learn its spec; create or reopen its store."""
    build = resolve(cfg.builder)
    stores, fingerprints = {}, {}
    for name in cfg.extractors:
        extractor = build(
            name, weights=weights[name], device="cpu", mode=cfg.mode, **cfg.options.get(name, {})
        )
        spec = extractor.spec
        fingerprint = spec.fingerprint()
        spec_dict = spec.to_dict()
        stores[name] = FeatureStore.create(
            store_dir(cfg.out, name, fingerprint), spec_dict, fingerprint, random_weights=spec.random_weights
        )
        fingerprints[name] = fingerprint
        if spec.random_weights:
            log.warning("%s: RANDOM WEIGHTS: these features are not pretrained features", name)
        del extractor
    return stores, fingerprints


def run_extract(cfg: ExtractConfig, progress: bool = True) -> ExtractSummary:
    """Plan, run and summarise one extraction job (see the module docstring)."""
    from pipeline.provenance import write_run_info

    validate_spec(cfg.cluster)
    if cfg.shard_size < 1:
        raise ConfigError(f"--shard-size must be >= 1 (got {cfg.shard_size})")
    manifest = load_manifest(cfg.videos)
    weights = resolve_weights(cfg.extractors, cfg.weights)
    stores, fingerprints = prepare_stores(cfg, weights)
    write_run_info(cfg.out, cfg)
    atomic_write_text(
        Path(cfg.out) / STORES_FILE,
        json.dumps({n: s.path.name for n, s in stores.items()}, indent=2) + "\n",
    )
    summary = ExtractSummary(stores={name: str(store.path) for name, store in stores.items()})
    with contextlib.ExitStack() as stack:
        for store in sorted(stores.values(), key=lambda s: str(s.path)):
            stack.enter_context(StoreLease(store.path))
        tasks, summary.skipped_videos = plan_tasks(manifest, stores, cfg.shard_size, cfg.retry_failed)
        summary.planned_tasks = len(tasks)
        summary.planned_videos = sum(len(t.videos) for t in tasks)
        ctx = WorkerContext(
            builder=cfg.builder,
            runner=cfg.runner,
            weights=weights,
            fingerprints=fingerprints,
            options=cfg.options,
            stores={name: str(store.path) for name, store in stores.items()},
            device=cfg.device,
            mode=cfg.mode,
            batch_size=cfg.batch_size,
            decode_timeout_s=cfg.decode_timeout_s,
            prefetch_videos=cfg.prefetch_videos,
            threads_per_worker=cfg.threads_per_worker,
            decode_isolation=cfg.decode_isolation,
        )
        if tasks:
            _execute(cfg, tasks, ctx, summary, progress)
    _summarise(manifest, stores, summary)
    return summary


def _execute(
    cfg: ExtractConfig, tasks: list[ShardTask], ctx: WorkerContext, summary: ExtractSummary, progress: bool
):
    from tqdm import tqdm

    bar = tqdm(total=summary.planned_videos, unit="video", disable=not progress, dynamic_ncols=True)
    with (
        bar,
        connect(
            cfg.cluster,
            workers=cfg.workers,
            device=cfg.device,
            threads_per_worker=cfg.threads_per_worker,
            slurm=cfg.slurm,
        ) as client,
    ):
        if client is None:
            for task in tasks:
                _done(bar, task, lambda t=task: run_shard(t, ctx), summary)
            return
        from distributed import as_completed

        summary.dashboard = client.dashboard_link
        bar.write(f"Dask dashboard: {summary.dashboard}")
        futures = {
            client.submit(
                run_shard, task, ctx, key=f"extract-{task.key}", pure=False, retries=cfg.task_retries
            ): task
            for task in tasks
        }
        for future in as_completed(futures):
            _done(bar, futures[future], future.result, summary)


def _done(bar, task: ShardTask, get: Callable[[], ShardResult], summary: ExtractSummary) -> None:
    try:
        result = get()
    except Exception as err:  # one failed task (e.g. its worker died too often) must not stop the job
        log.error("task %s (%d videos) failed: %s: %s", task.key, len(task.videos), type(err).__name__, err)
        summary.failed_tasks.append(f"{task.key}: {type(err).__name__}: {err}")
    else:
        for counts in result.counts.values():
            summary.outcomes.update(counts)
    bar.update(len(task.videos))
    bar.set_postfix(ok=summary.outcomes["ok"], not_ok=sum(summary.outcomes.values()) - summary.outcomes["ok"])


def _summarise(manifest: VideoManifest, stores: dict[str, FeatureStore], summary: ExtractSummary) -> None:
    ids = manifest.video_ids
    for name, store in stores.items():
        store.refresh()
        index = store.index()
        present = index[index["video_id"].isin(ids)]
        counts = present["status"].value_counts()
        summary.status[name] = {s: int(counts.get(s, 0)) for s in ("ok", "partial", "failed")}
        summary.status[name]["not_done"] = len(ids) - len(present)
        failed = present[present["status"] == "failed"]["outcome"].value_counts()
        summary.failed[name] = {str(k): int(v) for k, v in failed.items()}


def format_summary(summary: ExtractSummary) -> str:
    lines = [
        f"planned {summary.planned_videos} videos in {summary.planned_tasks} tasks "
        f"({summary.skipped_videos} already done)"
    ]
    for name, counts in summary.status.items():
        lines.append(
            f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"  -> {summary.stores[name]}"
        )
        lines += [f"    failed {outcome}: {count}" for outcome, count in summary.failed.get(name, {}).items()]
    if summary.failed_tasks:
        lines.append(f"{len(summary.failed_tasks)} task(s) failed (their videos are redone by the next run):")
        lines += [f"    {line}" for line in summary.failed_tasks[:10]]
    return "\n".join(lines)
