"""A packet scan of the video stream: the frames that are really there and when each is shown.

Reading packets (no decoding) is cheap and gives the truth that headers often get wrong: the frame count,
each frame's presentation time, the keyframes (where a seek can land) and whether the file ends early.
The probe reports from it and the PyAV backend plans its sampling and seeks with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np


@dataclass(frozen=True)
class VideoScan:
    """Presentation-ordered frame times of one video stream, in stream ticks and seconds."""

    pts: np.ndarray  # (N,) int64 sorted presentation timestamps in ticks of ``time_base``
    keyframe_pts: np.ndarray  # (K,) int64 sorted pts of keyframes (seek targets)
    end_pts: int  # when the last frame stops being displayed, in ticks
    time_base: Fraction
    header_frames: int  # the container's claimed frame count (0 when unknown)
    truncation: str | None  # why the stream looks cut short (missing frames, damaged packet, demux error)

    @property
    def truncated(self) -> bool:
        return self.truncation is not None

    @property
    def pts_s(self) -> np.ndarray:
        return self.pts.astype(np.float64) * float(self.time_base)

    @property
    def end_s(self) -> float:
        return float(self.end_pts * self.time_base)

    @property
    def start_s(self) -> float:
        return float(self.pts[0] * self.time_base) if self.pts.size else 0.0

    @property
    def duration_s(self) -> float:
        return float((self.end_pts - int(self.pts[0])) * self.time_base) if self.pts.size else 0.0


def scan_video(container: av.container.InputContainer, stream: av.VideoStream) -> VideoScan:
    """Demux every packet of ``stream`` (no decoding) and summarise timing; never raises on demux errors.

    The last frame lasts its packet duration, but never past the stream's declared end (start + duration)
    when that lies after the last pts: in v_GGSY1Qvo990 the edit list ends the stream 1 tick after the last
    frame (17 701 / 981 s = 18.044 s), which is what decord and torchcodec report too.
    """
    pts: list[int] = []
    keys: list[int] = []
    last_duration = 0
    max_pts: int | None = None
    corrupt = False
    error = None
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's flush packet
                continue
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None:
                continue
            pts.append(stamp)
            if packet.is_keyframe:
                keys.append(stamp)
            corrupt = corrupt or packet.is_corrupt
            if max_pts is None or stamp >= max_pts:
                max_pts, last_duration = stamp, packet.duration or 0
    except (av.FFmpegError, OSError) as err:
        error = f"demux stopped: {err}"
    order = np.sort(np.asarray(pts, dtype=np.int64))
    header_frames = int(stream.frames or 0)
    end = _end_pts(order, last_duration, stream)
    truncation = error
    if truncation is None and header_frames > order.size:
        truncation = f"only {order.size} of the {header_frames} frames in the header are present"
    if truncation is None and corrupt:
        truncation = "a video packet is damaged"
    return VideoScan(
        pts=order,
        keyframe_pts=np.sort(np.asarray(keys, dtype=np.int64)),
        end_pts=end,
        time_base=Fraction(stream.time_base) if stream.time_base else Fraction(1, 1),
        header_frames=header_frames,
        truncation=truncation,
    )


def _end_pts(order: np.ndarray, last_duration: int, stream: av.VideoStream) -> int:
    if order.size == 0:
        return 0
    last = int(order[-1])
    if last_duration <= 0 and order.size > 1:
        last_duration = int(np.median(np.diff(order)))  # no duration stored: assume the typical interval
    end = last + max(last_duration, 1)
    if stream.duration:
        declared = int(stream.start_time or 0) + int(stream.duration)
        if last < declared < end:
            end = declared
    return end
