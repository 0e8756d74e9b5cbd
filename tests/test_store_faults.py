"""Fault injection: what a user extracted is never lost, and every fault ends in a clear state.

Each test breaks one thing the way a machine or a user does (a moved source, a flipped byte, a truncated or
deleted file, a full disk, a killed decoder, concurrent runs) and checks that the features that were right
stay right, what is lost is redone exactly, and the run says what happened (docs/store.md). The extractor is
the test double of ``tests/extract_fakes.py`` (real decoding, cheap features) unless a test needs the real
runner. ``benchmarks/store_faults.py`` runs the same faults at a larger scale and writes BENCHMARKS.md.
"""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from pipeline.decode import Outcome, iter_frames, open_guarded, probe
from pipeline.manifest import VideoManifest
from pipeline.store import (
    FeatureStore,
    StoreBusy,
    StoreError,
    StoreLease,
    compact_store,
    repair_store,
    verify_store,
)
from pipeline.store.shard import ShardReader
from pipeline.synth.faults import make_fault_corpus
from pipeline.synth.media import make_test_clip
from workflows.cli import main as cli_main
from workflows.extract import ExtractConfig, format_summary, run_extract
from workflows.extract.client import prepare_stores
from workflows.extract.plan import ShardTask, VideoItem, final_mask, needs_work, source_stat
from workflows.extract.worker import StoreTarget, run_shard

NAMES = ["cat/c0", "cat/c1", "cat/c2", "cat/c3", "dog/d0", "dog/d1", "dog/d2", "dog/d3"]


@pytest.fixture(scope="module")
def clip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for seed, name in enumerate(NAMES):
        make_test_clip(
            root / f"{name}.mp4", seconds=1.0 + 0.25 * (seed % 3), width=48, height=32, fps=8.0, seed=seed
        )
    return root


@pytest.fixture
def clips(clip_cache: Path, tmp_path: Path) -> Path:
    """A private copy of the clips: tests delete and change sources."""
    return Path(shutil.copytree(clip_cache, tmp_path / "videos"))


def job(src: Path | list[Path], out: Path, **overrides) -> ExtractConfig:
    videos = [str(p) for p in src] if isinstance(src, list) else [str(src)]
    base = {
        "videos": videos,
        "extractors": ["visual", "audio"],
        "out": str(out),
        "cluster": "none",
        "weights": {"*": "random"},
        "builder": "extract_fakes:build",
        "runner": "extract_fakes:extract_videos",
        "shard_size": 3,
    }
    return ExtractConfig(**(base | overrides))


def cli_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["extract", "--videos", str(src), "--out", str(out), "--cluster", "none", "--extractor", "visual",
            "--extractor", "audio", "--weights", "random", "--shard-size", "3", "--builder",
            "extract_fakes:build", "--runner", "extract_fakes:extract_videos", "--no-progress", *extra]  # fmt: skip


def features_of(stores: dict[str, str]) -> dict[tuple[str, str], tuple]:
    """Every video's rows and timestamps (or failure outcome) in every store, keyed by (extractor, video)."""
    out = {}
    for name, path in stores.items():
        store = FeatureStore.open(path)
        for video_id, record in store.index().iterrows():
            if record["status"] == "failed":
                out[(name, video_id)] = (record["outcome"],)
            else:
                out[(name, video_id)] = (store.features(video_id), *store.timestamps(video_id))
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert len(a[key]) == len(b[key]), key
        for left, right in zip(a[key], b[key], strict=True):
            np.testing.assert_array_equal(left, right, err_msg=str(key))


