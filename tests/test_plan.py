"""The plan of an extraction job: the join over all videos gives exactly the tasks of the per-video rule.

``plan_tasks_per_video`` is the plain definition (one video at a time: its latest record in each store, its
source's size and mtime, ``needs_work``); ``plan_tasks`` computes the same for all videos at once.
They are compared on stores in every state a video can be in: absent, ok, partial, failed for the input's
fault or not (error, crashed, lost), superseded, rows deleted, source changed, moved or never given.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.manifest import VideoManifest
from pipeline.store import FeatureStore
from workflows.extract.plan import plan_tasks, plan_tasks_per_video, source_stat

SPEC = {"name": "fake", "output_dim": 3, "output_dtype": "float32"}
OUTCOMES = ["ok", "partial", "undecodable", "no_audio", "error", "crashed", "lost"]


def random_job(root: Path, seed: int, videos: int = 80) -> tuple[VideoManifest, dict[str, FeatureStore]]:
    """Source files, a manifest of them, and three stores holding random histories of those videos."""
    rng = random.Random(seed)
    rows = []
    for i in range(videos):
        video_id = f"c{i % 7}/v{i:03d}"
        path = root / "videos" / f"{video_id}.mp4"
        if rng.random() < 0.85:  # the rest: moved or deleted since (or never there)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * rng.randint(1, 50))
        rows.append({"video_id": video_id, "path": None if rng.random() < 0.04 else str(path),
                     "label": f"c{i % 7}", "split": None})  # fmt: skip
    manifest = VideoManifest(pd.DataFrame(rows))
    stores = {}
    for name in ("visual", "audio", "other"):
        store = FeatureStore.create(root / name, SPEC | {"name": name}, f"fp-{name}")
        for commit in range(rng.randint(0, 9)):
            writer = store.writer(f"task-{commit}")
            for row in rng.sample(rows + [{"video_id": "not/in-manifest", "path": "/x"}], rng.randint(1, 25)):
                size, mtime = source_stat(row["path"])
                if rng.random() < 0.2:  # extracted from an older version of the file
                    size, mtime = size + 1, mtime - 5.0
                outcome = rng.choice(OUTCOMES)
                n = rng.randint(1, 3)
                features = np.full((n, 3), commit, np.float32) if outcome in ("ok", "partial") else None
                times = np.arange(n, dtype=np.float64)
                writer.add(row["video_id"], features, times, times + 1, outcome, "why", row["path"] or "",
                           size, mtime)  # fmt: skip
            shard = writer.commit()
            if shard is not None and rng.random() < 0.15:  # its rows deleted since
                (store.shards_dir / shard).unlink()
        stores[name] = store
    return manifest, stores


@pytest.mark.parametrize("seed", range(8))
def test_the_join_plans_the_same_tasks_as_the_per_video_rule(tmp_path: Path, seed: int) -> None:
    manifest, stores = random_job(tmp_path, seed)
    for shard_size in (1, 3, 16):
        for retry_failed in (False, True):
            for chosen in (stores, {"audio": stores["audio"]}, {}):
                fresh = {name: FeatureStore.open(store.path) for name, store in chosen.items()}
                got = plan_tasks(manifest, fresh, shard_size, retry_failed)
                expected = plan_tasks_per_video(manifest, chosen, shard_size, retry_failed)
                assert got == expected, (shard_size, retry_failed, list(chosen))


def test_the_states_the_random_jobs_cover(tmp_path: Path) -> None:
    """The comparison above sees every kind of video: done, each reason to redo it, kept with no source."""
    seen: dict[str, int] = {}
    for seed in range(8):
        manifest, stores = random_job(tmp_path / str(seed), seed)
        plan = plan_tasks_per_video(manifest, stores, 4, False)
        seen["done"] = seen.get("done", 0) + plan.done
        seen["missing_sources"] = seen.get("missing_sources", 0) + len(plan.missing_sources)
        seen["kept"] = seen.get("kept", 0) + sum(bool(v.has_rows) for t in plan.tasks for v in t.videos)
        seen["groups"] = max(seen.get("groups", 0), len({t.extractors for t in plan.tasks}))
    assert seen["done"] and seen["missing_sources"] and seen["kept"] and seen["groups"] >= 5, seen


def test_a_store_without_any_rows_plans_as_the_rule(tmp_path: Path) -> None:
    manifest, stores = random_job(tmp_path, 0)
    failed = FeatureStore.create(tmp_path / "failed", SPEC | {"name": "failed"}, "fp-failed")
    writer = failed.writer("task")
    for video_id, path in list(zip(manifest.video_ids, manifest.table["path"], strict=True))[:5]:
        writer.add(video_id, None, None, None, "undecodable", "bad", str(path), 1, 1.0)
    writer.commit()
    chosen = {"failed": failed, "visual": stores["visual"]}
    for retry_failed in (False, True):
        assert plan_tasks(manifest, chosen, 4, retry_failed) == plan_tasks_per_video(
            manifest, chosen, 4, retry_failed
        )
