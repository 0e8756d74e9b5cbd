"""Every fault outcome, on the synthetic fault corpus: typed errors, partial results kept, VFR sampling."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import cores as cores_module
from pipeline.decode import DecodeReport, MediaError, Outcome, iter_frames, probe, read_audio, too_short
from pipeline.decode.backends import pyav_backend
from pipeline.decode.backends.pyav_backend import PyAVBackend
from pipeline.synth.faults import make_fault_corpus
from pipeline.synth.media import pattern_frame, read_frame_code, write_av_clip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_fault_corpus(tmp_path_factory.mktemp("faults"))


def _frames(path, **kwargs):
    report = DecodeReport(str(path))
    chunks = list(iter_frames(path, report=report, **kwargs))
    frames = np.concatenate([c.frames for c in chunks]) if chunks else np.zeros((0, 0, 0, 3), np.uint8)
    return chunks, frames, report


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        ("ok", Outcome.OK),
        ("truncated", Outcome.PARTIAL),
        ("no_audio", Outcome.NO_AUDIO),
        ("no_video", Outcome.NO_VIDEO),
        ("random_bytes", Outcome.UNDECODABLE),
        ("zero_length", Outcome.EMPTY_FILE),
        ("short_0_3s", Outcome.OK),
        ("vfr", Outcome.OK),
    ],
)
def test_probe_status(corpus, kind, outcome):
    result = probe(corpus[kind])
    assert result.status is outcome, result.error
    assert (result.error is None) == (outcome is Outcome.OK)
    assert result.to_record()["status"] == str(outcome)


def test_probe_missing_file(tmp_path):
    result = probe(tmp_path / "nope.mp4")
    assert result.status is Outcome.NOT_FOUND and "does not exist" in result.error


def test_truncated_keeps_frames_decoded_before_the_error(corpus, monkeypatch):
    _, good, _ = _frames(corpus["ok"])
    chunks, frames, report = _frames(corpus["truncated"], chunk_frames=4)
    assert report.outcome is Outcome.PARTIAL and report.error
    assert 0 < len(frames) < len(good) and report.frames_decoded == len(frames)
    assert np.array_equal(frames, good[: len(frames)])  # the kept frames are the real ones
    with pytest.raises(MediaError) as err:  # without a report the damage is raised, after the frames
        list(iter_frames(corpus["truncated"]))
    assert err.value.outcome is Outcome.PARTIAL
    pooled = PyAVBackend(convert_workers=2)  # converting on a thread pool keeps the same frames
    _, pooled_frames, pooled_report = _frames(corpus["truncated"], chunk_frames=4, backend=pooled)
    assert pooled_report.outcome is Outcome.PARTIAL and np.array_equal(pooled_frames, frames)


def test_converter_threads_scale_with_frame_size_and_take_cores_from_the_decoder(monkeypatch):
    def cores(n: int) -> None:
        monkeypatch.setattr(cores_module.os, "sched_getaffinity", lambda _pid: set(range(n)), raising=False)

    cores(16)
    workers = pyav_backend.default_convert_workers
    assert [
        workers(0, w * h) for w, h in [(320, 240), (640, 360), (960, 540), (1280, 720), (1920, 1080)]
    ] == [
        2,
        2,
        3,
        4,
        4,  # a quarter of the cores
    ]
    assert workers(1, 1280 * 720) == 0 and workers(12, 1280 * 720) == 0  # the caller budgets the cores
    assert pyav_backend.decoder_threads(0, 4) == 12 and pyav_backend.decoder_threads(0, 0) == 0
    assert pyav_backend.decoder_threads(6, 4) == 6
    cores(6)
    assert workers(0, 1280 * 720) == 1 and pyav_backend.decoder_threads(0, 1) == 5
    cores(3)
    assert workers(0, 1280 * 720) == 0  # FFmpeg's frame threads already fill a small machine


def test_truncated_audio_is_partial(corpus):
    report = DecodeReport("t")
    clip = read_audio(corpus["truncated"], report=report)
    assert report.outcome is Outcome.PARTIAL and 0 < clip.duration_s < 1.5


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        ("random_bytes", Outcome.UNDECODABLE),
        ("zero_length", Outcome.EMPTY_FILE),
        ("no_video", Outcome.NO_VIDEO),
    ],
)
@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_frame_failures_raise_typed_errors(corpus, kind, outcome, backend):
    with pytest.raises(MediaError) as err:
        next(iter_frames(corpus[kind], backend=backend))
    assert err.value.outcome is outcome
    assert str(corpus[kind]) in str(err.value)


def test_missing_file_and_audio_failures(corpus, tmp_path):
    with pytest.raises(MediaError) as err:
        next(iter_frames(tmp_path / "missing.mp4"))
    assert err.value.outcome is Outcome.NOT_FOUND
    for kind, outcome in [
        ("no_audio", Outcome.NO_AUDIO),
        ("random_bytes", Outcome.UNDECODABLE),
        ("zero_length", Outcome.EMPTY_FILE),
    ]:
        with pytest.raises(MediaError) as err:
            read_audio(corpus[kind])
        assert err.value.outcome is outcome
    frames = _frames(corpus["no_audio"])[1]
    assert len(frames) == 50  # video without audio still decodes


def test_short_clip_is_too_short_for_a_vggish_window(corpus):
    info = probe(corpus["short_0_3s"])
    assert too_short(info, window_s=0.96).outcome is Outcome.TOO_SHORT
    assert too_short(info, window_s=0.2) is None
    clip = read_audio(corpus["short_0_3s"])
    assert too_short(clip, window_s=0.96).outcome is Outcome.TOO_SHORT
    assert too_short(info, window_frames=16).outcome is Outcome.TOO_SHORT


def test_variable_frame_rate_sampling_follows_pts(corpus):
    info = probe(corpus["vfr"])
    chunks, frames, report = _frames(corpus["vfr"], fps=25.0)
    pts = np.concatenate([c.pts_s for c in chunks])
    target = np.concatenate([c.target_s for c in chunks])
    codes = np.array([read_frame_code(f) for f in frames])
    # frame durations alternate 40 and 60 ms, so frames start at 0, .04, .10, .14, .20, ...
    starts = np.cumsum([0.0] + [0.04 if k % 2 == 0 else 0.06 for k in range(info.video.frame_count - 1)])
    expected = np.searchsorted(starts, target + 1e-6, side="right") - 1
    assert report.outcome is Outcome.OK
    assert np.array_equal(codes, expected)  # the frame displayed at each target, by its drawn code
    assert np.allclose(pts, starts[expected], atol=1e-4)
    assert len(np.unique(codes)) < len(codes)  # 25 fps > the 20 fps average: some frames repeat


def test_sparse_sampling_with_keyframe_seeks_is_exact(tmp_path):
    path = write_av_clip(
        tmp_path / "gop.mp4", (pattern_frame(k, 96, 64) for k in range(200)), fps=25.0, gop_s=0.4
    )
    _, every, _ = _frames(path)
    for fps, start in [(1.0, 0.0), (0.5, 1.3), (3.0, 2.0)]:
        chunks, frames, _ = _frames(path, fps=fps, start_s=start, chunk_frames=3)
        index = np.concatenate([c.source_index for c in chunks])
        assert np.array_equal(index, np.floor((start + np.arange(len(index)) / fps) * 25 + 1e-6).astype(int))
        assert np.array_equal(frames, every[index])  # bit-exact after seeking to keyframes


def test_seeks_only_when_they_skip_more_than_the_frames_in_flight(tmp_path, monkeypatch):
    path = write_av_clip(
        tmp_path / "gop.mp4", (pattern_frame(k, 96, 64) for k in range(200)), fps=25.0, gop_s=0.4
    )
    _, every, _ = _frames(path)
    seeks = []
    seek_to = pyav_backend.PyAVReader._seek_to

    def counting(self, *args, **kwargs):
        key = seek_to(self, *args, **kwargs)
        seeks.append(key is not None)
        return key

    monkeypatch.setattr(pyav_backend.PyAVReader, "_seek_to", counting)
    # Keyframes every 10th frame; 1 fps takes frames 0, 25, 50, ... 175. Seeking from each to the keyframe
    # before the next skips 19 frames (0 -> 20), 24 (25 -> 50), 19 (50 -> 70), ...: an opening seek, 7 more.
    for backend, in_flight, expected_seeks in [
        (PyAVBackend(thread_count=1), 0, 8),
        (PyAVBackend(thread_type="FRAME", thread_count=20), 20, 4),  # only the three 24-frame skips
        (PyAVBackend(thread_type="FRAME", thread_count=24), 24, 1),
        (PyAVBackend(thread_type="SLICE", thread_count=24), 0, 8),
    ]:
        seeks.clear()
        chunks, frames, _ = _frames(path, fps=1.0, backend=backend)
        assert pyav_backend.frames_in_flight(backend.thread_type, backend.thread_count) == in_flight
        assert sum(seeks) == expected_seeks
        assert np.array_equal(frames, every[np.concatenate([c.source_index for c in chunks])])
