"""Stream uint8 RGB frames sampled by presentation timestamp, in bounded chunks, from any backend.

Peak memory is a few chunks (pooled and reused across videos) plus the decoder's own buffers, whatever
the video's length. Failures are typed: before the first frame they raise :class:`MediaError`; after it,
decoding stops, every frame decoded so far is delivered and the report says ``partial`` (or, without a
report, a ``MediaError(PARTIAL)`` is raised after the last chunk so the damage is never silent).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from pipeline.decode.backends import FrameBackend, FrameReader, get_backend
from pipeline.decode.backends.base import PendingFrame, PendingWrite
from pipeline.decode.buffers import BufferPool
from pipeline.decode.demux import check_file
from pipeline.decode.sampling import FRAME_RULES, SamplePlan, plan_samples
from pipeline.decode.types import DecodeReport, FrameChunk, MediaError, Outcome

log = logging.getLogger(__name__)

# PyAV is the default: in benchmarks/decode.py it decoded every frame to RGB faster than decord on all three
# clips (about 3x at 720p), and at 1 fps its keyframe seeks kept it level with decord's accurate seeks; it
# also bundles a current FFmpeg, cannot hang like decord#373 and so needs no child process to be safe.
DEFAULT_BACKEND = "pyav"

# Chunk buffers are shared by every decode in the process, so a worker decoding video after video refills the
# same pages instead of faulting in fresh ones per chunk (measured on a loaded 2-core machine: filling a fresh
# 32-frame 720p chunk took 17-75 ms, refilling a used one 5 ms). Three: the chunk being filled, the one the
# consumer holds, and a video's shorter last chunk.
_CHUNK_POOL = BufferPool(keep=3)

# Errors a backend's native library may raise mid-stream; anything else is a bug and propagates.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (MediaError, av.FFmpegError, RuntimeError, OSError)


def iter_frames(
    path: str | Path,
    *,
    fps: float | None = None,
    chunk_frames: int = 32,
    backend: str | FrameBackend = DEFAULT_BACKEND,
    decoder_threads: int = 0,
    start_s: float = 0.0,
    end_s: float | None = None,
    frame_rule: str = "pts",
    report: DecodeReport | None = None,
    _allow_test_backend: bool = False,
) -> Iterator[FrameChunk]:
    """Yield chunks of at most ``chunk_frames`` frames sampled at ``fps`` (every frame if None).

    ``frame_rule`` picks the frame of each target: ``pts`` the one displayed at t_k = t0 + k/fps, ``ffmpeg``
    the one FFmpeg's ``fps`` filter emits (:mod:`pipeline.decode.sampling`, docs/benchmark-mode.md).
    ``start_s``/``end_s`` bound the targets to [start_s, end_s) in stream seconds. ``report`` (optional)
    receives the outcome, error text and the number of frames delivered. ``backend`` is a name from
    :data:`pipeline.decode.BACKENDS`, configured by ``decoder_threads`` as in
    :func:`pipeline.decode.backends.get_backend` (0: this one stream may use every core; 1: one thread, for
    callers that run one decoder per core), or a configured backend object (e.g. ``PyAVBackend(seek=False)``).
    """
    check_args(fps, chunk_frames, start_s, end_s, frame_rule)
    path = Path(path)
    check_file(path)
    if isinstance(backend, str):
        backend = get_backend(backend, threads=decoder_threads, allow_test=_allow_test_backend)
    reader = backend.open(path)
    try:
        times, stream_end = reader.frame_times()
        if times.size == 0:
            raise MediaError(Outcome.UNDECODABLE, "the video stream has no frames", path)
        plan = plan_samples(times, stream_end, fps=fps, start_s=start_s, end_s=end_s, frame_rule=frame_rule)
        yield from _deliver(reader, path, times, plan, chunk_frames, report)
    finally:
        reader.close()


def _deliver(
    reader: FrameReader,
    path: Path,
    times: np.ndarray,
    plan: SamplePlan,
    chunk_frames: int,
    report: DecodeReport | None,
) -> Iterator[FrameChunk]:
    chunk = _ChunkBuilder(chunk_frames, len(plan))
    # Plain lists: indexing numpy arrays per frame costs more than the bookkeeping itself.
    wanted, targets, pts_s = plan.indices.tolist(), plan.target_s.tolist(), times.tolist()
    pos = 0  # next row of the plan
    failure: str | None = None
    try:
        for index, frame in reader.read(np.unique(plan.indices)):
            while pos < len(wanted) and wanted[pos] <= index:
                if wanted[pos] == index:
                    chunk.add(frame, pts_s[index], index, targets[pos])
                    if report is not None:
                        report.frames_decoded += 1
                    if chunk.full:
                        yield chunk.take()
                pos += 1
    except _DECODE_ERRORS as err:
        failure = err.reason if isinstance(err, MediaError) else f"decoding stopped: {err}"
    delivered = chunk.delivered
    if len(chunk):
        yield chunk.take()
    if failure is None and delivered < len(plan):
        failure = f"the decoder produced {delivered} of {len(plan)} planned frames"
    if failure is not None and delivered == 0:
        raise MediaError(Outcome.UNDECODABLE, f"no frame could be decoded: {failure}", path)
    if failure is None and reader.truncation() is not None:
        failure = f"truncated: {reader.truncation()}"
    if failure is None:
        return
    if report is None:
        raise MediaError(Outcome.PARTIAL, f"{failure} (after {delivered} frames)", path)
    report.outcome, report.error = Outcome.PARTIAL, failure
    log.debug("%s: partial decode after %d frames: %s", path, delivered, failure)


class _ChunkBuilder:
    """Fills one preallocated chunk at a time so no per-video list of frames ever builds up."""

    def __init__(self, chunk_frames: int, planned: int):
        self.chunk_frames = chunk_frames
        self.remaining = planned
        self.delivered = 0
        self._rows: list[tuple[float, int, float]] = []
        self._frames: np.ndarray | None = None
        self._writes: list[PendingWrite] = []

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def full(self) -> bool:
        return self._frames is not None and len(self._rows) == self._frames.shape[0]

    def add(self, frame: np.ndarray | PendingFrame, pts_s: float, index: int, target_s: float) -> None:
        if self._frames is None:
            size = max(1, min(self.chunk_frames, self.remaining))
            self._frames = _CHUNK_POOL.get((size, *frame.shape))
        row = self._frames[len(self._rows)]
        if isinstance(frame, np.ndarray):
            row[...] = frame
        elif (pending := frame.write_into(row)) is not None:  # written on the backend's threads meanwhile
            self._writes.append(pending)
        self._rows.append((pts_s, index, target_s))
        self.remaining -= 1
        self.delivered += 1

    def take(self) -> FrameChunk:
        for write in self._writes:  # every row must be written before the chunk leaves
            write.wait()
        self._writes = []
        n = len(self._rows)
        frames = self._frames[:n] if self._frames is not None else np.zeros((0, 0, 0, 3), np.uint8)
        pts, index, target = (np.asarray(col) for col in zip(*self._rows, strict=True))
        self._rows, self._frames = [], None
        return FrameChunk(
            frames=frames,
            pts_s=pts.astype(np.float64),
            source_index=index.astype(np.int64),
            target_s=target.astype(np.float64),
        )


def check_args(
    fps: float | None, chunk_frames: int, start_s: float, end_s: float | None, frame_rule: str = "pts"
) -> None:
    if frame_rule not in FRAME_RULES:
        raise ValueError(f"unknown frame rule {frame_rule!r}; choose one of {', '.join(FRAME_RULES)}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive or None (every frame), got {fps}")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    if start_s < 0 or (end_s is not None and end_s <= start_s):
        raise ValueError(f"need 0 <= start_s < end_s, got start_s={start_s}, end_s={end_s}")
