"""decord backend: ``get_batch`` with indices planned from the frames' presentation timestamps.

decord's frame index is the presentation order, like the packet scan's. decord only reports timestamps as
float32 seconds (off by up to 2e-4 s after an hour), so when its frame count agrees with PyAV's packet scan
the scan's exact timestamps plan the sampling, which makes both backends pick the same frames; otherwise
decord's own timestamps are used.

decord can hang forever in native code holding the GIL (decord#373) and misbehaves across forks
(decord#294), so in a pipeline it runs inside :func:`pipeline.decode.guarded.open_guarded`'s child process,
which creates the reader there. Its audio is not used (stereo corruption, 17-sample lag: docs/decoding.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.decode.types import MediaError, Outcome

# Frames fetched per get_batch call: bounds decord's batch buffer independently of the caller's chunk size.
BATCH_FRAMES = 16


class DecordBackend:
    name = "decord"

    def __init__(self, num_threads: int = 0):
        self.num_threads = num_threads

    def open(self, path: Path) -> DecordReader:
        import decord

        try:
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=self.num_threads)
        except (decord.DECORDError, RuntimeError) as err:
            outcome = Outcome.NO_VIDEO if "video stream" in str(err).lower() else Outcome.UNDECODABLE
            raise MediaError(outcome, f"decord cannot open: {_first_line(err)}", path) from None
        return DecordReader(reader, path)


def _exact_times(path: Path, frame_count: int) -> tuple[np.ndarray, float] | None:
    """PyAV's packet-scan times when the scan finds the same frames as decord, else None."""
    import av

    from pipeline.decode.scan import scan_video

    try:
        with av.open(str(path)) as container:
            scan = scan_video(container, container.streams.video[0])
    except (av.FFmpegError, OSError, IndexError):
        return None
    if scan.pts.size != frame_count:
        return None
    return scan.pts_s, scan.end_s


class DecordReader:
    def __init__(self, reader, path: Path):
        self.reader = reader
        self.path = path

    def frame_times(self) -> tuple[np.ndarray, float]:
        n = len(self.reader)
        if n == 0:
            return np.zeros(0, np.float64), 0.0
        exact = _exact_times(self.path, n)
        if exact is not None:
            return exact
        stamps = np.asarray(self.reader.get_frame_timestamp(np.arange(n)), dtype=np.float64)
        return stamps[:, 0], float(stamps[-1, 1])

    def read(self, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        import decord

        for begin in range(0, len(indices), BATCH_FRAMES):
            batch = [int(i) for i in indices[begin : begin + BATCH_FRAMES]]
            try:
                frames = self.reader.get_batch(batch).asnumpy()
            except (decord.DECORDError, RuntimeError) as err:
                raise MediaError(Outcome.PARTIAL, f"decord stopped: {_first_line(err)}", self.path) from None
            yield from zip(batch, frames, strict=True)

    def truncation(self) -> str | None:
        return None  # decord's frame list comes from the header; truncation shows up as a read error

    def close(self) -> None:
        del self.reader


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
