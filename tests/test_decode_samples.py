"""Decoding the two real sample videos: true frame counts and PTS rate, identical backends, audio length."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.decode import DecodeReport, Outcome, iter_frames, plan_samples, probe, read_audio
from pipeline.decode.backends.pyav_backend import PyAVBackend

GGSY, ZNVH = "v_GGSY1Qvo990", "v_ZNVhz7ctTq0"


def _decode(path, **kwargs):
    report = DecodeReport(str(path))
    chunks = list(iter_frames(path, report=report, **kwargs))
    frames = np.concatenate([c.frames for c in chunks])
    index = np.concatenate([c.source_index for c in chunks])
    return chunks, frames, index, report


def test_probe_uses_packet_timestamps(sample_videos):
    ggsy = probe(sample_videos[GGSY])
    assert ggsy.status is Outcome.OK and ggsy.has_audio
    assert ggsy.video.frame_count == 355
    assert ggsy.video.duration_s == pytest.approx(18.044, abs=1e-3)
    assert ggsy.video.fps == pytest.approx(19.674, abs=1e-3)  # 355 / 18.044 s
    assert ggsy.video.container_fps == pytest.approx(19.62, abs=1e-3)  # the header's claim differs
    assert (ggsy.video.width, ggsy.video.height, ggsy.video.codec) == (320, 240, "h264")
    assert (ggsy.audio.sample_rate, ggsy.audio.channels, ggsy.audio.codec) == (44100, 1, "aac")
    znvh = probe(sample_videos[ZNVH])
    assert znvh.video.frame_count == 420 and znvh.video.fps == pytest.approx(30.0)
    assert (znvh.video.width, znvh.video.height) == (480, 360)


def test_every_frame_identical_across_backends(sample_videos):
    path = sample_videos[GGSY]
    chunks, frames, index, report = _decode(path, chunk_frames=50)
    assert frames.shape == (355, 240, 320, 3) and frames.dtype == np.uint8
    assert index.tolist() == list(range(355))
    assert max(len(c) for c in chunks) == 50 and report.outcome is Outcome.OK
    assert report.frames_decoded == 355
    pts = np.concatenate([c.pts_s for c in chunks])
    assert np.allclose(pts, np.arange(355) * 50 / 981)  # PTS, not index / container fps
    _, frames_decord, index_decord, _ = _decode(path, chunk_frames=50, backend="decord")
    assert np.array_equal(index, index_decord)
    assert np.array_equal(frames, frames_decord)
    _, frames_single, index_single, _ = _decode(path, chunk_frames=50, decoder_threads=1)  # the pipeline's
    assert np.array_equal(index, index_single) and np.array_equal(frames, frames_single)
    threaded = PyAVBackend(thread_type="AUTO", convert_workers=3)  # the many-core settings: same frames
    _, frames_threaded, index_threaded, _ = _decode(path, chunk_frames=50, backend=threaded)
    assert np.array_equal(index, index_threaded) and np.array_equal(frames, frames_threaded)


def test_pts_sampling_at_25_fps_identical_across_backends(sample_videos):
    path = sample_videos[ZNVH]
    chunks, frames, index, _ = _decode(path, fps=25.0)
    assert len(frames) == 350  # t_k = k/25 < 14.0 s
    target = np.concatenate([c.target_s for c in chunks])
    assert np.allclose(target, np.arange(350) / 25.0)
    assert np.array_equal(index, np.floor(np.arange(350) / 25.0 * 30 + 1e-9).astype(int))
    _, frames_decord, index_decord, _ = _decode(path, fps=25.0, backend="decord")
    assert np.array_equal(index, index_decord) and np.array_equal(frames, frames_decord)


def test_one_fps_picks_the_frame_shown_at_each_second(sample_videos):
    path = sample_videos[GGSY]
    _, frames, index, _ = _decode(path, fps=1.0)
    pts = np.arange(355) * 50 / 981
    assert index.tolist() == plan_samples(pts, 17701 / 981, fps=1.0).indices.tolist()
    assert len(index) == 19
    _, every, _, _ = _decode(path, end_s=10.0)
    assert np.array_equal(frames[:10], every[index[:10]])


def test_audio_16k_matches_duration(sample_videos):
    for name in (GGSY, ZNVH):
        info = probe(sample_videos[name])
        report = DecodeReport(name)
        clip = read_audio(sample_videos[name], sample_rate=16000, report=report)
        assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
        assert report.outcome is Outcome.OK and report.audio_samples == clip.samples.size
        assert abs(clip.samples.size - info.duration_s * 16000) <= 16000 / info.video.fps  # within one frame
        assert abs(clip.duration_s - info.duration_s) < 1 / info.video.fps
        assert 0.01 < float(np.abs(clip.samples).max()) < 1.2  # unclipped (tests/test_audio_reference.py)
    assert read_audio(sample_videos[GGSY]).samples.size == 290_528  # 800,768 samples at 44.1 kHz