@pytest.fixture(scope="module")
def reference(clip_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A clean, uninterrupted run: what every faulted-then-recovered run must end with, bit for bit."""
    summary = run_extract(job(clip_cache, tmp_path_factory.mktemp("ref")), progress=False)
    assert summary.exit_code == 0 and summary.status["visual"]["ok"] == 8
    return {(n, v): rows for (n, v), rows in features_of(summary.stores).items()}


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def shard_of(store: FeatureStore, video_id: str) -> Path:
    return store.shards_dir / store.index().loc[video_id, "shard"]


def videos_in(shard: Path) -> list[str]:
    return sorted(ShardReader(shard).video_ids)


# ----------------------------------------------------------------------------- 1. moved or deleted sources
def test_missing_sources_keep_their_features_and_are_reported(clips: Path, tmp_path: Path, reference) -> None:
    manifest = VideoManifest.from_folder(clips).to_parquet(tmp_path / "manifest.parquet")
    first = run_extract(job(manifest, tmp_path / "out"), progress=False)
    shutil.rmtree(clips / "cat")  # 4 of 8 sources of the manifest deleted (or moved)
    again = run_extract(job(manifest, tmp_path / "out"), progress=False)
    assert again.planned_videos == 0 and again.exit_code == 0
    assert again.missing_sources == ["cat/c0", "cat/c1", "cat/c2", "cat/c3"]
    assert "4 video(s) keep their features but their source file is missing" in format_summary(again)
    retry = run_extract(job(manifest, tmp_path / "out", retry_failed=True), progress=False)
    assert retry.planned_videos == 0  # --retry-failed redoes failures, never trades features for not_found
    for path in first.stores.values():
        assert compact_store(FeatureStore.open(path)).shards_removed == 0
    assert_same(features_of(first.stores), reference)


def test_a_source_removed_after_planning_does_not_undo_features(clips: Path, tmp_path: Path) -> None:
    summary = run_extract(job(clips, tmp_path / "out", extractors=["visual"]), progress=False)
    store = FeatureStore.open(summary.stores["visual"])
    before = store.features("dog/d1")
    (clips / "dog/d1.mp4").unlink()  # gone between the plan and the task
    task = ShardTask("late", (VideoItem("dog/d1", str(clips / "dog/d1.mp4"), ("visual",)),), ("visual",))
    target = StoreTarget(str(store.path), store.fingerprint)
    result = run_shard(task, job(clips, tmp_path / "out", extractors=["visual"]), {"visual": target})
    assert result.counts["visual"] == {"source_missing": 1}
    store.refresh()
    assert store.index().loc["dog/d1", "status"] == "ok"
    np.testing.assert_array_equal(store.features("dog/d1"), before)


# ----------------------------------------------------------------------------- 2. damaged index parts
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_index_part_is_skipped_reported_and_recovered(
    clips: Path, tmp_path: Path, reference, damage: str, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    summary = run_extract(job(clips, out), progress=False)
    store = FeatureStore.open(summary.stores["visual"])
    part = store.index_dir / store.index().loc["dog/d1", "part"]
    lost = set(store.index()[store.index()["part"] == part.name].index)
    if damage == "truncate":
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    else:  # a byte of the column data (past the magic and the first page header)
        flip_byte(part, 40)
    store = FeatureStore.open(store.path)
    assert [d.path for d in store.damaged_parts] == [part]  # no crash: skipped, named
    assert lost.isdisjoint(store.video_ids(None))
    assert [p.kind for p in verify_store(store) if p.severity == "error"] == ["bad_index"]
    assert cli_main(["store", "info", str(store.path)]) == 0
    assert "DAMAGED index part" in capsys.readouterr().out
    again = run_extract(job(clips, out), progress=False)  # repairs first: nothing is recomputed
    assert "recovered 3 index record(s)" in again.repairs["visual"] and again.planned_videos == 0
    assert (store.quarantine_dir / "index" / part.name).exists()
    assert_same(features_of(again.stores), reference)
    assert verify_store(FeatureStore.open(store.path)) == []


def test_one_compacted_part_damaged_loses_nothing(clips: Path, tmp_path: Path, reference) -> None:
    summary = run_extract(job(clips, tmp_path / "out"), progress=False)
    store = FeatureStore.open(summary.stores["audio"])
    compact_store(store)
    (part,) = store.index_dir.glob("*.parquet")
    part.write_bytes(b"")  # the whole index of the store
    assert FeatureStore.open(store.path).video_ids(None) == []
    report = repair_store(FeatureStore.open(store.path))
    assert report.recovered == 8 and report.lost == []
    assert_same(features_of(summary.stores), reference)


def test_index_byte_flips_are_detected_or_harmless(clips: Path, tmp_path: Path) -> None:
    summary = run_extract(job(clips, tmp_path / "out", extractors=["visual"]), progress=False)
    store = FeatureStore.open(summary.stores["visual"])
    part = sorted(store.index_dir.glob("*.parquet"))[0]
    good, original = part.read_bytes(), store.records()
    detected = 0
    for offset in range(0, len(good), max(1, len(good) // 40)):
        part.write_bytes(good)
        flip_byte(part, offset)
        damaged = FeatureStore.open(store.path)
        records = damaged.records()
        if damaged.damaged_parts:
            detected += 1
        else:  # undetected only where the flip changed nothing that is read (e.g. statistics)
            assert records.equals(original), offset
    assert detected > 0  # the rest hit bytes no read uses (statistics, padding): harmless


# ----------------------------------------------------------------------------- 3. shard checksums
def test_a_flipped_feature_byte_is_caught_by_reads_verify_and_repair(
    clips: Path, tmp_path: Path, reference, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    summary = run_extract(job(clips, out), progress=False)
    store = FeatureStore.open(summary.stores["visual"])
    shard = shard_of(store, "dog/d1")
    reader = ShardReader(shard)
    flip_byte(shard, reader.data_start + reader.entries["features"].begin + 2)  # first row's first value
    victims = videos_in(shard)
    store = FeatureStore.open(store.path)
    with pytest.raises(StoreError, match="do not match their checksum"):
        store.features(victims[0])
    assert [p.kind for p in verify_store(store)] == ["damaged"]
    assert verify_store(store, quick=True) == []  # --quick reads no feature data
    assert cli_main(["store", "verify", str(out)]) == 1
    assert "checksum mismatch in ['features']" in capsys.readouterr().out
    assert cli_main(["store", "repair", str(out)]) == 0
    assert f"marked {len(victims)} video(s) as not done" in capsys.readouterr().out
    redo = run_extract(job(clips, out), progress=False)
    assert redo.planned_videos == len(victims) and redo.exit_code == 0
    assert_same(features_of(redo.stores), reference)


def test_a_flipped_pooled_byte_is_caught_by_pooled_reads(clips: Path, tmp_path: Path) -> None:
    summary = run_extract(job(clips, tmp_path / "out", extractors=["visual"]), progress=False)
    store = FeatureStore.open(summary.stores["visual"])
    shard = shard_of(store, "cat/c0")
    reader = ShardReader(shard)
    flip_byte(shard, reader.data_start + reader.entries["pooled"].begin + 1)
    with pytest.raises(StoreError, match="pooled features do not match"):
        FeatureStore.open(store.path).pooled()
    assert FeatureStore.open(store.path, check_reads=False).pooled()[1].shape == (8, 4)


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_lost_shard_is_redone_exactly(clips: Path, tmp_path: Path, reference, damage: str) -> None:
    out = tmp_path / "out"
    summary = run_extract(job(clips, out), progress=False)
    store = FeatureStore.open(summary.stores["audio"])
    shard = shard_of(store, "cat/c2")
    victims = videos_in(shard)
    if damage == "delete":
        shard.unlink()  # the next run sees it is gone: no repair needed
    else:
        shard.write_bytes(shard.read_bytes()[:300])
        assert {p.kind for p in verify_store(FeatureStore.open(store.path))} == {"truncated"}
        assert repair_store(FeatureStore.open(store.path)).lost == victims
    redo = run_extract(job(clips, out), progress=False)
    assert redo.planned_videos == len(victims)
    assert_same(features_of(redo.stores), reference)
    assert [p for p in verify_store(FeatureStore.open(store.path)) if p.severity == "error"] == []


def test_compact_keeps_the_old_parts_when_the_merged_part_is_bad(
    clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.store.compact as compact

    summary = run_extract(job(clips, tmp_path / "out", extractors=["visual"]), progress=False)
    store = FeatureStore.open(summary.stores["visual"])
    parts, before = sorted(store.index_dir.glob("*.parquet")), store.index()
    write = compact.write_part

    def write_then_damage(path: Path, records: list[dict], fingerprint: str) -> None:
        write(path, records, fingerprint)
        path.write_bytes(path.read_bytes()[:-20])  # a write the disk did not keep

    monkeypatch.setattr(compact, "write_part", write_then_damage)
    with pytest.raises(StoreError, match="failed its check"):
        compact_store(store)
    assert sorted(store.index_dir.glob("*.parquet")) == parts
    assert FeatureStore.open(store.path).index().equals(before)


# ----------------------------------------------------------------------------- 4. interrupted creation
def test_a_store_folder_without_header_or_data_is_initialised_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.store.shard as shard

    spec = {"name": "fake", "output_dim": 4, "output_dtype": "float32"}

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(shard.os, "fsync", disk_full)
        with pytest.raises(OSError, match="No space"):
            FeatureStore.create(tmp_path / "s", spec, "fp")
    assert sorted(p.name for p in (tmp_path / "s").rglob("*")) == ["index", "shards"]  # no temp file
    assert FeatureStore.create(tmp_path / "s", spec, "fp").fingerprint == "fp"
    (tmp_path / "k/shards").mkdir(parents=True)  # a kill between mkdir and the header write
    (tmp_path / "k/index").mkdir()
    assert FeatureStore.create(tmp_path / "k", spec, "fp").fingerprint == "fp"
    (tmp_path / "d/shards").mkdir(parents=True)
    (tmp_path / "d/shards/x.safetensors").write_bytes(b"data")
    with pytest.raises(StoreError, match=r"no header.json but holds .*x.safetensors"):
        FeatureStore.create(tmp_path / "d", spec, "fp")


def test_atomic_text_writes_leave_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import atomic_write_text

    def disk_full(self: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "stores.json", "{}")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- 5. honest exit codes
def test_a_full_disk_mid_run_exits_1_with_the_resume_command(
    clips: Path, tmp_path: Path, reference, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import pipeline.store.shard as shard

    out = tmp_path / "out"
    write, calls = shard.atomic_write, []

    def fills_up(path: Path, writer) -> None:
        calls.append(path)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, writer)

    with monkeypatch.context() as patch:
        patch.setattr(shard, "atomic_write", fills_up)
        assert cli_main(cli_args(clips, out)) == 1
    text = capsys.readouterr().out
    assert "stopped early: the disk is full" in text and "NOT DONE" in text
    resume = text.split("resume: ", 1)[1].splitlines()[0]
    assert shlex.split(resume)[:2] == ["avzsl", "extract"]
    assert cli_main(shlex.split(resume)[1:]) == 0  # the printed command resumes and finishes
    assert_same(features_of({n: str(next(out.glob(f"{n}-*"))) for n in ("visual", "audio")}), reference)


# ----------------------------------------------------------------------------- 6. killed decoders
def kill_child(decode, killed: list[int], kills: int) -> None:
    """SIGKILL the decode's child, as the OOM killer does, unless ``kills`` children died already.

    Chunks the dead child sent before dying still arrive; the retry starts after them, so a child is
    killed only once (its successor is the next one).
    """
    if len(killed) < kills and decode._process.pid not in killed:
        killed.append(decode._process.pid)
        os.kill(decode._process.pid, signal.SIGKILL)


def _killed_frames(path: Path, kills: int):
    """Decode ``path`` in a guarded child, SIGKILLing ``kills`` children as chunks arrive."""
    killed: list[int] = []
    with open_guarded(path, chunk_frames=4, prefetch_chunks=1, timeout_s=60, want_audio=True) as decode:
        decode.audio()
        chunks = []
        for chunk in decode.frames():
            chunks.append(chunk)
            kill_child(decode, killed, kills)
    return decode, chunks


def test_a_decoder_killed_once_is_retried_and_twice_is_crashed(tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "long.mp4", seconds=4.0, width=64, height=48, fps=25.0)
    expected = np.concatenate([c.frames for c in iter_frames(clip)])
    decode, chunks = _killed_frames(clip, kills=1)
    assert decode.report.outcome is Outcome.OK and "retried in a fresh process" in decode.report.notes[0]
    np.testing.assert_array_equal(
        np.concatenate([c.frames for c in chunks]), expected
    )  # nothing lost or doubled
    decode, chunks = _killed_frames(clip, kills=2)
    assert decode.report.outcome is Outcome.CRASHED and "twice" in decode.report.error
    crashed = {"outcome": "crashed", "status": "failed", "shard": None, "source_size": 1, "source_mtime": 1.0}
    assert needs_work(crashed, (1, 1.0), retry_failed=False, shards=set())  # a plain resume redoes it
    undecodable = crashed | {"outcome": "undecodable"}
    assert not needs_work(undecodable, (1, 1.0), retry_failed=False, shards=set())


def test_the_job_records_a_twice_killed_decode_as_crashed_and_resume_redoes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real runner: a SIGKILL (as the OOM killer sends) never makes a good video ``undecodable``."""
    import extractors.runner

    videos = [make_test_clip(tmp_path / f"v/{n}.mp4", seconds=20.0, width=64, height=48, seed=i)
              for i, n in enumerate(["good", "victim"])]  # fmt: skip
    kills = {"wanted": 0}

    def killing_open(path, **options):
        decode = open_guarded(path, **options)
        frames, killed = decode.frames, []

        def frames_then_kill():
            for chunk in frames():
                yield chunk
                if "victim" in str(path):
                    kill_child(decode, killed, kills["wanted"])

        decode.frames = frames_then_kill
        return decode

    monkeypatch.setitem(extractors.runner.OPENERS, "process", killing_open)
    cfg = ExtractConfig(videos=[str(v) for v in videos], extractors=["framestats"], out=str(tmp_path / "out"),
                        cluster="none", weights={"*": "none"}, builder="benchmarks.scale:build_frame_stats")  # fmt: skip
    clean = features_of(
        run_extract(cfg.model_copy(update={"out": str(tmp_path / "clean")}), progress=False).stores
    )
    kills["wanted"] = 1
    once = run_extract(cfg, progress=False)
    assert (
        once.exit_code == 0
        and FeatureStore.open(once.stores["framestats"]).index().loc["victim", "status"] == "ok"
    )
    assert_same(features_of(once.stores), clean)
    shutil.rmtree(tmp_path / "out")
    kills["wanted"] = 2
    twice = run_extract(cfg, progress=False)
    index = FeatureStore.open(twice.stores["framestats"]).index()
    assert index.loc["victim", ["status", "outcome"]].tolist() == ["failed", "crashed"]
    assert twice.exit_code == 1 and twice.status["framestats"]["not_done"] == 1
    kills["wanted"] = 0
    resumed = run_extract(cfg, progress=False)
    assert resumed.planned_videos == 1 and resumed.exit_code == 0
    assert_same(features_of(resumed.stores), clean)


# ----------------------------------------------------------------------------- 7. inputs dropped silently
def test_every_file_under_videos_is_in_the_job_or_reported(
    clip_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    corpus = make_fault_corpus(tmp_path / "corpus")
    root = tmp_path / "videos"
    (root / "cat").mkdir(parents=True)
    shutil.copy(clip_cache / "cat/c0.mp4", root / "cat/c0.mp4")
    shutil.copy(corpus["no_video"], root / "cat/song.m4a")  # audio only: valid for audio extractors
    (root / "cat/notes.txt").write_text("not media")
    (root / "cat/.DS_Store").write_bytes(b"\0")
    shutil.copy(clip_cache / "dog/d0.mp4", root / "stray.mp4")  # outside a class folder
    summary = run_extract(job(root, tmp_path / "out"), progress=False)
    audio = FeatureStore.open(summary.stores["audio"]).index()
    visual = FeatureStore.open(summary.stores["visual"]).index()
    assert audio.loc["cat/song", "status"] == "ok"
    assert visual.loc["cat/song", ["status", "outcome"]].tolist() == ["failed", "no_video"]
    text = format_summary(summary)
    assert "3 file(s) under --videos are not in the job" in text
    for name in ("notes.txt", ".DS_Store", "stray.mp4"):
        assert name in text
    assert (
        cli_main(["manifest", "build", "--from-folder", str(root), "--out", str(tmp_path / "m.parquet")]) == 0
    )
    out = capsys.readouterr().out
    assert "wrote" in out and "2 videos" in out
    for name in ("notes.txt", ".DS_Store", "stray.mp4"):
        assert name in out


# ----------------------------------------------------------------------------- 8. lease take-over race
def _slowly(function):
    """``function`` after a random pause of up to 5 ms: a loaded machine between judging and taking over."""

    def call(*args, **kwargs):
        time.sleep(random.random() * 0.005)
        return function(*args, **kwargs)

    return call


def _contend(path: str, barrier, results, trials: int) -> None:
    psutil.pid_exists, psutil.Process = _slowly(psutil.pid_exists), _slowly(psutil.Process)  # this child only
    for _ in range(trials):
        barrier.wait()  # the stale lease is in place
        lease = StoreLease(path, heartbeat_s=3600)
        try:
            lease.acquire()
            held = True
        except StoreBusy:
            held = False
        results.put(held)
        barrier.wait()  # everybody has tried
        if held:
            lease.release()
        barrier.wait()  # released


@pytest.mark.slow
def test_a_stale_lease_is_taken_over_by_exactly_one_of_many(tmp_path: Path) -> None:
    processes, trials = 12, 20
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "started": 0})
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(processes + 1), ctx.Queue()
    workers = [
        ctx.Process(target=_contend, args=(str(tmp_path), barrier, results, trials)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    holders = []
    try:
        for _ in range(trials):
            (tmp_path / ".lease").write_text(stale)
            barrier.wait()
            barrier.wait()
            holders.append(sum(results.get(timeout=60) for _ in range(processes)))
            barrier.wait()
    finally:
        for worker in workers:
            worker.join(timeout=60)
    assert holders == [1] * trials


# ----------------------------------------------------------------------------- 9. a corrupt middle
def test_deep_probe_reports_a_corrupt_middle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = make_test_clip(tmp_path / "mid.mp4", seconds=4.0, width=160, height=120, seed=0)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    assert probe(path).status is Outcome.OK  # the packet scan cannot see it
    deep = probe(path, deep=True)
    assert deep.status is Outcome.PARTIAL and any(r.startswith("video ") for r in deep.corrupt_regions)
    assert cli_main(["probe", "--json", "--deep", str(path)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["status"] == "partial" and record["corrupt_regions"] == list(deep.corrupt_regions)
    clean = make_test_clip(tmp_path / "clean.mp4", seconds=1.0, width=64, height=48)
    assert probe(clean, deep=True).status is Outcome.OK


# ----------------------------------------------------------------------------- issue 15: output folders
def test_store_commands_take_the_extract_output_folder(
    clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    run_extract(job(clips, out), progress=False)
    assert cli_main(["store", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("videos 8: ok 8") == 2 and "visual-" in text and "audio-" in text
    for action in (["verify"], ["verify", "--quick"], ["repair"], ["compact"]):
        assert cli_main(["store", *action, str(out)]) == 0, action
    assert cli_main(["store", "info", str(tmp_path)]) == 2  # no store there: a usage error, not a traceback
    capsys.readouterr()
    manifest = tmp_path / "m.parquet"
    assert (
        cli_main(["store", "export", str(out), "--manifest", str(manifest), "--out", str(tmp_path / "x")])
        == 2
    )
    assert str(manifest) in capsys.readouterr().err  # both stores found; the missing manifest is named


def test_runs_of_other_extractors_into_one_folder_keep_every_store(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_extract(job(clips, out, extractors=["visual"]), progress=False)
    second = run_extract(job(clips, out, extractors=["audio"]), progress=False)
    listing = json.loads((out / "stores.json").read_text())
    assert listing == {
        "audio": Path(second.stores["audio"]).name,
        "visual": Path(first.stores["visual"]).name,
    }
    for summary, name in ((first, "visual"), (second, "audio")):
        recorded = ExtractConfig.from_yaml(Path(summary.stores[name]) / "config.yaml")
        assert recorded.extractors == [name]  # each store keeps the config of the run that wrote it
    config_before = (out / "config.yaml").read_text()
    with StoreLease(first.stores["visual"]), pytest.raises(StoreBusy):
        run_extract(job(clips, out, extractors=["visual", "audio2"]), progress=False)
    assert json.loads((out / "stores.json").read_text()) == listing  # a refused run changes nothing
    assert (out / "config.yaml").read_text() == config_before


def test_store_files_follow_the_umask(clips: Path, tmp_path: Path) -> None:
    previous = os.umask(0o002)  # a group shares the store
    try:
        summary = run_extract(job(clips, tmp_path / "out", extractors=["visual"]), progress=False)
    finally:
        os.umask(previous)
    store = Path(summary.stores["visual"])
    files = [store / "header.json", *store.glob("shards/*"), *store.glob("index/*")]
    assert len(files) > 3 and {oct(p.stat().st_mode & 0o777) for p in files} == {"0o664"}


def test_progress_advances_per_video(clips: Path, tmp_path: Path) -> None:
    cfg = job(clips, tmp_path / "out", extractors=["visual"])
    stores, targets = prepare_stores(cfg)
    seen: list[tuple[str, str]] = []
    committed: list[int] = []

    def on_video(task_key: str, video_id: str) -> None:
        seen.append((task_key, video_id))
        committed.append(len(FeatureStore.open(stores["visual"].path).video_ids(None)))

    items = tuple(VideoItem(n, str(clips / f"{n}.mp4")) for n in NAMES[:3])
    run_shard(ShardTask("t1", items, ("visual",)), cfg, targets, on_video)
    assert seen == [("t1", n) for n in NAMES[:3]]
    assert committed == [0, 0, 0]  # each step came as its video finished, before the shard's commit


@pytest.mark.slow
def test_dask_workers_report_progress_per_video(
    clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workflows.extract import client

    events = []
    monkeypatch.setattr(client._Progress, "event", lambda self, event: events.append(event[1]))
    summary = run_extract(job(clips, tmp_path / "out", cluster="local", workers=1), progress=True)
    assert summary.exit_code == 0
    assert sorted(e["video"] for e in events) == sorted(f"{n}" for n in NAMES)


def test_not_done_videos_are_not_final(tmp_path: Path) -> None:
    import pyarrow as pa

    index = pa.table({"outcome": ["ok", "lost", "crashed", "error", "ok", "undecodable"],
                      "shard": ["a", None, None, None, "gone", None]})  # fmt: skip
    assert final_mask(index, {"a"}).tolist() == [True, False, False, False, False, True]
    assert source_stat(str(tmp_path / "nothing")) == (-1, 0.0)
