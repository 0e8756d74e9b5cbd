"""Which frames to deliver: the frame *displayed* at each target time, from presentation timestamps.

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
) -> SamplePlan:
    """Plan frames for targets t_k = t0 + k/fps in [t0, end), taking the last frame with pts <= t_k.

    ``pts_s`` are the frames' presentation times sorted ascending; ``stream_end_s`` is when the last frame
    stops being displayed. t0 is ``start_s`` or the first frame's pts, whichever is later (no frame is
    displayed before the first one). ``fps=None`` delivers every frame whose pts lies in [start_s, end).
    """
    pts_s = np.asarray(pts_s, dtype=np.float64)
    stop = stream_end_s if end_s is None else min(end_s, stream_end_s)
    if pts_s.size == 0 or stop <= start_s:
        return SamplePlan(np.zeros(0, np.int64), np.zeros(0, np.float64))
    if fps is None:
        keep = np.flatnonzero((pts_s >= start_s - SAMPLING_EPS_S) & (pts_s < stop - SAMPLING_EPS_S))
        return SamplePlan(keep.astype(np.int64), pts_s[keep])
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number or None, got {fps!r}")
    t0 = max(start_s, float(pts_s[0]))
    count = max(0, math.ceil((stop - t0) * fps - 1e-9))
    targets = t0 + np.arange(count, dtype=np.float64) / fps
    targets = targets[targets < stop - SAMPLING_EPS_S]
    indices = np.searchsorted(pts_s, targets + SAMPLING_EPS_S, side="right") - 1
    return SamplePlan(np.clip(indices, 0, None).astype(np.int64), targets)
