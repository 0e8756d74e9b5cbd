"""Do the audio and the visual windows of each video cover the same stretch of time?

Temporal models (TCaF, DAAN in temporal mode) pair the i-th second of audio with the i-th second of video
through their time embeddings. Two stores made from different files (a trimmed and an untrimmed copy, a
shifted start) would train on sequences that do not belong together without any error; this check
refuses them. Windows of different lengths are expected (VGGish 0.96 s, C3D 0.64 s, AST 10.24 s), so
the check compares where each modality's windows start and end, with a tolerance of the longer window
length and at least ``tolerance_s``. Rows without timestamps (published features) cannot be checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.errors import UserError

Timestamps = Callable[[str], tuple[np.ndarray, np.ndarray]]


class WindowMismatch(UserError):
    """The audio and visual windows of some videos do not line up in time."""


@dataclass(frozen=True)
class Span:
    start: float
    end: float
    window: float  # the longest window of the modality for this video


def span(start_s: np.ndarray, end_s: np.ndarray) -> Span | None:
    """First start, last end and longest window of one video's rows; None without timestamps."""
    start_s, end_s = np.asarray(start_s, dtype=np.float64), np.asarray(end_s, dtype=np.float64)
    if start_s.size == 0 or not (np.isfinite(start_s).all() and np.isfinite(end_s).all()):
        return None
    return Span(float(start_s.min()), float(end_s.max()), float((end_s - start_s).max()))


def misaligned(audio: Span, visual: Span, tolerance_s: float) -> bool:
    allowed = max(tolerance_s, audio.window, visual.window)
    return abs(audio.start - visual.start) > allowed or abs(audio.end - visual.end) > allowed


def check_windows(
    video_ids: list[str], audio: Timestamps, visual: Timestamps, tolerance_s: float = 1.0
) -> int:
    """Raise :class:`WindowMismatch` naming the videos whose windows do not line up; return how many
    videos were checked (those with timestamps in both stores)."""
    checked, bad = 0, []
    for video_id in video_ids:
        a, v = span(*audio(video_id)), span(*visual(video_id))
        if a is None or v is None:
            continue
        checked += 1
        if misaligned(a, v, tolerance_s):
            bad.append(f"{video_id}: audio {a.start:.2f}-{a.end:.2f} s, visual {v.start:.2f}-{v.end:.2f} s")
    if bad:
        raise WindowMismatch(
            f"{len(bad)} of {checked} videos have audio and visual windows that do not line up in time "
            f"(more than max({tolerance_s:g} s, one window) apart), e.g. {'; '.join(bad[:3])}. Temporal models "
            "pair the two sequences step by step: extract both stores from the same video files, or raise "
            "data.window_tolerance_s if the offset is intended"
        )
    return checked
