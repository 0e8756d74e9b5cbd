"""Write real encoded audio-visual clips (H.264 yuv420p + AAC in mp4) with PyAV's bundled encoders.

Tests, benchmarks and the synthetic dataset need media that exercises the same decode paths as real
videos, so clips are genuinely encoded (B-frames, edit lists, AAC priming) rather than raw arrays.
On one machine the output is byte-identical for identical input: frames reach the encoder already in
yuv420p, converted here with exact integer arithmetic (:func:`rgb_to_yuv420p`) instead of by the
library's CPU-specific scaler; the encoder runs single-threaded with fixed options; the container carries
no creation time. Across machines the encoder's input is still identical, but x264 runs other SIMD code on
another CPU and may choose differently, so the bytes may differ while decoding to nearly the same pixels
(docs/synthetic-data.md). Frames are consumed one at a time, so a long clip never needs all its frames in
memory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

VIDEO_CODEC = "libx264"
AUDIO_CODEC = "aac"
# 90 kHz is the MPEG clock: exact for 24/25/30/50/60 fps and 30000/1001, fine enough for any VFR timing.
VIDEO_TIME_BASE = Fraction(1, 90000)
AUDIO_BIT_RATE = 64_000
X264_OPTIONS = {"preset": "veryfast", "crf": "20"}
AAC_OPTIONS = {"aac_coder": "fast"}  # about 2x faster than the default two-loop coder; plenty for test audio
# BT.601 limited-range RGB -> Y, Cb, Cr rows in 16-bit fixed point: the matrix decoders assume for an untagged
# stream. Y spans 16..235 (219 steps), Cb and Cr 16..240 (224 steps) around 128.
_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
_RGB_TO_YUV = np.round(
    65536
    / 255
    * np.array(
        [
            [219 * _KR, 219 * _KG, 219 * _KB],
            [-112 * _KR / (1 - _KB), -112 * _KG / (1 - _KB), 112],
            [112, -112 * _KG / (1 - _KR), -112 * _KB / (1 - _KR)],
        ]
    )
).astype(np.int32)
# Frame codes: a 2 x 8 grid of black/white blocks in the top band of each test frame (16 bits).
CODE_ROWS, CODE_COLS = 2, 8
CODE_BITS = CODE_ROWS * CODE_COLS


def write_av_clip(
    path: str | Path,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    pts_s: Sequence[float] | np.ndarray | None = None,
    *,
    gop_s: float = 2.0,
) -> Path:
    """Encode ``frames`` (N,H,W,3 uint8, or an iterable of H,W,3 frames) and optional mono ``audio`` to mp4.

    ``pts_s`` gives each frame's presentation time (seconds, strictly increasing) for a variable-frame-rate
    clip; otherwise frame k is shown at k / fps. Audio is float32 mono in [-1, 1] at ``sample_rate``.
    Packets are interleaved in time order and the index (moov) is written first, like most real
    files, so a truncated copy still opens and fails mid-stream. The write is atomic.
    """
    path = Path(path)
    if fps <= 0:
        raise ValueError(f"{path}: fps must be positive, got {fps}")
    audio_arr = _check_audio(path, audio) if audio is not None else None
    times = np.asarray(pts_s, dtype=np.float64) if pts_s is not None else None
    if times is not None and times.size > 1 and not np.all(np.diff(times) > 0):
        raise ValueError(f"{path}: pts_s must be strictly increasing")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}.mp4")
    try:
        _encode(tmp, iter(frames), fps, audio_arr, sample_rate, times, gop_s)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_audio(path: Path, audio: np.ndarray) -> np.ndarray:
    arr = np.asarray(audio)
    if arr.ndim != 1:
        raise ValueError(f"{path}: audio must be mono 1-D float samples, got shape {arr.shape}")
    if arr.size and float(np.max(np.abs(arr))) > 1.0 + 1e-6:
        raise ValueError(f"{path}: audio samples must lie in [-1, 1]; scale the signal before writing")
    return arr.astype(np.float32, copy=False)


def _encode(
    tmp: Path,
    frames: Iterator[np.ndarray],
    fps: float,
    audio: np.ndarray | None,
    sample_rate: int,
    times: np.ndarray | None,
    gop_s: float,
) -> None:
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{tmp.name}: no frames to write")
    height, width = _check_frame(tmp, first, None)
    # bitexact keeps library version strings out of the file; no creation_time is ever set.
    with av.open(
        str(tmp), "w", format="mp4", options={"movflags": "faststart", "fflags": "+bitexact"}
    ) as out:
        video = out.add_stream(VIDEO_CODEC, rate=Fraction(fps).limit_denominator(100_000))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = VIDEO_TIME_BASE
        video.codec_context.time_base = VIDEO_TIME_BASE
        video.codec_context.thread_count = 1  # x264 output depends on the thread count
        video.codec_context.gop_size = max(1, round(gop_s * fps))
        video.codec_context.options = dict(X264_OPTIONS)
        astream = None
        if audio is not None:
            astream = out.add_stream(AUDIO_CODEC, rate=sample_rate, layout="mono")
            astream.codec_context.bit_rate = AUDIO_BIT_RATE
            astream.codec_context.options = dict(AAC_OPTIONS)
        audio_writer = _AudioWriter(out, astream, audio, sample_rate) if astream is not None else None
        index = 0
        frame: np.ndarray | None = first
        while frame is not None:
            if index > 0:
                _check_frame(tmp, frame, (height, width))
            t = _frame_time(tmp, index, fps, times)
            if audio_writer is not None:
                audio_writer.write_until(t)
            # Already yuv420p, so the codec context does not run its scaler (docs/synthetic-data.md).
            vf = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
            vf.pts = round(t / VIDEO_TIME_BASE)
            vf.time_base = VIDEO_TIME_BASE
            out.mux(video.encode(vf))
            index += 1
            frame = next(frames, None)
        if times is not None and index != len(times):
            raise ValueError(f"{tmp.name}: got {index} frames but {len(times)} pts_s values")
        out.mux(video.encode(None))
        if audio_writer is not None:
            audio_writer.write_until(float("inf"))
            audio_writer.flush()


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """BT.601 limited-range yuv420p planes of an (H, W, 3) uint8 RGB frame (H, W even), as a (3H/2, W) array.

    The layout ``av.VideoFrame.from_ndarray(..., format="yuv420p")`` takes: Y rows, then Cb, then Cr. Chroma
    is computed from the sum of each 2x2 block (centre siting). Integer arithmetic only, so every machine gets
    the same planes, which the library's scaler does not promise.
    """
    height, width = frame.shape[:2]
    r, g, b = (frame[..., c].astype(np.int32) for c in range(3))
    (yr, yg, yb), (ur, ug, ub), (vr, vg, vb) = _RGB_TO_YUV
    y = (yr * r + yg * g + yb * b + (16 << 16) + (1 << 15)) >> 16
    # Chroma from 2x2 sums: four times the mean, so two more bits to shift away.
    rs, gs, bs = (c[0::2, 0::2] + c[0::2, 1::2] + c[1::2, 0::2] + c[1::2, 1::2] for c in (r, g, b))
    u = (ur * rs + ug * gs + ub * bs + (128 << 18) + (1 << 17)) >> 18
    v = (vr * rs + vg * gs + vb * bs + (128 << 18) + (1 << 17)) >> 18
    planes = np.empty(height * width * 3 // 2, dtype=np.uint8)
    n_luma, n_chroma = height * width, height * width // 4
    planes[:n_luma] = y.ravel()
    planes[n_luma : n_luma + n_chroma] = u.ravel()
    planes[n_luma + n_chroma :] = v.ravel()
    return planes.reshape(height * 3 // 2, width)


def _check_frame(path: Path, frame: np.ndarray, shape: tuple[int, int] | None) -> tuple[int, int]:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(
            f"{path.name}: frames must be (H, W, 3) uint8 RGB, got shape {frame.shape} dtype {frame.dtype}"
        )
    h, w = int(frame.shape[0]), int(frame.shape[1])
    if shape is None and (h % 2 or w % 2):
        raise ValueError(f"{path.name}: yuv420p needs even width and height, got {w}x{h}; crop or pad")
    if shape is not None and (h, w) != shape:
        raise ValueError(f"{path.name}: frame size changed from {shape[1]}x{shape[0]} to {w}x{h}")
    return h, w


def _frame_time(path: Path, index: int, fps: float, times: np.ndarray | None) -> float:
    if times is None:
        return index / fps
    if index >= len(times):
        raise ValueError(f"{path.name}: more frames than pts_s values ({len(times)})")
    return float(times[index])


class _AudioWriter:
    """Feeds audio to the encoder in step with the video so that packets interleave by time."""

    def __init__(
        self, out: av.container.OutputContainer, stream: av.AudioStream, audio: np.ndarray, rate: int
    ):
        self.out, self.stream, self.audio, self.rate = out, stream, audio, rate
        self.frame_size = stream.codec_context.frame_size or 1024
        self.pos = 0

    def write_until(self, t: float) -> None:
        end = len(self.audio) if t == float("inf") else min(len(self.audio), int(t * self.rate))
        while self.pos < end:
            chunk = self.audio[self.pos : self.pos + self.frame_size]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            af.sample_rate = self.rate
            af.pts = self.pos
            af.time_base = Fraction(1, self.rate)
            self.out.mux(self.stream.encode(af))
            self.pos += len(chunk)

    def flush(self) -> None:
        self.out.mux(self.stream.encode(None))


def make_test_clip(
    path: str | Path,
    *,
    seconds: float,
    width: int,
    height: int,
    fps: float = 25.0,
    with_audio: bool = True,
    seed: int = 0,
    sample_rate: int = 16000,
) -> Path:
    """A clip with a moving pattern (plus each frame's index as a block code) and a tone, streamed.

    The frame code lets decoding tests check which source frame a sampled frame is
    (:func:`read_frame_code`); the tone's frequency (440-880 Hz, from ``seed``) makes audio checkable.
    """
    n_frames = max(1, round(seconds * fps))
    rng = np.random.default_rng(seed)
    tone_hz = float(rng.uniform(440.0, 880.0))
    audio = None
    if with_audio:
        t = np.arange(round(seconds * sample_rate)) / sample_rate
        audio = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
    frames = (pattern_frame(k, width, height, seed) for k in range(n_frames))
    return write_av_clip(path, frames, fps, audio=audio, sample_rate=sample_rate)


def pattern_frame(index: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Frame ``index`` of :func:`make_test_clip`: gradient, a moving square and the index code."""
    phase = (seed * 37) % 256
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = ((x[None, :] + 3 * index + phase) % 256).astype(np.uint8)
    frame[..., 1] = ((y[:, None] + 2 * index) % 256).astype(np.uint8)
    frame[..., 2] = (128 + phase // 2) % 256
    side = max(2, min(width, height) // 4)
    cx = int((width - side) * (0.5 + 0.5 * np.sin(index / 10.0 + seed)))
    cy = int((height - side) * (0.5 + 0.5 * np.cos(index / 13.0 + seed)))
    frame[cy : cy + side, cx : cx + side] = (255, 255, 0)
    _draw_code(frame, index)
    return frame


def _code_cells(width: int, height: int) -> tuple[int, int]:
    return max(1, width // CODE_COLS), max(2, height // (4 * CODE_ROWS))


def _draw_code(frame: np.ndarray, value: int) -> None:
    h, w = frame.shape[:2]
    cw, ch = _code_cells(w, h)
    for bit in range(CODE_BITS):
        r, c = divmod(bit, CODE_COLS)
        frame[r * ch : (r + 1) * ch, c * cw : (c + 1) * cw] = 255 if (value >> bit) & 1 else 0


def read_frame_code(frame: np.ndarray) -> int:
    """Recover the frame index drawn by :func:`pattern_frame` from a decoded (H, W, 3) frame.

    Reliable for frames of at least 64x64 pixels; reads the centre of each block so compression
    at block edges does not matter.
    """
    h, w = frame.shape[:2]
    cw, ch = _code_cells(w, h)
    value = 0
    for bit in range(CODE_BITS):
        r, c = divmod(bit, CODE_COLS)
        cell = frame[r * ch + ch // 4 : (r + 1) * ch - ch // 4, c * cw + cw // 4 : (c + 1) * cw - cw // 4]
        if float(cell.mean()) > 127.5:
            value |= 1 << bit
    return value
