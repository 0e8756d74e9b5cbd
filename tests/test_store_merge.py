"""Merging index parts and reading the index at job scale: nothing is lost, a kill leaves a valid store.

A merge keeps every record and checksum (the index and every record read the same before and after), is
done only under the lease, survives a SIGKILL at any point (the store stays readable, verifiable and
repairable, and the next merge clears what the killed one left), and ``repair`` still rebuilds the index
from the shard headers after merges. ``pooled()`` equals the plain per-video mean of the rows, and a run
reads each index part once. Costs at a million videos: ``benchmarks/job_scale.py``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pipeline.store.index as index_module
import pipeline.store.merge as merge_module
import pipeline.store.store as store_module
from pipeline.store import FeatureStore, StoreError, StoreLease, compact_store, repair_store, verify_store
from pipeline.store.index import list_parts, read_part
from pipeline.store.merge import level_of
from pipeline.synth.media import make_test_clip
from workflows.extract import ExtractConfig, run_extract

DIM = 3
SPEC = {"name": "fake", "output_dim": DIM, "output_dtype": "float32"}


def rows_for(video_id: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(video_id.encode()))
    start = np.arange(n) * 0.5
    return rng.standard_normal((n, DIM)).astype(np.float32), start, start + 0.5


def commit_task(store: FeatureStore, task: int, videos: int = 3) -> None:
    """One task's commit: ``videos`` videos (one failed), some of them redone from an earlier task."""
    writer = store.writer(f"task-{task}")
    for i in range(videos):
        video_id = f"v{(task * videos + i) % 200:03d}"  # ids repeat after 200: later commits supersede
        if i == videos - 1:
            writer.add(video_id, None, None, None, "undecodable", "bad file", f"/src/{video_id}", 1, 2.0)
        else:
            feats, start, end = rows_for(f"{video_id}-{task}", 1 + (task + i) % 4)
            writer.add(video_id, feats, start, end, "ok", None, f"/src/{video_id}", 10 + task, 3.0)
    writer.commit()


def sorted_records(store: FeatureStore) -> pd.DataFrame:
    return store.records().sort_values(["video_id", "part"]).reset_index(drop=True)


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    return FeatureStore.create(tmp_path / "store", SPEC, "fp-merge")


def test_merges_keep_every_record_and_checksum(store: FeatureStore) -> None:
    with StoreLease(store.path):
        for task in range(90):  # as a run does: a merge attempt after every task
            commit_task(store, task)
            store.merge_index(fan_in=4)
        records, index = sorted_records(store), store.index()
    assert len(records) == 270
    levels = sorted(level_of(p.name) for p in list_parts(store.index_dir))
    assert levels == [0, 0, 1, 1, 2, 3]  # 90 tasks = 64 + 16 + 2 * 4 + 2
    again = FeatureStore.open(store.path)
    pd.testing.assert_frame_equal(sorted_records(again), records)
    pd.testing.assert_frame_equal(again.index(), index)
    assert again.damaged_parts == [] and verify_store(again) == []
    for part in list_parts(store.index_dir):
        read_part(part)  # each merged part carries its own checksum, and it holds
    for video_id in again.video_ids():  # every read checked against the video's checksum
        task = int(index.loc[video_id, "part"].split("-")[1])
        rows = again.features(video_id)
        np.testing.assert_array_equal(rows, rows_for(f"{video_id}-{task}", len(rows))[0])


def test_merging_needs_the_lease(store: FeatureStore) -> None:
    for task in range(4):
        commit_task(store, task)
    with pytest.raises(StoreError, match="lease"):
        store.merge_index(fan_in=2)
    assert len(list_parts(store.index_dir)) == 4


