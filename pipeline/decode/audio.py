"""Mono float32 audio at a chosen rate, by one of two paths (docs/benchmark-mode.md):

- ``swresample`` (clean mode): PyAV's AudioResampler (FFmpeg's swresample) downmixes to mono and resamples
  in one float step. swresample's stereo-to-mono downmix is the channel mean.
- ``int16-resampy`` (benchmark mode): what the published VGGish features went through. FFmpeg wrote a
  16-bit WAV at the file's native rate and channel count, torchvggish's ``wavfile_to_examples`` read it:
  int16 / 32768.0, mean over channels, ``resampy.resample`` to the target rate (its default filter).

Neither path clips: lossy codecs and resampling overshoot full scale on loud peaks (resampy gives 1.15 on
v_GGSY1Qvo990), the reference keeps those values and every front-end here takes any float.

Used whatever the frame backend is: decord's audio corrupts a stereo channel and lags 17 samples after
resampling (docs/decoding.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from pipeline.decode.audio_blocks import Block, FrameBlock
from pipeline.decode.demux import check_file, open_media, read_only
from pipeline.decode.resample import resample_like_resampy
from pipeline.decode.types import AudioClip, DecodeReport, MediaError, Outcome

TRUNCATION_SLACK_S = 0.1
AUDIO_PATHS = ("swresample", "int16-resampy")
INT16_SCALE = 32768.0  # torchvggish: wav_data / 32768.0


def read_audio(
    path: str | Path,
    *,
    sample_rate: int | None = 16000,
    report: DecodeReport | None = None,
    audio_path: str = "swresample",
) -> AudioClip:
    """Decode the first audio stream, downmix to mono and resample to ``sample_rate`` by ``audio_path``.

    ``sample_rate=None`` (``int16-resampy`` only) stops before the resampling: float64 samples at the native
    rate, for a caller that resamples them elsewhere (on the audio model's GPU).
    No audio stream raises ``MediaError(NO_AUDIO)``; undecodable audio raises ``MediaError(UNDECODABLE)``.
    A mid-stream error keeps the samples decoded so far and marks ``report`` PARTIAL (without a report it
    raises ``MediaError(PARTIAL)``, so damage is never silent).
    """
    check_audio_path(audio_path, sample_rate)
    path = Path(path)
    check_file(path)
    with open_media(path) as container:
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
            sample_rate = sample_rate or stream.codec_context.sample_rate
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


Convert = Callable[[Block | None], list[np.ndarray]]  # a block of decoded frames (None: flush) -> arrays


def _decode(
    container: av.container.InputContainer, stream: av.AudioStream, convert: Convert
) -> tuple[list[np.ndarray], float, str | None]:
    """Every decoded frame through ``convert``, in blocks; a mid-stream error keeps what came before it."""
    parts: list[np.ndarray] = []
    block = FrameBlock()
    start_s: float | None = None
    failure = None
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                if start_s is None and frame.pts is not None and frame.time_base is not None:
                    start_s = float(frame.pts * frame.time_base)
                if not block.accepts(frame):
                    parts.extend(convert(block.take()))
                block.add(frame)
                if block.full:
                    parts.extend(convert(block.take()))
    except av.FFmpegError as err:
        failure = f"audio decoding stopped: {err}"
    if (rest := block.take()) is not None:
        parts.extend(convert(rest))
    parts.extend(convert(None))
    return parts, start_s or 0.0, failure


def _swresample_mono(sample_rate: int) -> Convert:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)

    def convert(block: Block | None) -> list[np.ndarray]:
        frame = None if block is None else block.frame()
        return [
            out.to_ndarray().reshape(-1).astype(np.float32, copy=False) for out in resampler.resample(frame)
        ]

    return convert


def _int16_native() -> Convert:
    """(channels, n) int16 at the native rate and layout, by FFmpeg's own float -> s16 conversion (round to
    nearest, saturate), the one that wrote the published pipeline's WAV files: :func:`float_to_s16` for
    float input (what AAC and MP3 decoders give), swresample itself for any other sample format."""
    resampler: av.AudioResampler | None = None

    def convert(block: Block | None) -> list[np.ndarray]:
        nonlocal resampler
        if block is not None and block.format in FLOAT_FORMATS:
            return [float_to_s16(block.planar)]
        if resampler is None:
            if block is None:
                return []
            resampler = av.AudioResampler(format="s16p", layout=block.layout, rate=block.rate)
        return [out.to_ndarray() for out in resampler.resample(None if block is None else block.frame())]

    return convert


FLOAT_FORMATS = ("flt", "fltp")


def float_to_s16(samples: np.ndarray) -> np.ndarray:
    """swresample's float -> s16: round(x * 32768) half to even, saturated to int16, NaN to -32768 (its C
    conversion, lrintf then saturation; its SIMD one agrees below |x| = 65536, i.e. on any decoder's output).
    tests/test_audio_reference.py checks it against swresample."""
    scaled = np.rint(np.asarray(samples, dtype=np.float32) * np.float32(32768.0))
    out = np.clip(scaled, -32768, 32767)
    out[np.isnan(out)] = -32768
    return out.astype(np.int16)


def _int16_resampy(parts: list[np.ndarray], native_rate: int, sample_rate: int | None) -> np.ndarray:
    """torchvggish's ``wavfile_to_examples`` up to the log-mel: / 32768.0, channel mean, resampy
    (:func:`pipeline.decode.resample.resample_like_resampy`, the same computation); ``sample_rate=None``
    stops before resampling, in float64."""
    if not parts:
        return np.zeros(0, np.float32 if sample_rate else np.float64)
    # the channel mean of int16 / 32768.0, exactly (sums of int16 and the division by 32768 are exact in
    # float64), without an (n, channels) float64 copy of the whole clip
    mono = np.concatenate(
        [part.sum(axis=0, dtype=np.float64) / INT16_SCALE / part.shape[0] for part in parts]
    )
    if sample_rate is None:
        return mono  # the exact channel mean, for a resampler elsewhere
    if native_rate != sample_rate:
        mono = resample_like_resampy(mono, native_rate, sample_rate)
    return mono.astype(np.float32)


def check_audio_path(audio_path: str, sample_rate: int | None = 16000) -> None:
    if audio_path not in AUDIO_PATHS:
        raise ValueError(f"unknown audio path {audio_path!r}; choose one of {', '.join(AUDIO_PATHS)}")
    if sample_rate is None and audio_path != "int16-resampy":
        raise ValueError("only the int16-resampy path delivers audio at its native rate (sample_rate=None)")
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")


def _short_of_declared(decoded_s: float, declared_s: float) -> str | None:
    """A reason when the audio ends well before the stream's declared duration (a cut-off file)."""
    # Encoder priming and padding move the end by tens of milliseconds, never by this much.
    if decoded_s < declared_s - (TRUNCATION_SLACK_S + 0.01 * declared_s):
        return f"truncated: audio ends at {decoded_s:.2f} s but the stream declares {declared_s:.2f} s"
    return None
