"""Unit tests of PTS-based sampling (no media): the frame displayed at t_k is the last one with pts <= t_k."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.decode import plan_samples, too_short
from pipeline.decode.types import AudioClip, Outcome, ProbeResult, VideoStreamInfo


def test_every_frame_when_fps_is_none():
    pts = np.array([0.0, 0.04, 0.1, 0.14])
    plan = plan_samples(pts, 0.2, fps=None)
    assert plan.indices.tolist() == [0, 1, 2, 3]
    assert plan.target_s.tolist() == pts.tolist()


def test_takes_last_frame_shown_at_each_target_on_variable_rate():
    pts = np.array([0.0, 0.04, 0.1, 0.14, 0.2])  # intervals 40 / 60 ms alternating
    plan = plan_samples(pts, 0.24, fps=25.0)  # targets 0, .04, .08, .12, .16, .20
    assert plan.target_s == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16, 0.20])
    assert plan.indices.tolist() == [0, 1, 1, 2, 3, 4]


def test_duplicates_above_native_rate_and_skips_below():
    pts = np.arange(10) / 10.0  # 10 fps, 1 s
    assert plan_samples(pts, 1.0, fps=20.0).indices.tolist() == [i // 2 for i in range(20)]
    assert plan_samples(pts, 1.0, fps=2.0).indices.tolist() == [0, 5]


def test_container_rate_does_not_matter_only_pts():
    # 355 frames, 50 ticks apart at 1/981 s: the GGSY layout; 25 fps targets until 18.044 s
    pts = np.arange(355) * 50 / 981
    plan = plan_samples(pts, 17701 / 981, fps=25.0)
    assert len(plan) == 452  # t_k = k/25 < 18.044 s
    expected = np.searchsorted(pts, np.arange(452) / 25.0 + 1e-9, side="right") - 1
    assert np.array_equal(plan.indices, expected)


def test_start_end_window_and_late_first_frame():
    pts = 0.5 + np.arange(20) / 10.0  # first frame shown at 0.5 s
    plan = plan_samples(pts, 2.5, fps=10.0, start_s=0.0, end_s=1.0)
    assert plan.target_s[0] == pytest.approx(0.5)  # nothing is displayed before the first frame
    assert plan.indices.tolist() == [0, 1, 2, 3, 4]
    assert len(plan_samples(pts, 2.5, fps=10.0, start_s=3.0)) == 0


def test_bad_fps_is_rejected():
    with pytest.raises(ValueError, match="fps"):
        plan_samples(np.array([0.0]), 1.0, fps=0.0)
    with pytest.raises(ValueError, match="frame rule"):
        plan_samples(np.array([0.0]), 1.0, fps=25.0, frame_rule="nearest")


def test_ffmpeg_rule_takes_frames_up_to_half_a_tick_early():
    pts = np.array([0.0, 0.05, 0.09, 0.1])  # 0, 1.25, 2.25 and exactly 2.5 ticks of 1/25 s
    ffmpeg = plan_samples(pts, 0.2, fps=25.0, frame_rule="ffmpeg")
    assert ffmpeg.indices.tolist() == [0, 1, 2, 3, 3]  # 2.5 rounds away from zero, to tick 3
    assert ffmpeg.target_s == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16])
    assert plan_samples(pts, 0.2, fps=25.0).indices.tolist() == [0, 0, 1, 3, 3]  # the frame shown at k/25


def test_ffmpeg_rule_ticks_run_from_the_first_frame_to_the_rounded_end():
    pts = 0.37 + np.arange(10) / 25.0  # first frame at 9.25 ticks: the first tick is 9, not 0
    plan = plan_samples(pts, 0.37 + 0.4, fps=25.0, frame_rule="ffmpeg")  # end 19.25 ticks -> ticks 9..18
    assert plan.target_s * 25 == pytest.approx(np.arange(9, 19)) and plan.indices.tolist() == list(range(10))
    assert len(plan_samples(pts, 0.39 + 0.4, fps=25.0, frame_rule="ffmpeg")) == 11  # 19.75 rounds to 20
    window = plan_samples(pts, 0.77, fps=25.0, start_s=0.5, end_s=0.6, frame_rule="ffmpeg")
    assert window.target_s * 25 == pytest.approx([13, 14])  # ticks with k/25 in [0.5, 0.6)
    assert window.indices.tolist() == [4, 5]


def _probe(duration_s: float, frames: int) -> ProbeResult:
    video = VideoStreamInfo("h264", 64, 64, frames, duration_s, frames / duration_s, None, "1/90000")
    return ProbeResult("clip.mp4", Outcome.OK, duration_s=duration_s, video=video)


def test_too_short_seconds_and_frames():
    err = too_short(_probe(0.3, 9), window_s=0.96)
    assert err is not None and err.outcome is Outcome.TOO_SHORT and "clip.mp4" in str(err)
    assert too_short(_probe(1.0, 25), window_s=0.96) is None
    assert too_short(_probe(0.3, 9), window_frames=16).outcome is Outcome.TOO_SHORT
    assert too_short(_probe(0.64, 16), window_frames=16, fps=25.0) is None  # 0.64 s at 25 fps = 16 targets
    assert too_short(0.6, window_frames=16, fps=25.0).outcome is Outcome.TOO_SHORT
    assert too_short(AudioClip(np.zeros(4800, np.float32), 16000), window_s=0.96).outcome is Outcome.TOO_SHORT
    with pytest.raises(ValueError, match="exactly one"):
        too_short(1.0)


def test_buffer_pool_reuses_only_released_buffers():
    from pipeline.decode.buffers import BufferPool

    pool = BufferPool(keep=2)
    held = pool.get((4, 3))
    view = pool.get((4, 3))[1:]  # a view keeps its buffer in use too
    assert not np.shares_memory(held, view)
    third = pool.get((4, 3))
    assert not np.shares_memory(third, held) and not np.shares_memory(third, view)
    address = third.__array_interface__["data"][0]
    del third
    assert pool.get((4, 3)).__array_interface__["data"][0] == address
