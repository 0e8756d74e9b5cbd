"""PyAV backend: demux + decode forward, seeking to a keyframe only when that skips decoding work.

Frames are matched to the plan by their pts (from a packet scan), so the frames are exactly those a full
decode would give: a seek always lands on a keyframe at or before the wanted frame and decoding proceeds
forward from there. Decoder threading is set by ``thread_type`` (measured in benchmarks/decode.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from pipeline.decode.scan import VideoScan, scan_video
from pipeline.decode.types import MediaError, Outcome

# SLICE (PyAV's default) versus AUTO/FRAME (frame threading): on the loaded 2-core machine benchmarks/decode.py
# ran on, two full runs disagreed on the winner and the gaps were within run-to-run noise, in wall time and in
# CPU time. SLICE is kept because the pipeline runs one decoder per worker process in parallel, where frame
# threading's extra threads per decoder only add contention. For one stream on a many-core machine,
# PyAVBackend(thread_type="AUTO") lowers latency (REFERENCE §5.1: 20 -> 70 fps on a 3k x 2k video).
DEFAULT_THREAD_TYPE = "SLICE"
# Below this frame size a hand-off to a converting thread costs more than the conversion it moves (16-core
# machine: 320x240 and 480x360 ran 0.83x -> 0.58x and 0.77x -> 0.69x of the raw decode rate with 4 threads).
CONVERT_MIN_PIXELS = 640 * 360


class PyAVBackend:
    name = "pyav"

    def __init__(
        self,
        thread_type: str = DEFAULT_THREAD_TYPE,
        seek: bool = True,
        thread_count: int = 0,
        convert_workers: int = 0,
    ):
        """``thread_count`` 0 lets FFmpeg pick (one per core); it only matters for AUTO/FRAME threading.
        ``convert_workers`` > 0 converts frames of at least ``CONVERT_MIN_PIXELS`` to RGB on that many
        threads: for one stream on an idle many-core machine, where one thread converting every frame falls
        behind FFmpeg's decoding threads (benchmarks/decode.py on 16 cores: 720p from 0.36x to 0.71x of the
        raw decode rate); with one decoder per core it only adds contention."""
        self.thread_type = thread_type
        self.seek = seek
        self.thread_count = thread_count
        self.convert_workers = convert_workers

    def open(self, path: Path) -> PyAVReader:
        try:
            container = av.open(str(path))
        except (av.FFmpegError, OSError) as err:
            raise MediaError(Outcome.UNDECODABLE, f"cannot open as media: {err}", path) from None
        if not container.streams.video:
            container.close()
            raise MediaError(Outcome.NO_VIDEO, "no video stream", path)
        return PyAVReader(
            container,
            path,
            self.thread_type,
            self.seek,
            self.thread_count,
            self.convert_workers,
        )


class PyAVReader:
    def __init__(
        self,
        container: av.container.InputContainer,
        path: Path,
        thread_type: str,
        seek: bool,
        thread_count: int = 0,
        convert_workers: int = 0,
    ):
        self.container = container
        self.path = path
        self.stream = container.streams.video[0]
        large = self.stream.codec_context.width * self.stream.codec_context.height >= CONVERT_MIN_PIXELS
        self._pool = ThreadPoolExecutor(convert_workers, "avzsl-rgb") if convert_workers and large else None
        self.scan: VideoScan = scan_video(container, self.stream)
        self.stream.thread_type = thread_type
        self.stream.codec_context.thread_count = thread_count
        self.allow_seek = seek
        self._index_of = {int(p): i for i, p in enumerate(self.scan.pts)}
        # One reformatter (one cached swscale context) per converting thread rather than one per frame.
        self._reformatters = threading.local()

    def frame_times(self) -> tuple[np.ndarray, float]:
        return self.scan.pts_s, self.scan.end_s

    def read(self, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray | PendingRGB]]:
        if self._pool is None:
            for index, frame in self._frames(indices):
                yield index, self._rgb(frame)
            return
        for index, frame in self._frames(indices):
            yield index, PendingRGB(frame, self)

    def _frames(self, indices: np.ndarray) -> Iterator[tuple[int, av.VideoFrame]]:
        """The wanted frames, still in the decoder's pixel format, seeking forward where that saves work."""
        wanted = [int(i) for i in indices]
        if not wanted:
            return
        pts = self.scan.pts
        pos = 0  # next entry of ``wanted``
        floor = self._seek_to(int(pts[wanted[0]]), force=True) or 0
        while pos < len(wanted):
            restarted = False
            for frame in self._decode():
                stamp = frame.pts if frame.pts is not None else frame.dts
                index = self._index_of.get(stamp) if stamp is not None else None
                if index is None or stamp < floor:
                    continue  # a frame before the keyframe we seeked to, or one the scan never saw
                if index < wanted[pos]:
                    continue
                while pos < len(wanted) and wanted[pos] < index:
                    pos += 1  # the decoder never produced this frame; skip it rather than loop
                if pos < len(wanted) and wanted[pos] == index:
                    yield index, frame
                    pos += 1
                if pos >= len(wanted):
                    return
                if wanted[pos] == index + 1:
                    continue  # the next wanted frame is the next one decoded: no seek can help
                new_floor = self._seek_to(int(pts[wanted[pos]]), current=stamp)
                if new_floor is not None:
                    floor, restarted = new_floor, True
                    break
            if not restarted:
                return

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """(H, W, 3) uint8 view of the frame in RGB, valid until the caller drops it.

        swscale runs on the calling thread only (``threads=1``): splitting every frame across one thread per
        core cost 89 us of CPU per 320x240 frame against 49 us single-threaded (PyAV 18, 2-core machine), and
        was slower in wall time too on an idle 16-core machine. Same pixels either way.
        """
        reformatter = getattr(self._reformatters, "value", None)
        if reformatter is None:
            reformatter = self._reformatters.value = VideoReformatter()
        return reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Decode forward from the current position; on a decode error drain the frames already buffered."""
        for packet in self.container.demux(self.stream):
            try:
                frames = packet.decode()
            except av.FFmpegError as err:
                yield from self._drain()
                raise MediaError(Outcome.PARTIAL, f"decoding stopped: {err}", self.path) from None
            yield from frames

    def _drain(self) -> list[av.VideoFrame]:
        try:
            return list(self.stream.codec_context.decode(None))
        except av.FFmpegError:
            return []

    def _seek_to(self, target_pts: int, *, current: int | None = None, force: bool = False) -> int | None:
        """Seek to the keyframe at or before ``target_pts`` if forced or if it lies after ``current``.

        Returns the keyframe's pts (frames before it are ignored after the seek), or None when not seeking.
        """
        keys = self.scan.keyframe_pts
        if keys.size == 0:
            key = int(self.scan.pts[0])
        else:
            key = int(keys[max(int(np.searchsorted(keys, target_pts, side="right")) - 1, 0)])
        if force or (self.allow_seek and current is not None and key > current):
            self.container.seek(key, stream=self.stream, backward=True, any_frame=False)
            return key
        return None

    def truncation(self) -> str | None:
        return self.scan.truncation

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.container.close()


class PendingRGB:
    """A decoded frame whose RGB conversion and copy into the consumer's chunk run on the reader's pool."""

    def __init__(self, frame: av.VideoFrame, reader: PyAVReader):
        self.frame, self.reader = frame, reader
        self.shape = (frame.height, frame.width, 3)

    def write_async(self, out: np.ndarray) -> Future[None]:
        assert self.reader._pool is not None
        return self.reader._pool.submit(self._write, out)

    def _write(self, out: np.ndarray) -> None:
        out[...] = self.reader._rgb(self.frame)  # numpy copies without the GIL: the pool runs in parallel
