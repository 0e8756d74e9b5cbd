"""The Dask extraction job: resume, changed sources, faults, leases, worker kills, SIGKILL and real clusters.

The extractor is the test double in ``tests/extract_fakes.py`` (real decoding, cheap features), loaded by
import path so in-process runs, LocalCluster workers, ``dask worker`` processes and ``avzsl extract``
subprocesses all run the same code.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.store import FeatureStore, StoreBusy, StoreLease, verify_store
from pipeline.synth.faults import make_fault_corpus
from pipeline.synth.media import make_test_clip
from workflows.cli import main as cli_main
from workflows.extract import ExtractConfig, format_summary, run_extract

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
VENV_BIN = Path(sys.executable).parent
EXTRACTORS = ["visual", "audio"]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight tiny labelled clips in class folders (one whose id contains "kill" for the worker-kill test)."""
    root = tmp_path_factory.mktemp("clips")
    names = ["cat/c0", "cat/c1", "cat/kill2", "cat/c3", "dog/d0", "dog/d1", "dog/d2", "dog/d3"]
    for seed, name in enumerate(names):
        make_test_clip(
            root / f"{name}.mp4", seconds=1.0 + 0.25 * (seed % 3), width=48, height=32, fps=8.0, seed=seed
        )
    return root


def config(src: Path | list[Path], out: Path, **overrides) -> ExtractConfig:
    videos = [str(p) for p in src] if isinstance(src, list) else [str(src)]
    base = {
        "videos": videos,
        "extractors": EXTRACTORS,
        "out": str(out),
        "cluster": "none",
        "weights": {"*": "random"},
        "builder": "extract_fakes:build",
        "runner": "extract_fakes:extract_videos",
        "shard_size": 3,
    }
    return ExtractConfig(**(base | overrides))


def features_of(summary_stores: dict[str, str]) -> dict[tuple[str, str], tuple[np.ndarray, ...]]:
    """Every video's rows and timestamps in every store, keyed by (extractor, video_id)."""
    out = {}
    for name, path in summary_stores.items():
        store = FeatureStore.open(path)
        for video_id in store.video_ids(None):
            if store.index().loc[video_id, "status"] == "failed":
                out[(name, video_id)] = (store.index().loc[video_id, "outcome"],)
            else:
                out[(name, video_id)] = (store.features(video_id), *store.timestamps(video_id))
    return out


