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

from pipeline.cores import usable_cores
from pipeline.decode.rgb import RGBConverter
from pipeline.decode.scan import VideoScan, scan_video
from pipeline.decode.types import MediaError, Outcome

# One stream (``thread_count`` 0, the default) may use the whole machine: frame-threaded decoding (AUTO, FFmpeg's
# thread count) and RGB conversion of large frames on converter threads, so conversion overlaps decoding
# instead of following it. ``thread_count`` 1 decodes and converts on the calling thread: what the extraction
# runner asks for, as it already runs one decoder per core, where frame threading's extra threads cost
# throughput (benchmarks/decode.py measures both, one stream alone and two streams at once).
DEFAULT_THREAD_TYPE = "AUTO"
# Below this frame size a hand-off to a converting thread costs more than the conversion it moves (16-core
# machine: 320x240 and 480x360 ran 0.83x -> 0.58x and 0.77x -> 0.69x of the raw decode rate with 4 threads).
CONVERT_MIN_PIXELS = 640 * 360
MAX_CONVERT_WORKERS = 8
# Converter threads need cores that FFmpeg's frame threads (one per core, plus one) leave free. On 2 cores,
# where none are, 720p ran at 0.78x of the raw decode rate without a converter and 0.70x with one (mean of
# five runs, each the best of 5-15 interleaved repeats; no converter won three). 16 cores is the other
# measured point (converters help there, see below); 4 lies between.
MIN_CORES_FOR_CONVERTERS = 4


def default_convert_workers(thread_count: int) -> int:
    """One converter per two cores (up to 8) when decoding is threaded on a machine with spare cores, none
    on a single thread or a small machine: on 16 cores one converting thread fell behind FFmpeg's decoding
    threads (720p at 0.36x of the raw decode rate; 0.71x with 8 converters)."""
    cores = usable_cores()
    if thread_count == 1 or cores < MIN_CORES_FOR_CONVERTERS:
        return 0
    return min(MAX_CONVERT_WORKERS, cores // 2)


class PyAVBackend:
    name = "pyav"

    def __init__(
        self,
        thread_type: str = DEFAULT_THREAD_TYPE,
        seek: bool = True,
        thread_count: int = 0,
        convert_workers: int | None = None,
    ):
        """``thread_count`` 0 lets FFmpeg pick (one per core), 1 decodes on the calling thread; it only
        matters for AUTO/FRAME threading. ``convert_workers`` converts frames of at least
        ``CONVERT_MIN_PIXELS`` to RGB on that many threads (None: :func:`default_convert_workers`)."""
        self.thread_type = thread_type
        self.seek = seek
        self.thread_count = thread_count
        self.convert_workers = (
            default_convert_workers(thread_count) if convert_workers is None else convert_workers
        )

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
        # One converter (cached swscale contexts) per converting thread rather than one per frame.
        self._converters = threading.local()

    def frame_times(self) -> tuple[np.ndarray, float]:
        return self.scan.pts_s, self.scan.end_s

    def read(self, indices: np.ndarray) -> Iterator[tuple[int, PendingRGB]]:
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

    def write_rgb(self, frame: av.VideoFrame, out: np.ndarray) -> None:
        converter = getattr(self._converters, "value", None)
        if converter is None:
            converter = self._converters.value = RGBConverter()
        converter.write(frame, out)

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
    """A decoded frame whose RGB conversion writes straight into the consumer's chunk row: on the calling
    thread, or on the reader's pool when it has one."""

    def __init__(self, frame: av.VideoFrame, reader: PyAVReader):
        self.frame, self.reader = frame, reader
        self.shape = (frame.height, frame.width, 3)

    def write_into(self, out: np.ndarray) -> Future[None] | None:
        if self.reader._pool is None:
            self.reader.write_rgb(self.frame, out)
            return None
        # swscale runs without the GIL, so the pool converts while the caller decodes
        return self.reader._pool.submit(self.reader.write_rgb, self.frame, out)