def test_the_cached_index_follows_merges_without_reading_again(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    read = index_module.read_part

    def counting(path: Path):
        reads.append(path.name)
        return read(path)

    monkeypatch.setattr(index_module, "read_part", counting)
    with StoreLease(store.path):
        for task in range(8):
            commit_task(store, task)
        store.index_table()
        assert sorted(reads) == sorted(p.name for p in list_parts(store.index_dir))
        store.merge_index(fan_in=4)
        reads.clear()
        commit_task(store, 8)  # refreshes the cache: the next read takes only the new part
        assert len(store.index()) == 27
        assert len(reads) == 1 and reads[0].startswith("task-8-")


def test_a_reader_that_listed_before_a_merge_finds_the_merged_part(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for task in range(6):
        commit_task(store, task)
    expected = FeatureStore.open(store.path).index()
    stale = list_parts(store.index_dir)
    with StoreLease(store.path):
        store.merge_index(fan_in=2)
    assert not any(p.exists() for p in stale)
    listings = iter([stale, stale])  # the listing of the first read, before the merge
    monkeypatch.setattr(store_module, "list_parts", lambda d: next(listings, None) or list_parts(d))
    reader = FeatureStore.open(store.path)
    pd.testing.assert_frame_equal(reader.index(), expected)
    assert reader.damaged_parts == []


# ----------------------------------------------------------------------------- a kill mid-merge
KILL_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import pipeline.store.index as index
    import pipeline.store.merge as merge
    from pipeline.store import FeatureStore, StoreLease

    where, after = sys.argv[2], int(sys.argv[3])

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "writing":  # the merged part's temp file half written
        def write_half(table, handle, **options):
            handle.write(b"PAR1" + b"x" * 100)
            handle.flush()
            die()
        index.pq.write_table = write_half
    elif where == "removing":  # after the merged part was checked, with `after` sources removed
        def remove_some(paths):
            for path in paths[:after]:
                path.unlink()
            die()
        merge.remove_sources = remove_some
    elif where == "checking":  # the merged part in place, not yet read back
        merge._differs = lambda path, expected: die()
    store = FeatureStore.open(sys.argv[1])
    with StoreLease(store.path):
        print("merging", flush=True)
        store.merge_index(fan_in=int(sys.argv[4]))
    """
)


def run_child(store: FeatureStore, where: str, after: int = 0, fan_in: int = 4) -> int:
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", KILL_CHILD, str(store.path), where, str(after), str(fan_in)], env=env
    ).returncode


def assert_whole(store: FeatureStore, records: pd.DataFrame, index: pd.DataFrame) -> None:
    """Readable, verifiable and repairable, with every record; after a merge, no record twice."""
    again = FeatureStore.open(store.path)
    pd.testing.assert_frame_equal(again.index(), index)
    assert again.damaged_parts == []
    assert [p for p in verify_store(again) if p.severity == "error"] == []
    with StoreLease(store.path):
        again.merge_index(fan_in=4, leftovers=True)  # what the next run does first
    pd.testing.assert_frame_equal(sorted_records(FeatureStore.open(store.path)), records)
    report = repair_store(FeatureStore.open(store.path))
    assert (report.recovered, report.lost) == (0, [])
    assert not list(store.index_dir.glob(".*.tmp-*"))  # repair removed what the writer left
    pd.testing.assert_frame_equal(FeatureStore.open(store.path).index(), index)


@pytest.mark.parametrize(
    ("where", "after"), [("writing", 0), ("checking", 0), ("removing", 0), ("removing", 5)]
)
def test_a_kill_mid_merge_leaves_a_valid_store(store: FeatureStore, where: str, after: int) -> None:
    for task in range(12):
        commit_task(store, task)
    records, index = sorted_records(store), store.index()
    assert run_child(store, where, after) == -signal.SIGKILL
    left = list_parts(store.index_dir)
    if where in ("checking", "removing"):  # the merged part is in place beside sources not yet removed
        assert any(level_of(p.name) == 1 for p in left) and len(left) == 1 + 12 - after
    assert_whole(store, records, index)


@pytest.mark.slow
def test_sigkill_at_random_moments_of_merging_loses_nothing(store: FeatureStore, tmp_path: Path) -> None:
    for task in range(120):
        commit_task(store, task, videos=2)
    records, index = sorted_records(store), store.index()
    pristine = shutil.copytree(store.path, tmp_path / "pristine")
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}

    def merge(kill_after_s: float | None) -> float:
        shutil.rmtree(store.path)
        shutil.copytree(pristine, store.path)
        command = [sys.executable, "-c", KILL_CHILD, str(store.path), "-", "0", "2"]
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "merging\n"
        start = time.perf_counter()
        if kill_after_s is not None:
            time.sleep(kill_after_s)
            child.send_signal(signal.SIGKILL)
        child.wait()
        return time.perf_counter() - start

    took = merge(None)  # how long the whole merge takes here, so the kills below land inside it
    rng = random.Random(0)
    for _ in range(3):
        merge(rng.uniform(0.0, took))
        assert_whole(store, records, index)


# ----------------------------------------------------------------------------- repair after merges
def test_repair_rebuilds_a_merged_index_from_the_shard_headers(store: FeatureStore) -> None:
    with StoreLease(store.path):
        for task in range(40):
            commit_task(store, task)
            store.merge_index(fan_in=4)
    index = store.index()
    assert repair_store(FeatureStore.open(store.path)).recovered == 0  # a healthy merged store: nothing
    biggest = max(list_parts(store.index_dir), key=lambda p: p.stat().st_size)
    held = len(read_part(biggest))
    biggest.write_bytes(biggest.read_bytes()[:-30])  # the part holding most of the index, damaged
    report = repair_store(FeatureStore.open(store.path))
    assert 0 < report.recovered <= held and report.lost == [] and len(report.quarantined) == 1
    pd.testing.assert_frame_equal(FeatureStore.open(store.path).index(), index)  # records as committed
    for part in list_parts(store.index_dir):
        part.unlink()  # the whole index gone
    report = repair_store(FeatureStore.open(store.path))
    rebuilt = FeatureStore.open(store.path).index()
    pd.testing.assert_frame_equal(rebuilt, index)
    assert verify_store(FeatureStore.open(store.path)) == []


def test_a_compacted_store_needs_no_recovery(store: FeatureStore) -> None:
    for task in range(10):
        commit_task(store, task)
    compact_store(store)
    assert len(list_parts(store.index_dir)) == 1
    assert repair_store(FeatureStore.open(store.path)).recovered == 0


# ----------------------------------------------------------------------------- pooled
def test_pooled_equals_the_mean_of_each_videos_rows(store: FeatureStore) -> None:
    with StoreLease(store.path):
        for task in range(30):
            commit_task(store, task, videos=5)
            store.merge_index(fan_in=3)
    ids = store.video_ids("ok")
    rng = random.Random(1)
    asked = rng.sample(ids, len(ids)) + ids[:3]  # any order, repeats allowed
    got_ids, pooled = FeatureStore.open(store.path).pooled(asked)
    assert got_ids == asked
    expected = np.stack([store.features(v).astype(np.float32).mean(axis=0) for v in asked])
    np.testing.assert_array_equal(pooled, expected)
    all_ids, all_pooled = store.pooled()
    assert all_ids == sorted(ids)
    np.testing.assert_array_equal(all_pooled, np.stack([store.features(v).mean(axis=0) for v in all_ids]))
    failed = next(v for v in store.video_ids("failed"))
    with pytest.raises(StoreError, match="no features"):
        store.pooled([ids[0], failed])
    with pytest.raises(StoreError, match="not in the store"):
        store.pooled(["nope"])


# ----------------------------------------------------------------------------- in an extraction run
@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for seed in range(8):
        make_test_clip(
            root / f"c{seed % 2}/v{seed}.mp4", seconds=1.0, width=32, height=24, fps=8.0, seed=seed
        )
    return root


def job(videos: list[str], out: Path) -> ExtractConfig:
    return ExtractConfig(videos=videos, extractors=["visual", "audio"], out=str(out), cluster="none",
                         weights={"*": "random"}, builder="extract_fakes:build",
                         runner="extract_fakes:extract_videos", shard_size=1)  # fmt: skip


def test_a_run_merges_as_it_goes_and_reads_each_index_part_once(
    clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_run = run_extract(job([str(clips)], tmp_path / "plain"), progress=False)  # 8 tasks: no merge
    assert all(len(list_parts(Path(p) / "index")) == 8 for p in plain_run.stores.values())
    monkeypatch.setattr(merge_module, "FAN_IN", 2)
    first = sorted(str(p) for p in clips.rglob("*.mp4"))[:5]
    run_extract(job(first, tmp_path / "out"), progress=False)
    reads: list[str] = []
    read_parts = store_module.read_parts

    def counting(parts: list[Path], fingerprint: str | None = None):
        reads.extend(p.name for p in parts)
        return read_parts(parts, fingerprint)

    monkeypatch.setattr(store_module, "read_parts", counting)
    resumed = run_extract(job([str(clips)], tmp_path / "out"), progress=False)
    assert resumed.planned_videos == 3 and resumed.exit_code == 0
    assert reads and max(reads.count(name) for name in reads) == 1  # plan and summary: one read in all
    for name, path in resumed.stores.items():
        store = FeatureStore.open(path)
        parts = list_parts(store.index_dir)
        assert len(parts) <= 3 and any(level_of(p.name) >= 2 for p in parts), name  # 8 tasks, merged
        assert not store.records().duplicated(["video_id", "part"]).any()
        plain_store = FeatureStore.open(plain_run.stores[name])
        for video_id in plain_store.video_ids():
            np.testing.assert_array_equal(store.features(video_id), plain_store.features(video_id))
