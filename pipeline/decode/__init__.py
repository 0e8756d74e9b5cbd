"""Decoding: probe files, stream PTS-sampled RGB frames in bounded chunks, read mono audio, all with typed
outcomes; ``open_guarded`` runs a decode in a killable child process with a time limit (``open_inprocess``: the
same interface in the calling process, for trusted inputs).

Backends ``pyav`` (default, see :data:`DEFAULT_BACKEND`) and ``decord`` give bit-identical frames; audio
always goes through PyAV's resampler.
"""

from pipeline.decode.audio import read_audio
from pipeline.decode.backends import BACKENDS
from pipeline.decode.frames import DEFAULT_BACKEND, iter_frames
from pipeline.decode.guarded import GuardedDecode, open_guarded
from pipeline.decode.inprocess import InProcessDecode, open_inprocess
from pipeline.decode.length import too_short
from pipeline.decode.probe import probe
from pipeline.decode.sampling import SamplePlan, plan_samples
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
    "BACKENDS",
    "DEFAULT_BACKEND",
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
