"""The client side of an extraction job: open the stores, plan, run the tasks anywhere, summarise.

The client builds each extractor once to learn its spec, creates (or reopens) one FeatureStore per
extractor, takes each store's run lease, plans tasks from the stores' indexes (:mod:`.plan`) and runs
them in-process or on a Dask cluster (:mod:`.worker`); each task decodes each of its videos once for all
its extractors and commits one shard per store.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.cluster import connect, validate_spec
from pipeline.config import atomic_write_text
from pipeline.manifest import VideoManifest
from pipeline.provenance import write_run_info
from pipeline.store import FeatureStore, StoreLease
from workflows.extract.config import ExtractConfig, builder, load_manifest, store_dir
from workflows.extract.plan import ShardTask, plan_tasks
from workflows.extract.worker import ShardResult, StoreTarget, run_shard

log = logging.getLogger(__name__)

STORES_FILE = "stores.json"


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


def prepare_stores(cfg: ExtractConfig) -> tuple[dict[str, FeatureStore], dict[str, StoreTarget]]:
    """Build each extractor once here to learn its spec; create or reopen its store."""
    build = builder(cfg)
    stores, targets = {}, {}
    for name in cfg.extractors:
        extractor = build(
            name, weights=cfg.weights_for(name), device="cpu", mode=cfg.mode, **cfg.options.get(name, {})
        )
        spec = extractor.spec
        fingerprint = spec.fingerprint()
        stores[name] = FeatureStore.create(
            store_dir(cfg.out, name, fingerprint),
            spec.to_dict(),
            fingerprint,
            random_weights=spec.random_weights,
        )
        targets[name] = StoreTarget(str(stores[name].path), fingerprint)
        if spec.random_weights:
            log.warning("%s: RANDOM WEIGHTS: these features are not pretrained features", name)
        del extractor
    return stores, targets


def run_extract(cfg: ExtractConfig, progress: bool = True) -> ExtractSummary:
    """Plan, run and summarise one extraction job (see the module docstring)."""
    validate_spec(cfg.cluster)
    manifest = load_manifest(cfg.videos)
    for name in cfg.extractors:
        cfg.weights_for(name)  # a missing weights entry fails before any work
    stores, targets = prepare_stores(cfg)
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
        if tasks:
            _execute(cfg, tasks, targets, summary, progress)
    _summarise(manifest, stores, summary)
    return summary


def _execute(
    cfg: ExtractConfig,
    tasks: list[ShardTask],
    targets: dict[str, StoreTarget],
    summary: ExtractSummary,
    progress: bool,
) -> None:
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
                _done(bar, task, lambda t=task: run_shard(t, cfg, targets), summary)
            return
        from distributed import as_completed

        summary.dashboard = client.dashboard_link
        bar.write(f"Dask dashboard: {summary.dashboard}")
        futures = {
            client.submit(
                run_shard, task, cfg, targets, key=f"extract-{task.key}", pure=False, retries=cfg.task_retries
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
