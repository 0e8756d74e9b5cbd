"""The client side of an extraction job: open the stores, plan, run the tasks anywhere, summarise.

The client builds each extractor once to learn its spec, creates (or reopens) one FeatureStore per
extractor, takes each store's run lease, repairs a store whose index has a damaged part (its records come
back from the shards' headers), plans tasks from the stores' indexes (:mod:`.plan`) and runs them
in-process or on a Dask cluster (:mod:`.worker`); each task decodes each of its videos once for all its
extractors and commits one shard per store. The run's config is recorded beside every store it wrote,
and ``OUT/stores.json`` keeps one entry per extractor over all runs into the same folder.

Exit status (:attr:`ExtractSummary.exit_code`): 0 when every video reached a final status (failures of
bad inputs are listed, not fatal); 1 when videos remain not done (a failed task, a full disk, a crashed
decoder), with the command that resumes; ``strict`` also makes any failed video 1.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.cluster import connect, validate_spec
from pipeline.config import atomic_write_text
from pipeline.manifest import SKIPPED_KINDS, VideoManifest
from pipeline.provenance import write_run_info
from pipeline.store import FeatureStore, StoreLease, repair_store
from pipeline.store.lease import file_lock
from workflows.extract.config import ExtractConfig, builder, load_manifest, store_dir
from workflows.extract.plan import ShardTask, StoreView, plan_tasks
from workflows.extract.worker import PROGRESS_TOPIC, ShardResult, StoreTarget, run_shard

log = logging.getLogger(__name__)

STORES_FILE = "stores.json"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
SHOWN = 10  # lines of each list printed in the summary


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
    skipped_files: list[str] = field(default_factory=list)  # files under --videos left out, with why
    missing_sources: list[str] = field(default_factory=list)  # videos keeping features of a vanished file
    repairs: dict[str, str] = field(default_factory=dict)  # extractor -> what the automatic repair did
    stopped: str | None = None  # why the run stopped before every task ran (a full disk)
    strict: bool = False

    @property
    def not_done(self) -> int:
        """(video, extractor) pairs without a final status: what a plain re-run would do."""
        return sum(s.get("not_done", 0) for s in self.status.values())

    @property
    def usable(self) -> int:
        return sum(s.get("ok", 0) + s.get("partial", 0) for s in self.status.values())

    @property
    def exit_code(self) -> int:
        """0 when every video reached a final status; 1 when some remain (or, if strict, any failed)."""
        if self.not_done or self.stopped:
            return 1
        return int(self.strict and any(s.get("failed", 0) for s in self.status.values()))


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
    summary = ExtractSummary(
        stores={name: str(store.path) for name, store in stores.items()}, strict=cfg.strict
    )
    summary.skipped_files = [p.message for p in manifest.problems if p.kind in SKIPPED_KINDS]
    with contextlib.ExitStack() as stack:
        for store in sorted(stores.values(), key=lambda s: str(s.path)):
            stack.enter_context(StoreLease(store.path))
        record_run(cfg, stores)  # only once every lease is ours: a refused run changes nothing
        for name, store in stores.items():
            _merge_index(store, leftovers=True)  # what a killed merge left; a store of many small parts
            if store.damaged_parts:
                summary.repairs[name] = str(repair_store(store, quick=True, lease=False))
        plan = plan_tasks(manifest, stores, cfg.shard_size, cfg.retry_failed)
        summary.planned_tasks = len(plan.tasks)
        summary.planned_videos = sum(len(t.videos) for t in plan.tasks)
        summary.skipped_videos = plan.done
        summary.missing_sources = plan.missing_sources
        if plan.tasks:
            _execute(cfg, plan.tasks, targets, summary, progress, stores)
        _summarise(manifest, stores, summary)
    return summary


def _merge_index(store: FeatureStore, leftovers: bool = False) -> None:
    """Merge the store's index parts as they accumulate (under the lease this run holds); a merge that
    fails (a full disk) leaves the parts as they are and never stops the run."""
    try:
        store.merge_index(leftovers=leftovers)
    except OSError as err:
        log.warning("%s: index parts not merged now (%s); the next run merges them", store.path, err)


def record_run(cfg: ExtractConfig, stores: dict[str, FeatureStore]) -> None:
    """The run's config beside each store it writes and in OUT; add its stores to ``OUT/stores.json``."""
    out = Path(cfg.out)
    write_run_info(out, cfg)
    for store in stores.values():
        write_run_info(store.path, cfg)
    listing = out / STORES_FILE
    with file_lock(out / f".{STORES_FILE}.lock"):  # runs of other extractors may update it at once
        try:
            entries = json.loads(listing.read_text())
        except (FileNotFoundError, ValueError):
            entries = {}
        entries = entries if isinstance(entries, dict) else {}
        entries |= {name: store.path.name for name, store in stores.items()}
        atomic_write_text(listing, json.dumps(entries, indent=2, sort_keys=True) + "\n")


