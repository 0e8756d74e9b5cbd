"""Mono float32 audio at a chosen rate through ONE resampling path: PyAV's AudioResampler (swresample).

Samples are clipped to [-1, 1]: lossy codecs overshoot full scale by a few percent on loud peaks.

Used whatever the frame backend is: decord's audio corrupts a stereo channel and lags 17 samples after
resampling (REFERENCE §5.2/§5.3). swresample's stereo-to-mono downmix is the channel mean.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from pipeline.decode.types import AudioClip, DecodeReport, MediaError, Outcome

TRUNCATION_SLACK_S = 0.1


def read_audio(
    path: str | Path, *, sample_rate: int = 16000, report: DecodeReport | None = None
) -> AudioClip:
    """Decode the first audio stream, downmix to mono and resample to ``sample_rate``.

    No audio stream raises ``MediaError(NO_AUDIO)``; undecodable audio raises ``MediaError(UNDECODABLE)``.
    A mid-stream error keeps the samples decoded so far and marks ``report`` PARTIAL (without a report it
    raises ``MediaError(PARTIAL)``, so damage is never silent).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    path = Path(path)
    if not path.is_file():
        raise MediaError(Outcome.NOT_FOUND, "file not found; check the path", path)
    if path.stat().st_size == 0:
        raise MediaError(Outcome.EMPTY_FILE, "file is empty (0 bytes)", path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise MediaError(Outcome.UNDECODABLE, f"cannot open as media: {err}", path) from None
    with container:
        if not container.streams.audio:
            raise MediaError(Outcome.NO_AUDIO, "no audio stream", path)
        stream = container.streams.audio[0]
        parts, start_s, failure = _decode_resampled(container, stream, sample_rate)
        declared_s = (
            float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        )
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    # AAC decoding and resampling overshoot full scale slightly; the contract is [-1, 1] (as an int16 path gives).
    np.clip(samples, -1.0, 1.0, out=samples)
    if failure is None and declared_s is not None:
        failure = _short_of_declared(samples.size / sample_rate, declared_s)
    if failure is not None and samples.size == 0:
        raise MediaError(Outcome.UNDECODABLE, f"no audio could be decoded: {failure}", path)
    if report is not None:
        report.audio_samples = int(samples.size)
    if failure is not None:
        if report is None:
            raise MediaError(Outcome.PARTIAL, f"{failure} (after {samples.size} samples)", path)
        report.outcome, report.error = Outcome.PARTIAL, failure
    return AudioClip(samples=samples, sample_rate=sample_rate, start_s=start_s)


def _decode_resampled(
    container: av.container.InputContainer, stream: av.AudioStream, sample_rate: int
) -> tuple[list[np.ndarray], float, str | None]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    parts: list[np.ndarray] = []
    start_s: float | None = None
    failure = None
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                if start_s is None and frame.pts is not None and frame.time_base is not None:
                    start_s = float(frame.pts * frame.time_base)
                parts.extend(_mono(out) for out in resampler.resample(frame))
    except av.FFmpegError as err:
        failure = f"audio decoding stopped: {err}"
    parts.extend(_mono(out) for out in resampler.resample(None))
    return parts, start_s or 0.0, failure


def _short_of_declared(decoded_s: float, declared_s: float) -> str | None:
    """A reason when the audio ends well before the stream's declared duration (a cut-off file)."""
    # Encoder priming and padding move the end by tens of milliseconds, never by this much.
    if decoded_s < declared_s - (TRUNCATION_SLACK_S + 0.01 * declared_s):
        return f"truncated: audio ends at {decoded_s:.2f} s but the stream declares {declared_s:.2f} s"
    return None


def _mono(frame: av.AudioFrame) -> np.ndarray:
    return frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)
