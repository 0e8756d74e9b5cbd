"""FeatureStore: parallel writers, index semantics, memory-mapped reads, verify, lease, layouts round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from pipeline.manifest import VideoManifest
from pipeline.store import FeatureStore, StoreBusy, StoreError, StoreLease, compact_store, verify_store
from pipeline.store.layouts import import_layout

DIM = 6
SPEC = {"name": "fake", "modality": "audio", "output_dim": DIM, "output_dtype": "float32"}


def rows_for(video_id: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic ragged features for a video id."""
    rng = np.random.default_rng(zlib.crc32(video_id.encode()))
    start = np.arange(n) * 0.96
    return rng.standard_normal((n, DIM)).astype(np.float32), start, start + 0.96


def write_videos(store: FeatureStore, task_key: str, ids: list[str], lengths: list[int]) -> str | None:
    writer = store.writer(task_key)
    for video_id, n in zip(ids, lengths, strict=True):
        feats, start, end = rows_for(video_id, n)
        writer.add(video_id, feats, start, end, "ok", None, f"/videos/{video_id}.mp4", 100 + n, 1000.0 + n)
    return writer.commit()


def _write_task(args: tuple[str, int]) -> None:
    path, task = args
    store = FeatureStore.open(path)
    ids = [f"t{task}/v{i}" for i in range(5)]
    write_videos(store, f"task-{task}", ids, [1 + (i + task) % 4 for i in range(5)])


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    return FeatureStore.create(tmp_path / "store", SPEC, "fp-test")


def test_header_records_spec_versions_and_dims(store: FeatureStore) -> None:
    header = json.loads((store.path / "header.json").read_text())
    assert header["fingerprint"] == "fp-test"
    assert header["spec"]["name"] == "fake"
    assert header["dim"] == DIM and header["dtype"] == "float32"
    assert header["random_weights"] is False
    assert "torch" in header["versions"] and header["created"]


def test_create_refuses_other_fingerprint_and_reopens_same(store: FeatureStore) -> None:
    assert FeatureStore.create(store.path, SPEC, "fp-test").fingerprint == "fp-test"
    with pytest.raises(StoreError, match="fingerprint"):
        FeatureStore.create(store.path, SPEC, "other")


def test_ragged_reads_timestamps_and_pooled(store: FeatureStore) -> None:
    write_videos(store, "a", ["x/1", "x/2", "x/3"], [3, 1, 5])
    for video_id, n in (("x/1", 3), ("x/2", 1), ("x/3", 5)):
        feats, start, end = rows_for(video_id, n)
        np.testing.assert_array_equal(store.features(video_id), feats)
        got_start, got_end = store.timestamps(video_id)
        np.testing.assert_array_equal(got_start, start)
        np.testing.assert_array_equal(got_end, end)
    ids, pooled = store.pooled(["x/3", "x/1"])
    assert ids == ["x/3", "x/1"]
    np.testing.assert_allclose(pooled[0], rows_for("x/3", 5)[0].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(pooled[1], rows_for("x/1", 3)[0].mean(axis=0), rtol=1e-6)


def test_failed_and_partial_status_and_superseding(store: FeatureStore) -> None:
    writer = store.writer("first")
    writer.add("bad", None, None, None, "undecodable", "not a media file", "/v/bad", 3, 1.0)
    feats, start, end = rows_for("half", 2)
    writer.add("half", feats, start, end, "partial", "stopped at 2.1 s", "/v/half", 9, 1.0)
    writer.commit()
    index = store.index()
    assert index.loc["bad", "status"] == "failed" and index.loc["bad", "outcome"] == "undecodable"
    assert index.loc["half", "status"] == "partial"
    assert store.video_ids("failed") == ["bad"] and store.video_ids("ok") == []
    with pytest.raises(StoreError, match="no features"):
        store.features("bad")
    write_videos(store, "second", ["bad"], [2])  # re-extracted later: the newer record wins
    assert store.index().loc["bad", "status"] == "ok"
    assert len(store.records()) == 3
    np.testing.assert_array_equal(store.features("bad"), rows_for("bad", 2)[0])


def test_writer_rejects_wrong_dim_and_dtype(store: FeatureStore) -> None:
    writer = store.writer("w")
    with pytest.raises(StoreError, match="dim"):
        writer.add("v", np.zeros((2, DIM + 1), np.float32), np.zeros(2), np.ones(2), "ok", None, "/v", 1, 1.0)
    with pytest.raises(StoreError, match="dtype"):
        writer.add("v", np.zeros((2, DIM), np.float64), np.zeros(2), np.ones(2), "ok", None, "/v", 1, 1.0)


def test_parallel_writer_processes_without_locks(store: FeatureStore) -> None:
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_write_task, [(str(store.path), t) for t in range(6)]))
    store.refresh()
    assert len(store.video_ids()) == 30
    assert len(list(store.shards_dir.glob("*.safetensors"))) == 6
    for task in range(6):
        for i in range(5):
            vid = f"t{task}/v{i}"
            np.testing.assert_array_equal(store.features(vid), rows_for(vid, 1 + (i + task) % 4)[0])
    assert verify_store(store) == []