class _Progress:
    """The progress bar: one step per finished video, from in-process calls or Dask worker events."""

    def __init__(self, bar, summary: ExtractSummary):
        self.bar, self.summary = bar, summary
        self._seen: dict[str, set[str]] = {}
        self._closed: set[str] = set()
        self._lock = threading.Lock()

    def video(self, task_key: str, video_id: str) -> None:
        with self._lock:
            seen = self._seen.setdefault(task_key, set())
            if task_key not in self._closed and video_id not in seen:
                seen.add(video_id)
                self.bar.update(1)

    def event(self, event: tuple) -> None:
        """Handler of :data:`PROGRESS_TOPIC` events (``(time, message)``) sent by the workers."""
        message = event[1]
        self.video(message["task"], message["video"])

    def task_done(self, task: ShardTask) -> None:
        """Count the task's videos not reported yet (a failed task, events still in flight)."""
        with self._lock:
            self._closed.add(task.key)
            self.bar.update(len(task.videos) - len(self._seen.get(task.key, ())))
            ok = self.summary.outcomes["ok"]
            self.bar.set_postfix(ok=ok, not_ok=sum(self.summary.outcomes.values()) - ok)


def _execute(
    cfg: ExtractConfig,
    tasks: list[ShardTask],
    targets: dict[str, StoreTarget],
    summary: ExtractSummary,
    progress: bool,
    stores: dict[str, FeatureStore],
) -> None:
    from tqdm import tqdm

    bar = tqdm(total=summary.planned_videos, unit="video", disable=not progress, dynamic_ncols=True)
    steps = _Progress(bar, summary)

    def done(task: ShardTask, get: Callable[[], ShardResult]) -> None:
        _done(steps, task, get, summary)
        for name in task.extractors:
            _merge_index(stores[name])

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
                done(task, lambda t=task: run_shard(t, cfg, targets, steps.video))
                if summary.stopped:
                    return
            return
        from distributed import as_completed

        summary.dashboard = client.dashboard_link
        bar.write(f"Dask dashboard: {summary.dashboard}")
        client.subscribe_topic(PROGRESS_TOPIC, steps.event)
        futures = {
            client.submit(
                run_shard, task, cfg, targets, key=f"extract-{task.key}", pure=False, retries=cfg.task_retries
            ): task
            for task in tasks
        }
        for future in as_completed(futures):
            done(futures[future], future.result)
            if summary.stopped:
                client.cancel(list(futures))
                break
        client.unsubscribe_topic(PROGRESS_TOPIC)


def _done(steps: _Progress, task: ShardTask, get: Callable[[], ShardResult], summary: ExtractSummary) -> None:
    try:
        result = get()
    except Exception as err:  # one failed task (e.g. its worker died too often) must not stop the job
        log.error("task %s (%d videos) failed: %s: %s", task.key, len(task.videos), type(err).__name__, err)
        summary.failed_tasks.append(f"{task.key}: {type(err).__name__}: {err}")
        if isinstance(err, OSError) and err.errno in DISK_FULL:  # every later task would fail the same way
            summary.stopped = f"the disk is full ({err}); free space, then resume"
    else:
        for counts in result.counts.values():
            summary.outcomes.update(counts)
    steps.task_done(task)


def _summarise(manifest: VideoManifest, stores: dict[str, FeatureStore], summary: ExtractSummary) -> None:
    """Per store: final statuses of the manifest's videos, and how many are not done.

    The index is brought up to date by reading only the parts this run committed.
    """
    ids = manifest.video_id_array()
    for name, store in stores.items():
        store.refresh()
        view = StoreView(store.index_table(), store.shard_names(), ids)
        counts = view.count("status", view.final)
        summary.status[name] = {s: counts.get(s, 0) for s in ("ok", "partial", "failed")}
        summary.status[name]["not_done"] = len(ids) - int((view.present & view.final).sum())
        summary.failed[name] = view.count("outcome", view.final & view.failed)


def format_summary(summary: ExtractSummary, resume: str | None = None) -> str:
    """What the run did, what is left and how to resume it (``resume``: the command to print)."""
    lines = [
        f"planned {summary.planned_videos} videos in {summary.planned_tasks} tasks "
        f"({summary.skipped_videos} already done)"
    ]
    for name, report in summary.repairs.items():
        lines.append(f"{name}: the index had a damaged part; repaired: {report}")
    for name, counts in summary.status.items():
        lines.append(
            f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"  -> {summary.stores[name]}"
        )
        lines += [f"    failed {outcome}: {count}" for outcome, count in summary.failed.get(name, {}).items()]
    lines += _listed(
        summary.skipped_files,
        "file(s) under --videos are not in the job (not media, or outside a class folder)",
    )
    lines += _listed(
        summary.missing_sources,
        "video(s) keep their features but their source file is missing (moved or deleted?)",
    )
    if summary.failed_tasks:
        lines.append(f"{len(summary.failed_tasks)} task(s) failed (their videos are redone by the next run):")
        lines += [f"    {line}" for line in summary.failed_tasks[:SHOWN]]
    if summary.stopped:
        lines.append(f"stopped early: {summary.stopped}")
    if summary.not_done or summary.stopped:
        how = f": {resume}" if resume else " by running the same command again"
        lines.append(f"NOT DONE: {summary.not_done} (video, extractor) result(s) missing; resume{how}")
    elif summary.strict and summary.exit_code:
        lines.append("--strict: some videos failed (listed above); exit status 1")
    return "\n".join(lines)


def _listed(items: list[str], what: str) -> list[str]:
    if not items:
        return []
    more = [f"    ... and {len(items) - SHOWN} more"] if len(items) > SHOWN else []
    return [f"{len(items)} {what}:", *(f"    {item}" for item in items[:SHOWN]), *more]
