"""Guarded decoding in a child process: same frames as in-process, typed outcomes, a hang is cut off."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.decode import Outcome, iter_frames, open_guarded, read_audio
from pipeline.synth.faults import make_fault_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_fault_corpus(tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize(("backend", "transport"), [("pyav", "shm"), ("decord", "shm"), ("pyav", "pipe")])
def test_child_streams_the_same_frames_and_audio(corpus, backend, transport):
    path = corpus["vfr"]
    expected = np.concatenate([c.frames for c in iter_frames(path, fps=25.0)])
    with open_guarded(
        path, fps=25.0, chunk_frames=8, want_audio=True, backend=backend, timeout_s=60, transport=transport
    ) as decode:
        clip = decode.audio()
        chunks = list(decode.frames())
    assert decode.report.outcome is Outcome.OK and decode.audio_report.outcome is Outcome.OK
    assert max(len(c) for c in chunks) == 8 and decode.report.frames_decoded == len(expected)
    assert np.array_equal(np.concatenate([c.frames for c in chunks]), expected)
    assert np.array_equal(clip.samples, read_audio(path).samples)


def test_hang_is_killed_and_frames_so_far_are_kept(corpus):
    started = time.monotonic()
    with open_guarded(corpus["ok"], chunk_frames=4, backend="hang-test", timeout_s=1.5) as decode:
        chunks = list(decode.frames())
        assert not decode._process.is_alive()
    assert decode.report.outcome is Outcome.TIMEOUT and "killed" in decode.report.error
    assert sum(len(c) for c in chunks) == 8 == decode.report.frames_decoded  # hang-test stops after 8 frames
    expected = np.concatenate([c.frames for c in iter_frames(corpus["ok"], end_s=8 / 25)])
    assert np.array_equal(np.concatenate([c.frames for c in chunks]), expected)
    assert time.monotonic() - started < 60  # returned at all (the child alone would never end)


@pytest.mark.parametrize(
    ("kind", "video", "audio"),
    [
        ("truncated", Outcome.PARTIAL, Outcome.PARTIAL),
        ("no_audio", Outcome.OK, Outcome.NO_AUDIO),
        ("random_bytes", Outcome.UNDECODABLE, Outcome.UNDECODABLE),
        ("no_video", Outcome.NO_VIDEO, Outcome.OK),
    ],
)
def test_faults_become_reports_not_exceptions(corpus, kind, video, audio):
    with open_guarded(corpus[kind], want_audio=True, timeout_s=60) as decode:
        clip = decode.audio()
        frames = sum(len(c) for c in decode.frames())
    assert decode.report.outcome is video, decode.report.error
    assert decode.audio_report.outcome is audio, decode.audio_report.error
    assert (clip is None) == (audio in (Outcome.NO_AUDIO, Outcome.UNDECODABLE))
    assert (frames > 0) == (video in (Outcome.OK, Outcome.PARTIAL))


def test_closing_early_stops_the_child(corpus):
    decode = open_guarded(corpus["ok"], chunk_frames=2, prefetch_chunks=1, timeout_s=60)
    first = next(decode.frames())
    decode.close()
    assert len(first) == 2 and not decode._process.is_alive()


def test_concurrent_decodes_from_threads(corpus):
    import sys
    from concurrent.futures import ThreadPoolExecutor

    main_module = sys.modules["__main__"]

    def decode(kind):
        with open_guarded(corpus[kind], chunk_frames=8, timeout_s=60) as guarded:
            return sum(len(c) for c in guarded.frames()), guarded.report.outcome

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(decode, ["ok", "vfr", "no_audio", "ok"]))
    assert results == [(50, Outcome.OK), (40, Outcome.OK), (50, Outcome.OK), (50, Outcome.OK)]
    assert sys.modules["__main__"] is main_module  # the start-time swap is always undone


def _decode_all(path, **kwargs):
    with open_guarded(path, chunk_frames=8, timeout_s=60, **kwargs) as decode:
        frames = np.concatenate([c.frames for c in decode.frames()])
    return decode, frames


def test_a_child_that_finished_cleanly_serves_the_next_video(corpus):
    first, frames_ok = _decode_all(corpus["ok"])
    second, frames_vfr = _decode_all(corpus["vfr"])
    assert second._process.pid == first._process.pid and second._process.is_alive()
    assert np.array_equal(frames_ok, np.concatenate([c.frames for c in iter_frames(corpus["ok"])]))
    assert np.array_equal(frames_vfr, np.concatenate([c.frames for c in iter_frames(corpus["vfr"])]))
    fresh, _ = _decode_all(corpus["ok"], reuse=False)
    assert fresh._process.pid != first._process.pid and not fresh._process.is_alive()


@pytest.mark.slow
def test_a_child_that_hung_or_was_stopped_early_is_never_reused(corpus):
    with open_guarded(corpus["ok"], chunk_frames=4, backend="hang-test", timeout_s=1.5) as hung:
        list(hung.frames())
    early = open_guarded(corpus["ok"], chunk_frames=2, prefetch_chunks=1, timeout_s=60)
    next(early.frames())
    early.close()
    after, frames = _decode_all(corpus["ok"])
    assert not hung._process.is_alive() and not early._process.is_alive()
    assert after._process.pid not in (hung._process.pid, early._process.pid)
    assert after.report.outcome is Outcome.OK and len(frames) == 50


def test_children_are_retired_after_serving_their_share(corpus, monkeypatch):
    from pipeline.decode import decoders, guarded

    pool = decoders.DecoderPool()
    monkeypatch.setattr(guarded, "POOL", pool)
    monkeypatch.setattr(decoders, "MAX_VIDEOS_PER_CHILD", 2)
    children = [_decode_all(corpus["ok"])[0]._process for _ in range(3)]
    pool.close()
    assert children[0].pid == children[1].pid != children[2].pid
    assert children[0].exitcode == 0 and children[2].exitcode == 0  # asked to exit, not killed


@pytest.mark.parametrize("kind", ["ok", "vfr", "truncated", "no_audio", "random_bytes", "no_video"])
def test_in_process_decode_reports_like_the_guarded_one(corpus, kind):
    from pipeline.decode.inprocess import open_inprocess

    results = []
    for opener in (open_guarded, open_inprocess):
        with opener(corpus[kind], fps=25.0, chunk_frames=8, want_audio=True, timeout_s=60) as decode:
            clip = decode.audio()
            chunks = [c.frames for c in decode.frames()]
        frames = np.concatenate(chunks) if chunks else np.zeros((0,), np.uint8)
        results.append((decode.report, decode.audio_report, clip, frames))
    (report, audio_report, clip, frames), (report2, audio_report2, clip2, frames2) = results
    assert (report2.outcome, audio_report2.outcome) == (report.outcome, audio_report.outcome)
    assert report2.frames_decoded == report.frames_decoded and np.array_equal(frames2, frames)
    assert (clip is None) == (clip2 is None) and (clip is None or np.array_equal(clip.samples, clip2.samples))


def test_an_audio_only_decode_never_opens_the_video_and_keeps_its_child(corpus, monkeypatch):
    from pipeline.decode import inprocess
    from pipeline.decode.inprocess import open_inprocess

    def no_video(*_args, **_kwargs):
        raise AssertionError("an audio-only decode opened the video stream")

    monkeypatch.setattr(inprocess, "iter_frames", no_video)
    with open_inprocess(corpus["ok"], want_audio=True, want_frames=False) as local:
        expected = local.audio().samples
        with pytest.raises(ValueError, match="frames were not requested"):
            next(local.frames())
    pids = []
    for _ in range(2):
        with open_guarded(corpus["ok"], want_audio=True, want_frames=False, timeout_s=60) as decode:
            clip = decode.audio()
            pids.append(decode._process.pid)
        assert decode._process.is_alive()  # the end message was awaited: the child went back to the pool
        assert decode.report.outcome is Outcome.OK and decode.report.frames_decoded == 0
        assert np.array_equal(clip.samples, expected)
    assert pids[0] == pids[1]
    with pytest.raises(ValueError, match="nothing to decode"):
        open_guarded(corpus["ok"], want_frames=False)


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="reads a child's environment from /proc")
def test_decode_children_run_single_threaded_numerics_and_the_parent_keeps_its_environment(corpus):
    before = dict(os.environ)
    with open_guarded(corpus["ok"], timeout_s=60, reuse=False) as running:
        child_env = Path(f"/proc/{running._process.pid}/environ").read_bytes().split(b"\0")
        list(running.frames())
    assert b"OPENBLAS_NUM_THREADS=1" in child_env and b"OMP_NUM_THREADS=1" in child_env
    assert dict(os.environ) == before


def test_native_rate_float64_audio_crosses_from_the_child_intact(corpus):
    options = {"audio_path": "int16-resampy", "want_frames": False, "want_audio": True, "audio_rate": None}
    with open_guarded(corpus["ok"], timeout_s=60, **options) as decode:
        clip = decode.audio()
    expected = read_audio(corpus["ok"], audio_path="int16-resampy", sample_rate=None)
    assert clip.samples.dtype == np.float64 and np.array_equal(clip.samples, expected.samples)
    assert clip.sample_rate == expected.sample_rate
    with pytest.raises(ValueError, match="only the int16-resampy path"):
        open_guarded(corpus["ok"], want_audio=True, audio_rate=None)
