"""Mono float32 audio at a chosen rate, by one of two paths (docs/benchmark-mode.md):

- ``swresample`` (clean mode): PyAV's AudioResampler (FFmpeg's swresample) downmixes to mono and resamples
  in one float step. swresample's stereo-to-mono downmix is the channel mean.
- ``int16-resampy`` (benchmark mode): what the published VGGish features went through. FFmpeg wrote a
  16-bit WAV at the file's native rate and channel count, torchvggish's ``wavfile_to_examples`` read it:
  int16 / 32768.0, mean over channels, ``resampy.resample`` to the target rate (its default filter).

Neither path clips: lossy codecs and resampling overshoot full scale on loud peaks (resampy gives 1.15 on
v_GGSY1Qvo990), the reference keeps those values and every front-end here takes any float.

Used whatever the frame backend is: decord's audio corrupts a stereo channel and lags 17 samples after
resampling (REFERENCE §5.2/§5.3).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from pipeline.decode.demux import read_only
from pipeline.decode.types import AudioClip, DecodeReport, MediaError, Outcome

TRUNCATION_SLACK_S = 0.1
AUDIO_PATHS = ("swresample", "int16-resampy")
INT16_SCALE = 32768.0  # torchvggish: wav_data / 32768.0


def read_audio(
    path: str | Path,
    *,
    sample_rate: int = 16000,
    report: DecodeReport | None = None,
    audio_path: str = "swresample",
) -> AudioClip:
    """Decode the first audio stream, downmix to mono and resample to ``sample_rate`` by ``audio_path``.

    No audio stream raises ``MediaError(NO_AUDIO)``; undecodable audio raises ``MediaError(UNDECODABLE)``.
    A mid-stream error keeps the samples decoded so far and marks ``report`` PARTIAL (without a report it
    raises ``MediaError(PARTIAL)``, so damage is never silent).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    check_audio_path(audio_path)
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
        read_only(container, stream)
        if audio_path == "swresample":
            parts, start_s, failure = _decode(container, stream, _swresample_mono(sample_rate))
            samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        else:
            parts, start_s, failure = _decode(container, stream, _int16_native())
            samples = _int16_resampy(parts, stream.codec_context.sample_rate, sample_rate)
        declared_s = (
            float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        )
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


Convert = Callable[[av.AudioFrame | None], list[np.ndarray]]  # a decoded frame (None: flush) -> arrays


def _decode(
    container: av.container.InputContainer, stream: av.AudioStream, convert: Convert
) -> tuple[list[np.ndarray], float, str | None]:
    """Every decoded frame through ``convert``; a mid-stream error keeps what came before it."""
    parts: list[np.ndarray] = []
    start_s: float | None = None
    failure = None
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                if start_s is None and frame.pts is not None and frame.time_base is not None:
                    start_s = float(frame.pts * frame.time_base)
                parts.extend(convert(frame))
    except av.FFmpegError as err:
        failure = f"audio decoding stopped: {err}"
    parts.extend(convert(None))
    return parts, start_s or 0.0, failure


def _swresample_mono(sample_rate: int) -> Convert:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)

    def convert(frame: av.AudioFrame | None) -> list[np.ndarray]:
        return [
            out.to_ndarray().reshape(-1).astype(np.float32, copy=False) for out in resampler.resample(frame)
        ]

    return convert


def _int16_native() -> Convert:
    """(channels, n) int16 at the native rate and layout: FFmpeg's own float -> s16 conversion (round to
    nearest, saturate), the one that wrote the published pipeline's WAV files."""
    resampler: av.AudioResampler | None = None

    def convert(frame: av.AudioFrame | None) -> list[np.ndarray]:
        nonlocal resampler
        if resampler is None:
            if frame is None:
                return []
            resampler = av.AudioResampler(format="s16p", layout=frame.layout, rate=frame.sample_rate)
        return [out.to_ndarray() for out in resampler.resample(frame)]

    return convert


def _int16_resampy(parts: list[np.ndarray], native_rate: int, sample_rate: int) -> np.ndarray:
    """torchvggish's ``wavfile_to_examples`` up to the log-mel: / 32768.0, channel mean, resampy."""
    if not parts:
        return np.zeros(0, np.float32)
    # per decoded frame, (n, channels) as soundfile reads a WAV: each row's mean is the reference's
    mono = np.concatenate([np.mean(part.T / INT16_SCALE, axis=1) for part in parts])
    if native_rate != sample_rate:
        import resampy  # imported here: numba compiles it on first use, only this path pays for that

        mono = resampy.resample(mono, native_rate, sample_rate)
    return mono.astype(np.float32)


def check_audio_path(audio_path: str) -> None:
    if audio_path not in AUDIO_PATHS:
        raise ValueError(f"unknown audio path {audio_path!r}; choose one of {', '.join(AUDIO_PATHS)}")


def _short_of_declared(decoded_s: float, declared_s: float) -> str | None:
    """A reason when the audio ends well before the stream's declared duration (a cut-off file)."""
    # Encoder priming and padding move the end by tens of milliseconds, never by this much.
    if decoded_s < declared_s - (TRUNCATION_SLACK_S + 0.01 * declared_s):
        return f"truncated: audio ends at {decoded_s:.2f} s but the stream declares {declared_s:.2f} s"
    return None