def test_verify_finds_truncated_missing_orphaned_and_foreign(store: FeatureStore, tmp_path: Path) -> None:
    truncated = write_videos(store, "trunc", ["a", "b"], [4, 4])
    missing = write_videos(store, "missing", ["c"], [2])
    orphan_src = write_videos(store, "orphan", ["d"], [2])
    assert verify_store(store) == []
    path = store.shards_dir / truncated
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 10])
    (store.shards_dir / missing).unlink()
    for part in store.index_dir.glob(orphan_src.replace(".safetensors", ".parquet")):
        part.unlink()
    other = FeatureStore.create(tmp_path / "other", SPEC, "fp-other")
    foreign = write_videos(other, "foreign", ["e"], [1])
    (store.shards_dir / foreign).write_bytes((other.shards_dir / foreign).read_bytes())
    kinds = {(p.kind, Path(p.path).name) for p in verify_store(store)}
    assert ("truncated", truncated) in kinds
    assert ("missing", missing) in kinds
    assert ("orphaned", orphan_src) in kinds
    assert ("foreign", foreign) in kinds


def test_lease_refuses_second_run_and_takes_over_stale(store: FeatureStore) -> None:
    with StoreLease(store.path), pytest.raises(StoreBusy, match="another run is writing"):
        StoreLease(store.path).acquire()
    assert not (store.path / ".lease").exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lease = json.loads(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "started": 0}))
    (store.path / ".lease").write_text(json.dumps(lease))
    with StoreLease(store.path) as taken:
        assert json.loads((store.path / ".lease").read_text())["pid"] == taken.owner["pid"]


def test_import_reads_byte_string_video_urls(tmp_path: Path) -> None:
    folder = tmp_path / "cls_features/video/stage_1_train"
    folder.mkdir(parents=True)
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    with h5py.File(folder / "ApplyEyeMakeup.h5", "w") as handle:
        handle.create_dataset("data", data=data)
        handle.create_dataset(
            "video_urls", data=np.array([b"v_ApplyEyeMakeup_g01_c01", b"v_x_g02_c01"], "S80")
        )
    store = import_layout(tmp_path / "cls_features/video", tmp_path / "s", "h5")
    assert store.header["spec"]["modality"] == "visual"
    np.testing.assert_array_equal(store.features("v_x_g02_c01"), data[1:])


def test_cli_info_verify_export_import(
    store: FeatureStore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from workflows.cli import main as cli_main

    ids = ["cat/a", "cat/b", "dog/c", "dog/d", "eel/e"]
    write_videos(store, "lab", ids, [3, 1, 2, 4, 2])
    manifest = pd.DataFrame(
        {"video_id": ids, "path": None, "label": [v[:3] for v in ids], "split": "s1_train"}
    )
    VideoManifest(manifest).to_parquet(tmp_path / "manifest.parquet")
    assert cli_main(["store", "info", str(store.path)]) == 0
    assert "videos 5: ok 5, partial 0, failed 0" in capsys.readouterr().out
    assert cli_main(["store", "verify", str(store.path)]) == 0
    out = tmp_path / "export"
    args = [
        "store",
        "export",
        str(store.path),
        "--manifest",
        str(tmp_path / "manifest.parquet"),
        "--out",
        str(out),
    ]
    assert cli_main([*args, "--layout", "npy"]) == 0  # one store: npy (h5/pkl: tests/test_store_layouts.py)
    assert cli_main(["store", "import", str(tmp_path / "imp"), "--from", str(out / "npy/fake"),
                     "--layout", "npy"]) == 0  # fmt: skip
    assert FeatureStore.open(tmp_path / "imp").video_ids() == store.video_ids()
    shard = next(store.shards_dir.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])
    capsys.readouterr()
    assert cli_main(["store", "verify", str(store.path)]) == 1
    assert "truncated" in capsys.readouterr().out
    assert cli_main(["store", "info", str(tmp_path / "nowhere")]) == 2


def test_compact_merges_parts_and_drops_unused_shards(store: FeatureStore) -> None:
    first = write_videos(store, "a", ["v1", "v2"], [2, 3])
    write_videos(store, "b", ["v3"], [1])
    failed = store.writer("failed")
    failed.add("bad", None, None, None, "undecodable", "not a media file", "/v/bad", 3, 1.0)
    failed.commit()
    write_videos(store, "c", ["v1", "v2"], [4, 1])  # supersedes every video of shard a
    orphan = write_videos(store, "d", ["v9"], [2])
    (store.index_dir / orphan.replace(".safetensors", ".parquet")).unlink()  # its writer died mid-commit
    before = {v: store.features(v) for v in store.video_ids()} | {"v9": rows_for("v9", 2)[0]}
    report = compact_store(store)
    assert report.repair.recovered == 1  # the orphan's record, from its own header: nothing is lost
    assert report.parts_merged == 5 and report.shards_removed == 1
    assert not (store.shards_dir / first).exists() and (store.shards_dir / orphan).exists()
    assert len(list(store.index_dir.glob("*.parquet"))) == 1
    assert store.video_ids() == ["v1", "v2", "v3", "v9"]
    assert store.index().loc["bad", ["status", "outcome", "row"]].tolist() == ["failed", "undecodable", -1]
    for video_id, rows in before.items():
        np.testing.assert_array_equal(store.features(video_id), rows)
    assert verify_store(store) == []
