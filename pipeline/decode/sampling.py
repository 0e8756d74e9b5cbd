"""Which frames to deliver for target times t_k, by one of two rules, from presentation timestamps.

- ``pts`` (clean mode): the frame *displayed* at t_k = t0 + k/fps, i.e. the last frame with pts <= t_k.
- ``ffmpeg`` (benchmark mode): the frame FFmpeg's ``fps`` filter emits for output tick k, i.e. the last
  frame whose pts*fps, rounded to nearest with halves away from zero, is <= k; ticks run from the first
  frame's rounded pts up to (not including) the rounded stream end. This is how the videos behind the
  published features were converted to 25 fps; the two rules disagree on a third of the ticks of the
  sample videos, always by one frame (docs/benchmark-mode.md).

Both backends build the same plan from the frames' timestamps and then fetch exactly those frames, so
sampling never depends on a container's claimed frame rate (which is wrong for v_GGSY1Qvo990 and for any
variable-frame-rate file) and never re-encodes anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Timestamps are compared with this slack: it absorbs the float rounding of t0 + k/fps (and of pts * time_base)
# so that a frame whose pts equals a target is taken, yet is far below any timestamp resolution in real files.
SAMPLING_EPS_S = 1e-6
FRAME_RULES = ("pts", "ffmpeg")


@dataclass(frozen=True)
class SamplePlan:
    """Frames to deliver, in delivery order: presentation-order indices and the target time of each."""

    indices: np.ndarray  # (M,) int64 index into the presentation-ordered frames; repeats when fps > native
    target_s: np.ndarray  # (M,) float64 target time t_k (equal to the frame's pts when fps is None)

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def plan_samples(
    pts_s: np.ndarray,
    stream_end_s: float,
    *,
    fps: float | None,
    start_s: float = 0.0,
    end_s: float | None = None,
    frame_rule: str = "pts",
) -> SamplePlan:
    """Plan frames for targets in [start_s, end) at ``fps`` by ``frame_rule`` (see the module docstring).

    ``pts_s`` are the frames' presentation times sorted ascending; ``stream_end_s`` is when the last frame
    stops being displayed. No target lies before the first frame (nothing is displayed then).
    ``fps=None`` delivers every frame whose pts lies in [start_s, end), whatever the rule.
    """
    if frame_rule not in FRAME_RULES:
        raise ValueError(f"unknown frame rule {frame_rule!r}; choose one of {', '.join(FRAME_RULES)}")
    pts_s = np.asarray(pts_s, dtype=np.float64)
    stop = stream_end_s if end_s is None else min(end_s, stream_end_s)
    if pts_s.size == 0 or stop <= start_s:
        return _empty()
    if fps is None:
        keep = np.flatnonzero((pts_s >= start_s - SAMPLING_EPS_S) & (pts_s < stop - SAMPLING_EPS_S))
        return SamplePlan(keep.astype(np.int64), pts_s[keep])
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number or None, got {fps!r}")
    if frame_rule == "ffmpeg":
        return _ffmpeg_fps(pts_s, stream_end_s, fps, start_s, end_s)
    t0 = max(start_s, float(pts_s[0]))
    count = max(0, math.ceil((stop - t0) * fps - 1e-9))
    targets = t0 + np.arange(count, dtype=np.float64) / fps
    targets = targets[targets < stop - SAMPLING_EPS_S]
    indices = np.searchsorted(pts_s, targets + SAMPLING_EPS_S, side="right") - 1
    return SamplePlan(np.clip(indices, 0, None).astype(np.int64), targets)


def output_ticks(times_s: np.ndarray, fps: float) -> np.ndarray:
    """FFmpeg's ``av_rescale_q_rnd(..., AV_ROUND_NEAR_INF)`` of times to ticks of 1/fps: nearest, halves
    away from zero. The slack makes an exact half (pts 0.1 s at 25 fps) round up despite float error."""
    scaled = np.asarray(times_s, dtype=np.float64) * fps
    return (np.sign(scaled) * np.floor(np.abs(scaled) + 0.5 + SAMPLING_EPS_S * fps)).astype(np.int64)


def _ffmpeg_fps(
    pts_s: np.ndarray, stream_end_s: float, fps: float, start_s: float, end_s: float | None
) -> SamplePlan:
    """The ``fps`` filter's choice (libavfilter/vf_fps.c, default ``round=near``, no ``start_time``)."""
    ticks = output_ticks(pts_s, fps)
    first = max(int(ticks[0]), math.ceil(start_s * fps - SAMPLING_EPS_S * fps))
    stop = int(output_ticks(np.array([stream_end_s]), fps)[0])  # the filter stops at the rounded EOF
    if end_s is not None:
        stop = min(stop, math.ceil(end_s * fps - SAMPLING_EPS_S * fps))
    if stop <= first:
        return _empty()
    k = np.arange(first, stop, dtype=np.int64)
    indices = np.searchsorted(ticks, k, side="right") - 1
    return SamplePlan(indices.astype(np.int64), k / fps)


def _empty() -> SamplePlan:
    return SamplePlan(np.zeros(0, np.int64), np.zeros(0, np.float64))
