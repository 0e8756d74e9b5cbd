"""Is a file long enough for an extractor's window? One rule, so every extractor says ``too_short`` alike."""

from __future__ import annotations

import math

from pipeline.decode.sampling import SAMPLING_EPS_S
from pipeline.decode.types import AudioClip, MediaError, Outcome, ProbeResult


def too_short(
    length: ProbeResult | AudioClip | float | int,
    *,
    window_s: float | None = None,
    window_frames: int | None = None,
    fps: float | None = None,
    modality: str = "video",
) -> MediaError | None:
    """A ``MediaError(TOO_SHORT)`` when ``length`` cannot fill one window, else None.

    ``length`` is a probe (the ``modality`` stream's duration or frame count), a decoded
    :class:`AudioClip`, a duration in seconds (float) or a frame count (int). Give the window either in
    seconds (``window_s``, e.g. VGGish 0.96) or in frames (``window_frames``, e.g. C3D 16); with ``fps``
    a duration counts as the frames sampled at that rate (t_k = k/fps before the end).
    """
    if (window_s is None) == (window_frames is None):
        raise ValueError("give exactly one of window_s or window_frames")
    if modality not in ("video", "audio"):
        raise ValueError(f"modality must be 'video' or 'audio', got {modality!r}")
    name = length.path if isinstance(length, ProbeResult) else ""
    if window_s is not None:
        have_s = _seconds(length, modality, fps)
        if have_s + SAMPLING_EPS_S < window_s:
            return MediaError(
                Outcome.TOO_SHORT, f"{have_s:.3f} s of {modality} < the {window_s} s window", name
            )
        return None
    have = _frames(length, fps)
    if have < int(window_frames):
        rate = f" at {fps} fps" if fps else ""
        return MediaError(Outcome.TOO_SHORT, f"{have} frames{rate} < the {window_frames}-frame window", name)
    return None


def _seconds(length: ProbeResult | AudioClip | float | int, modality: str, fps: float | None) -> float:
    if isinstance(length, AudioClip):
        return length.duration_s
    if isinstance(length, ProbeResult):
        stream = length.video if modality == "video" else length.audio
        if stream is not None and stream.duration_s is not None:
            return float(stream.duration_s)
        return float(length.duration_s or 0.0) if stream is not None else 0.0
    if isinstance(length, int):
        if fps is None:
            raise ValueError("a frame count needs fps to compare with a window in seconds")
        return length / fps
    return float(length)


def _frames(length: ProbeResult | AudioClip | float | int, fps: float | None) -> int:
    if isinstance(length, int):
        return length
    if isinstance(length, ProbeResult) and fps is None:
        return length.video.frame_count if length.video is not None else 0
    if fps is None:
        raise ValueError("a duration needs fps to compare with a window in frames")
    seconds = _seconds(length, "video", fps)
    return max(0, math.ceil(seconds * fps - SAMPLING_EPS_S * fps))
