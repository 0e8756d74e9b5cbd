"""Decoding: probe files, stream RGB frames sampled by timestamp in bounded chunks (the clean ``pts`` rule or
FFmpeg's ``fps`` filter rule), read mono audio (one float resample, or the published int16 + resampy path),
all with typed outcomes; ``open_guarded`` runs a decode in a killable child process with a time limit
(``open_inprocess``: the same interface in the calling process, for trusted inputs).

Backends ``pyav`` (default, see :data:`DEFAULT_BACKEND`) and ``decord`` give bit-identical frames; audio
always goes through PyAV (FFmpeg) decoding.
"""

from pipeline.decode.audio import AUDIO_PATHS, read_audio
from pipeline.decode.backends import BACKENDS
from pipeline.decode.frames import DEFAULT_BACKEND, iter_frames
from pipeline.decode.guarded import GuardedDecode, open_guarded
from pipeline.decode.inprocess import InProcessDecode, open_inprocess
from pipeline.decode.length import too_short
from pipeline.decode.probe import probe
from pipeline.decode.sampling import FRAME_RULES, SamplePlan, plan_samples
from pipeline.decode.types import (
    AudioClip,
    AudioStreamInfo,
    DecodeReport,
    FrameChunk,
    MediaError,
    Outcome,
    ProbeResult,
    VideoStreamInfo,
)

__all__ = [
    "AUDIO_PATHS",
    "BACKENDS",
    "DEFAULT_BACKEND",
    "FRAME_RULES",
    "AudioClip",
    "AudioStreamInfo",
    "DecodeReport",
    "FrameChunk",
    "GuardedDecode",
    "InProcessDecode",
    "MediaError",
    "Outcome",
    "ProbeResult",
    "SamplePlan",
    "VideoStreamInfo",
    "iter_frames",
    "open_guarded",
    "open_inprocess",
    "plan_samples",
    "probe",
    "read_audio",
    "too_short",
]