def assert_same_features(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert len(a[key]) == len(b[key]), key
        for left, right in zip(a[key], b[key], strict=True):
            np.testing.assert_array_equal(left, right, err_msg=str(key))


@pytest.fixture(scope="module")
def reference(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted in-process run: the features every other run must reproduce bitwise."""
    summary = run_extract(config(clips, tmp_path_factory.mktemp("ref")), progress=False)
    assert summary.status["visual"] == {"ok": 8, "partial": 0, "failed": 0, "not_done": 0}
    return features_of(summary.stores)


def test_run_writes_stores_header_and_run_info(clips: Path, tmp_path: Path, reference: dict) -> None:
    summary = run_extract(config(clips, tmp_path / "out"), progress=False)
    assert summary.planned_tasks == 3 and summary.exit_code == 0  # 8 videos in shards of 3
    assert (tmp_path / "out/config.yaml").exists() and (tmp_path / "out/versions.json").exists()
    store = FeatureStore.open(summary.stores["audio"])
    assert store.random_weights and store.header["spec"]["modality"] == "audio"
    assert store.video_ids() == [
        "cat/c0",
        "cat/c1",
        "cat/c3",
        "cat/kill2",
        "dog/d0",
        "dog/d1",
        "dog/d2",
        "dog/d3",
    ]
    assert_same_features(features_of(summary.stores), reference)
    assert verify_store(store) == []


def test_rerun_skips_done_and_redoes_changed_source(clips: Path, tmp_path: Path) -> None:
    run_extract(config(clips, tmp_path / "out"), progress=False)
    again = run_extract(config(clips, tmp_path / "out"), progress=False)
    assert again.planned_videos == 0 and again.skipped_videos == 8 and again.exit_code == 0
    changed = clips / "dog/d1.mp4"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    redo = run_extract(config(clips, tmp_path / "out"), progress=False)
    assert redo.planned_videos == 1
    store = FeatureStore.open(redo.stores["visual"])
    assert store.index().loc["dog/d1", "source_mtime"] == changed.stat().st_mtime
    assert (store.records()["video_id"] == "dog/d1").sum() == 2  # the newer record supersedes the first


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_fault_corpus(tmp_path_factory.mktemp("faults"))


def test_fault_corpus_outcomes_are_recorded(corpus: dict[str, Path], tmp_path: Path) -> None:
    paths = [*corpus.values(), corpus["ok"].parent / "missing.mp4"]
    summary = run_extract(config(paths, tmp_path / "out"), progress=False)
    visual = FeatureStore.open(summary.stores["visual"]).index()
    audio = FeatureStore.open(summary.stores["audio"]).index()
    assert visual.loc["ok", "status"] == "ok" and audio.loc["ok", "status"] == "ok"
    assert visual.loc["truncated", "status"] == "partial" and visual.loc["truncated", "row_count"] > 0
    assert visual.loc["no_audio", "status"] == "ok"
    assert audio.loc["no_audio", ["status", "outcome"]].tolist() == ["failed", "no_audio"]
    assert visual.loc["no_video", "outcome"] == "no_video" and audio.loc["no_video", "status"] == "ok"
    assert visual.loc["random_bytes", "outcome"] == "undecodable"
    assert visual.loc["zero_length", "outcome"] == "empty_file"
    assert audio.loc["short_0_3s", "outcome"] == "too_short" and visual.loc["short_0_3s", "status"] == "ok"
    assert visual.loc["vfr", "status"] == "ok"
    assert visual.loc["missing", "outcome"] == "not_found"
    assert all(isinstance(r, str) and r for r in visual.loc[visual["status"] == "failed", "reason"])
    assert summary.exit_code == 0 and summary.failed["visual"]["undecodable"] == 1


def test_runner_crash_is_recorded_and_redone_by_the_next_run(
    clips: Path, tmp_path: Path, reference: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CRASH_ON", "dog/d1")
    first = run_extract(config(clips, tmp_path / "out"), progress=False)
    index = FeatureStore.open(first.stores["visual"]).index()
    assert (
        index.loc["dog/d1", "outcome"] == "error"
        and "simulated runner crash" in index.loc["dog/d1", "reason"]
    )
    assert first.status["visual"]["ok"] >= 5  # other shards are unaffected
    assert first.exit_code == 1 and first.status["visual"]["failed"] == 0  # not the video's fault: not done
    monkeypatch.delenv("FAKE_CRASH_ON")
    second = run_extract(config(clips, tmp_path / "out"), progress=False)
    assert 1 <= second.planned_videos == first.status["visual"]["not_done"]
    assert second.exit_code == 0
    assert_same_features(features_of(second.stores), reference)


def test_bad_inputs_are_listed_not_fatal_unless_strict(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    summary = run_extract(config([bad], tmp_path / "out"), progress=False)
    assert summary.exit_code == 0 and summary.status["visual"]["failed"] == 1  # a final status
    strict = run_extract(config([bad], tmp_path / "out", strict=True), progress=False)
    assert strict.exit_code == 1 and "--strict" in format_summary(strict)


def test_second_run_on_a_leased_store_refuses(clips: Path, tmp_path: Path) -> None:
    first = run_extract(config(clips, tmp_path / "out", extractors=["visual"]), progress=False)
    with StoreLease(first.stores["visual"]), pytest.raises(StoreBusy, match="another run is writing"):
        run_extract(config(clips, tmp_path / "out", extractors=["visual"]), progress=False)


def test_cli_extract_in_process(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["extract", "--videos", str(clips), "--extractor", "visual", "--out", str(tmp_path / "out"),
            "--cluster", "none", "--weights", "visual=random", "--builder", "extract_fakes:build",
            "--runner", "extract_fakes:extract_videos", "--no-progress"]  # fmt: skip
    assert cli_main(args) == 0
    assert "visual: ok 8, partial 0, failed 0" in capsys.readouterr().out
    assert (
        cli_main([*args[:-7], "--no-progress", "--builder", "extract_fakes:build"]) == 2
    )  # no weights given


def test_cli_decode_options_reach_the_config(tmp_path: Path) -> None:
    from workflows.cli import build_parser
    from workflows.commands.extract import build_config

    base = ["extract", "--videos", "v.csv", "--extractor", "vit", "--out", str(tmp_path)]
    parser = build_parser("extract")
    assert build_config(parser.parse_args(base)).decode_isolation == "process"
    assert build_config(parser.parse_args([*base, "--decode-isolation", "none"])).decode_isolation == "none"
    assert build_config(parser.parse_args(base)).prefetch_videos is None  # the runner picks per device
    assert build_config(parser.parse_args([*base, "--prefetch-videos", "6"])).prefetch_videos == 6


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(clips: Path, tmp_path: Path, reference: dict) -> None:
    out = tmp_path / "out"
    command = [str(VENV_BIN / "avzsl"), "extract", "--videos", str(clips), "--out", str(out), "--cluster", "none",
               "--extractor", "visual", "--extractor", "audio", "--weights", "random", "--shard-size", "1",
               "--builder", "extract_fakes:build", "--runner", "extract_fakes:extract_videos", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(command, env=subprocess_env(FAKE_SLEEP_S="0.2"), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    parts: list[Path] = []
    while time.monotonic() < deadline and len(parts) < 3 and proc.poll() is None:
        parts = list(out.glob("audio-*/index/*.parquet"))
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= len(parts) < 8, "the run should have been killed midway"
    committed = {p.parent.parent.name + "/" + p.name for p in out.glob("*/index/*.parquet")}
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stores = {name: str(next(out.glob(f"{name}-*"))) for name in EXTRACTORS}
    assert_same_features(features_of(stores), reference)
    for path in stores.values():
        store = FeatureStore.open(path)
        before = {c.split("/")[1] for c in committed if c.startswith(store.path.name + "/")}
        assert before <= {p.name for p in store.index_dir.glob("*.parquet")}  # finished shards were kept
        assert store.records()["video_id"].value_counts().max() == 1  # no finished shard was recomputed
        assert [p for p in verify_store(store) if p.severity == "error"] == []


@pytest.mark.slow
def test_local_cluster_survives_a_killed_worker(
    clips: Path, tmp_path: Path, reference: dict, monkeypatch
) -> None:
    marker = tmp_path / "killed"
    monkeypatch.setenv("FAKE_KILL_MARKER", str(marker))
    summary = run_extract(config(clips, tmp_path / "out", cluster="local", workers=2), progress=False)
    assert marker.exists(), "a worker process should have been killed mid-task"
    assert summary.failed_tasks == [] and summary.exit_code == 0
    assert summary.dashboard and summary.dashboard.startswith("http")
    assert_same_features(features_of(summary.stores), reference)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_external_scheduler_and_two_workers_match_local_run(
    clips: Path, tmp_path: Path, reference: dict
) -> None:
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(VENV_BIN / "dask")
    commands = [[dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"]]
    commands += [[dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                  "--local-directory", str(tmp_path)]] * 2  # fmt: skip
    with open(tmp_path / "dask.log", "w") as log:
        # own sessions: the `dask` launcher runs the service in a child process, so stop whole groups
        procs = [
            subprocess.Popen(c, env=subprocess_env(), stdout=log, stderr=log, start_new_session=True)
            for c in commands
        ]
        try:
            _wait_for_workers(address, 2)
            summary = run_extract(config(clips, tmp_path / "out", cluster=address), progress=False)
            assert summary.failed_tasks == [] and summary.exit_code == 0
            assert_same_features(features_of(summary.stores), reference)
            with Client(address, timeout="10s") as client:
                assert len(client.scheduler_info()["workers"]) == 2
                client.shutdown()
        finally:
            _stop_groups(procs)


def _wait_for_workers(address: str, count: int) -> None:
    from distributed import Client

    deadline = time.monotonic() + 90
    while True:
        try:
            with Client(address, timeout="5s") as client:
                client.wait_for_workers(count, timeout=90)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _stop_groups(procs: list[subprocess.Popen]) -> None:
    """SIGTERM the process groups this test started, SIGKILL what is left after 3 s."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:  # a worker may keep retrying its lost scheduler
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a service child the launcher left behind


@pytest.mark.slow
def test_real_runner_records_faults_with_a_reason(corpus: dict[str, Path], tmp_path: Path) -> None:
    """The default builder and runner (VGGish, explicitly random weights) on part of the fault corpus."""
    kinds = ["ok", "no_audio", "random_bytes", "zero_length", "short_0_3s"]
    cfg = ExtractConfig(
        videos=[str(corpus[k]) for k in kinds],
        extractors=["vggish"],
        out=str(tmp_path / "out"),
        cluster="none",
        weights={"vggish": "random"},
        shard_size=4,
        decode_timeout_s=60,
    )
    summary = run_extract(cfg, progress=False)
    store = FeatureStore.open(summary.stores["vggish"])
    index = store.index()
    assert store.random_weights and store.header["spec"]["name"] == "vggish"
    assert len(index) == len(kinds) and summary.exit_code == 0
    assert index.loc["ok", "status"] == "ok" and store.features("ok").shape == (2, 128)
    assert np.all(np.diff(store.timestamps("ok")[0]) > 0)
    expected = {"no_audio": "no_audio", "random_bytes": "undecodable", "zero_length": "empty_file"}
    for video_id, outcome in expected.items():
        assert index.loc[video_id, ["status", "outcome"]].tolist() == ["failed", outcome]
        assert index.loc[video_id, "reason"]
    assert index.loc["short_0_3s", "outcome"] == "too_short"


@pytest.mark.slow
def test_real_runner_hanging_decode_is_cut_off_and_recorded(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decode that never returns (the decode layer's simulated decord#373 hang) ends as a recorded timeout."""
    import extractors.runner
    from pipeline.decode import open_guarded

    monkeypatch.setitem(
        extractors.runner.OPENERS, "process", functools.partial(open_guarded, backend="hang-test")
    )
    cfg = ExtractConfig(
        videos=[str(corpus["ok"]), str(corpus["vfr"])],
        extractors=["framestats"],
        out=str(tmp_path / "out"),
        cluster="none",
        weights={"*": "none"},
        builder="benchmarks.scale:build_frame_stats",
        decode_timeout_s=2.0,
    )
    summary = run_extract(cfg, progress=False)
    index = FeatureStore.open(summary.stores["framestats"]).index()
    for video_id in ("ok", "vfr"):
        assert "timeout" in f"{index.loc[video_id, 'outcome']} {index.loc[video_id, 'reason']}"
