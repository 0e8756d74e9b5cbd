"""Streaming window makers: decoded frames/audio -> model-sized raw windows with start/end seconds.

Nothing here holds a whole video: frames are consumed chunk by chunk and only the frames of windows still
being filled are kept (a C3D clip needs 16 frames, not the video; docs/decoding.md, docs/architecture.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from extractors.base import Window
from pipeline.decode.sampling import FRAME_RULES, output_ticks
from pipeline.decode.types import AudioClip, FrameChunk

_EPS = 1e-9


class PtsResampler:
    """Resample a native-rate frame stream to ``fps`` by presentation timestamps, streaming.

    ``frame_rule`` as in :func:`pipeline.decode.plan_samples`: ``pts`` takes for t_k = t0 + k/fps the frame
    displayed at t_k (last pts <= t_k, docs/decoding.md); ``ffmpeg`` takes for tick k the last frame whose
    rounded pts*fps is <= k (FFmpeg's ``fps`` filter). Used when one decode at the native rate must serve
    extractors with different frame rates or rules. The stream's end is not in the chunks: the last frame
    is taken to last as long as the interval before it.
    """

    def __init__(self, fps: float, frame_rule: str = "pts"):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if frame_rule not in FRAME_RULES:
            raise ValueError(f"unknown frame rule {frame_rule!r}; choose one of {', '.join(FRAME_RULES)}")
        self.fps = float(fps)
        self.ffmpeg = frame_rule == "ffmpeg"
        self._t0: float | None = None  # pts rule: the first target; ffmpeg rule: the first tick / fps
        self._k = 0
        self._last: tuple[np.ndarray, float, int] | None = None
        self._interval = 0.0

    def _target(self) -> float:
        assert self._t0 is not None
        return self._t0 + self._k / self.fps

    def _shown_until(self, pts: float) -> float:
        """Targets before this time still take the previous frame."""
        if self.ffmpeg:  # the frame's tick, as a time on the tick grid
            return float(output_ticks(np.array([pts]), self.fps)[0]) / self.fps
        return pts

    def push(self, chunk: FrameChunk) -> FrameChunk | None:
        rows: list[tuple[np.ndarray, float, int, float]] = []
        for frame, pts, src in zip(chunk.frames, chunk.pts_s, chunk.source_index, strict=True):
            pts = float(pts)
            if self._t0 is None:
                self._t0 = self._shown_until(pts)
            if self._last is not None:
                self._interval = max(pts - self._last[1], 0.0)
                while self._target() < self._shown_until(pts) - _EPS:
                    rows.append((*self._last, self._target()))
                    self._k += 1
            self._last = (frame, pts, int(src))
        return _chunk(rows)

    def flush(self) -> FrameChunk | None:
        """Emit the targets the last frame still covers (it is displayed for one frame interval)."""
        if self._last is None:
            return None
        rows = []
        end = self._shown_until(self._last[1] + (self._interval or 1.0 / self.fps))
        while self._target() < end - _EPS:
            rows.append((*self._last, self._target()))
            self._k += 1
        self._last = None
        return _chunk(rows)


def _chunk(rows: list[tuple[np.ndarray, float, int, float]]) -> FrameChunk | None:
    """Rows of (frame, pts of the frame shown, its source index, target time t_k) -> one chunk."""
    if not rows:
        return None
    frames, pts, sources, targets = zip(*rows, strict=True)
    return FrameChunk(
        frames=_stack(frames),
        pts_s=np.asarray(pts, dtype=np.float64),
        source_index=np.asarray(sources, dtype=np.int64),
        target_s=np.asarray(targets, dtype=np.float64),
    )


class FrameWindower:
    """Push frames (already at ``fps``) and get windows of ``window`` frames every ``hop`` frames.

    Row k covers frames [k*hop, k*hop + window); its times are t0 + index/fps on the sampling grid. The tail is
    kept: the last window is padded by repeating its last real frame and ``valid`` says how many are real
    (each extractor applies its own padding rule to the padded part, e.g. zeros in normalised space for the
    AV-GZSL C3D recipe, docs/extractors.md step 4). Windows stop once one reaches the last frame.
    """

    def __init__(self, window: int, hop: int, fps: float):
        if window < 1 or hop < 1:
            raise ValueError(f"window and hop must be >= 1 frame, got {window} and {hop}")
        self.window, self.hop, self.fps = int(window), int(hop), float(fps)
        self._reset()

    def _reset(self) -> None:
        self._frames: list[tuple[np.ndarray, int]] = []  # (chunk frames, row) of each frame still needed
        self._first_index = 0  # stream index of self._frames[0]
        self._next_start = 0  # stream index where the next window starts
        self._count = 0
        self._t0: float | None = None

    def push(self, chunk: FrameChunk) -> list[Window]:
        if len(chunk) == 0:
            return []
        if self._t0 is None:  # the sampling grid's origin (t0 of t_k = t0 + k/fps)
            times = chunk.target_s if chunk.target_s is not None else chunk.pts_s
            self._t0 = float(times[0])
        self._frames.extend((chunk.frames, row) for row in range(len(chunk)))
        self._count += len(chunk)
        out = []
        while self._next_start + self.window <= self._count:
            out.append(self._make(self._next_start, self.window))
            self._next_start += self.hop
            self._drop_before(self._next_start)
        return out

    def flush(self) -> list[Window]:
        """Emit the padded tail window (if frames remain that no window covered yet) and reset."""
        out = []
        covered = self._next_start - self.hop + self.window if self._next_start > 0 else 0
        if self._next_start < self._count and covered < self._count:
            out.append(self._make(self._next_start, self._count - self._next_start))
        self._reset()
        return out

    def _make(self, start: int, valid: int) -> Window:
        offset = start - self._first_index
        rows = self._frames[offset : offset + valid]
        chunk, first = rows[0]
        if valid == self.window and rows[-1][0] is chunk and rows[-1][1] == first + valid - 1:
            data = chunk[first : first + valid]  # consecutive rows of one chunk: a view, not a copy
        else:
            frames = [frames[row] for frames, row in rows]
            data = _stack(frames + [frames[-1]] * (self.window - valid))
        assert self._t0 is not None
        return Window(
            data=torch.as_tensor(data),
            start_s=self._t0 + start / self.fps,
            end_s=self._t0 + (start + valid) / self.fps,
            valid=valid,
        )

    def _drop_before(self, index: int) -> None:
        drop = min(index - self._first_index, len(self._frames))
        if drop > 0:
            del self._frames[:drop]
            self._first_index += drop


def _stack(frames: list) -> np.ndarray | torch.Tensor:
    """Stack frames as they came: numpy arrays, or tensors on the device that decoded them."""
    return torch.stack(frames) if isinstance(frames[0], torch.Tensor) else np.stack(frames)


def iter_frame_windows(windower: FrameWindower, chunks: Iterable[FrameChunk]) -> Iterator[Window]:
    for chunk in chunks:
        yield from windower.push(chunk)
    yield from windower.flush()


def audio_windows(
    clip: AudioClip,
    *,
    window_samples: int,
    hop_samples: int,
    pad_last: bool,
    min_samples: int,
    nominal_window_s: float,
) -> Iterator[Window]:
    """Slice mono audio into windows of ``window_samples`` every ``hop_samples``.

    Without ``pad_last`` only complete windows are made (VGGish: no padding, docs/extractors.md step 3/5);
    with it the last window is zero-padded and ``valid`` records the real samples (AST, docs/extractors.md).
    Fewer than ``min_samples`` samples give no window at all (the caller reports ``too_short``).
    """
    samples = np.asarray(clip.samples, dtype=np.float32).reshape(-1)
    n = samples.shape[0]
    if n < min_samples:
        return
    if pad_last:
        count = 1 + math.ceil(max(0, n - window_samples) / hop_samples)
    else:
        count = 1 + (n - window_samples) // hop_samples if n >= window_samples else 0
    rate = float(clip.sample_rate)
    for k in range(count):
        start = k * hop_samples
        piece = samples[start : start + window_samples]
        valid = piece.shape[0]
        if valid < window_samples:
            piece = np.pad(piece, (0, window_samples - valid))
        start_s = clip.start_s + start / rate
        yield Window(
            data=torch.from_numpy(np.ascontiguousarray(piece)),
            start_s=start_s,
            end_s=start_s + min(nominal_window_s, valid / rate),
            valid=valid,
        )
