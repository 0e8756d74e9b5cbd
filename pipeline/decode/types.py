"""Value types of the decoding layer: what a probe reports, what a decode yields, and typed outcomes.

These are the contract between decoding and everything downstream (extractors, store, Dask tasks):
frames arrive as uint8 RGB chunks with their presentation times in seconds, audio as mono float32,
and every failure is an :class:`Outcome` with a human-readable reason instead of a leaked exception.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np


class Outcome(StrEnum):
    """Per-file result of probing or decoding; recorded per video, never printed and forgotten."""

    OK = "ok"
    PARTIAL = "partial"  # decoding stopped mid-stream; what was decoded before the error is kept
    NO_VIDEO = "no_video"  # the file has no video stream (audio-only extractors still work)
    NO_AUDIO = "no_audio"  # the file has no audio stream (visual extractors still work)
    TOO_SHORT = "too_short"  # shorter than the window an extractor requires
    UNDECODABLE = "undecodable"  # not a media file, or no frame could be decoded
    EMPTY_FILE = "empty_file"  # zero bytes
    NOT_FOUND = "not_found"  # the path does not exist or is not a file
    TIMEOUT = "timeout"  # the decode exceeded its wall-clock limit and was killed
    CRASHED = "crashed"  # the decoder process was killed by a signal twice (e.g. out of memory); not final


@dataclass(frozen=True)
class VideoStreamInfo:
    codec: str
    width: int
    height: int
    frame_count: int  # frames actually present (counted from packets), not the container's claim
    duration_s: float  # last pts + last frame duration - first pts, from packet timestamps
    fps: float  # frame_count / duration_s from packet timestamps (the true average rate)
    container_fps: float | None  # what the header claims (average_rate); may differ from fps
    time_base: str  # e.g. "1/12800"
    start_s: float = 0.0  # pts of the first frame in seconds


@dataclass(frozen=True)
class AudioStreamInfo:
    codec: str
    sample_rate: int
    channels: int
    duration_s: float | None


@dataclass(frozen=True)
class ProbeResult:
    path: str
    status: Outcome
    error: str | None = None
    size_bytes: int | None = None
    container: str | None = None
    duration_s: float | None = None
    video: VideoStreamInfo | None = None
    audio: AudioStreamInfo | None = None
    corrupt_regions: tuple[str, ...] = ()  # found by a deep probe, e.g. "video 1.760-2.000 s (6 packets)"

    @property
    def has_video(self) -> bool:
        return self.video is not None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    def to_record(self) -> dict:
        """Flat JSON-ready record (the row printed by ``avzsl probe``)."""
        return {
            "path": self.path,
            "status": str(self.status),
            "error": self.error,
            "size_bytes": self.size_bytes,
            "container": self.container,
            "duration_s": self.duration_s,
            "has_video": self.has_video,
            "has_audio": self.has_audio,
            "video": asdict(self.video) if self.video else None,
            "audio": asdict(self.audio) if self.audio else None,
            "corrupt_regions": list(self.corrupt_regions),
        }


@dataclass
class FrameChunk:
    """A bounded run of decoded frames: ``frames`` (N, H, W, 3) uint8 RGB, ``pts_s`` (N,) float64 seconds.

    With fps sampling a frame may repeat (fps above the native rate); ``target_s`` then holds the sampling
    time t_k each row stands for, while ``pts_s`` is when that frame is actually shown.
    """

    frames: np.ndarray
    pts_s: np.ndarray
    source_index: np.ndarray  # (N,) int64: index of each frame in presentation (display) order
    target_s: np.ndarray | None = None  # (N,) float64 sampling times t_k (= pts_s when every frame is taken)

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class AudioClip:
    """Mono float32 samples at ``sample_rate`` (float64 for native-rate audio that is resampled later), full
    scale 1 but not clipped (loud peaks may exceed it);
    ``start_s`` is the pts of the first sample."""

    samples: np.ndarray
    sample_rate: int
    start_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass
class DecodeReport:
    """How a decode ended: the outcome, why, and how much was decoded before it ended."""

    path: str
    outcome: Outcome = Outcome.OK
    error: str | None = None
    frames_decoded: int = 0
    audio_samples: int = 0
    notes: list[str] = field(default_factory=list)


class MediaError(Exception):
    """A decode failure with its typed outcome; decoding code converts it into a report, never lets it escape."""

    def __init__(self, outcome: Outcome, message: str, path: str | Path = ""):
        super().__init__(f"{path}: {message}" if path else message)
        self.outcome = outcome
        self.reason = message
        self.path = str(path)
