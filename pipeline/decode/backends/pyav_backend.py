"""PyAV backend: demux + decode forward, seeking to a keyframe only when that skips decoding work.

Frames are matched to the plan by their pts (from a packet scan), so the frames are exactly those a full
decode would give: a seek always lands on a keyframe at or before the wanted frame and decoding proceeds
forward from there. Decoder threading is set by ``thread_type`` (measured in benchmarks/decode.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from pipeline.cores import usable_cores
from pipeline.decode.demux import open_media, read_only
from pipeline.decode.rgb import thread_converter
from pipeline.decode.rgb_handover import ConversionBatch, RGBHandover
from pipeline.decode.scan import VideoScan, scan_video
from pipeline.decode.types import MediaError, Outcome

# One stream (``thread_count`` 0, the default) may use the whole machine: frame-threaded decoding (AUTO) and,
# on machines with cores to spare, RGB conversion on converter threads, so conversion overlaps decoding instead
# of following it. ``thread_count`` 1 decodes and converts on the calling thread: what the extraction runner
# asks for, as it already runs one decoder per core, where extra threads cost throughput (benchmarks/decode.py
# measures both, one stream alone and two streams at once).
DEFAULT_THREAD_TYPE = "AUTO"
# Converter threads need cores that FFmpeg's frame threads (one per core, plus one) leave free. On 2 cores,
# where none are, every frame ran at this ratio to the raw decode rate without / with one converter (min and
# median of 15 interleaved runs): 320x240 0.81/0.78 and 0.75/0.72, 480x360 0.87/0.84 and 0.81/0.81, 720p
# 0.77/0.83 and 0.81/0.78. 16 cores is the measured many-core point (below); 4 lies between.
MIN_CORES_FOR_CONVERTERS = 4
# Converters per stream: one per 640x360 of frame, at least 2, at most a quarter of the cores; the decoder
# gives up as many threads. 16 cores, every frame of each video, ratio to the raw decode rate (min / median of
# 21 interleaved runs): 320x240 and 480x360 with 0 converters 0.86/0.77 and 0.80/0.72, with 2: 0.87/0.83 and
# 0.87/0.88, with 8: 0.79/0.75 and 0.83/0.82; 720p with 8 converters and FFmpeg's 17 decoding threads
# 0.79/0.74, with 4 converters and 12 decoding threads 0.85/0.82.
PIXELS_PER_CONVERTER = 640 * 360
MIN_CONVERTERS = 2
# FFmpeg's automatic thread count for frame threading: one per core plus one, at most 16 (MAX_AUTO_THREADS).
MAX_AUTO_DECODER_THREADS = 16


def default_convert_workers(thread_count: int, pixels: int) -> int:
    """Converter threads for a stream of ``pixels``-sized frames: none when the caller set the decoder's
    thread count (it budgets the cores) or on a small machine."""
    cores = usable_cores()
    if thread_count != 0 or cores < MIN_CORES_FOR_CONVERTERS:
        return 0
    return min(cores // 4, max(MIN_CONVERTERS, -(-pixels // PIXELS_PER_CONVERTER)))


def decoder_threads(thread_count: int, convert_workers: int) -> int:
    """The decoder's thread count: the caller's, else FFmpeg's own (0), less the cores converters take."""
    if thread_count or not convert_workers:
        return thread_count
    return max(2, usable_cores() - convert_workers)


def frames_in_flight(thread_type: str, thread_count: int) -> int:
    """Frames a frame-threaded decoder works on at once: after a seek it must refill them before the next
    frame comes out, so a seek only pays when it skips more frames than this (16 cores, 1 fps: seeking
    at every keyframe ran 0.77-0.91x the speed of decoding straight through)."""
    if thread_type not in ("AUTO", "FRAME") or thread_count == 1:
        return 0
    return thread_count or min(usable_cores() + 1, MAX_AUTO_DECODER_THREADS)


class PyAVBackend:
    name = "pyav"

    def __init__(
        self,
        thread_type: str = DEFAULT_THREAD_TYPE,
        seek: bool = True,
        thread_count: int = 0,
        convert_workers: int | None = None,
    ):
        """``thread_count`` 0 lets one stream use the machine, 1 decodes on the calling thread; it only
        matters for AUTO/FRAME threading. ``convert_workers`` converts frames to RGB on that many threads
        (None: :func:`default_convert_workers` for the stream's frame size)."""
        self.thread_type = thread_type
        self.seek = seek
        self.thread_count = thread_count
        self.convert_workers = convert_workers

    def open(self, path: Path) -> PyAVReader:
        container = open_media(path)
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
        convert_workers: int | None = None,
    ):
        self.container = container
        self.path = path
        self.stream = container.streams.video[0]
        read_only(container, self.stream)
        pixels = self.stream.codec_context.width * self.stream.codec_context.height
        if convert_workers is None:
            convert_workers = default_convert_workers(thread_count, pixels)
        self._handover = RGBHandover(convert_workers, pixels) if convert_workers else None
        self.scan: VideoScan = scan_video(container, self.stream)
        threads = decoder_threads(thread_count, convert_workers)
        self.stream.thread_type = thread_type
        self.stream.codec_context.thread_count = threads
        self.allow_seek = seek
        self.seek_min_skip = frames_in_flight(thread_type, threads)
        self._index_of = {int(p): i for i, p in enumerate(self.scan.pts)}

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

    def write_rgb(self, frame: av.VideoFrame, out: np.ndarray) -> ConversionBatch | None:
        """Convert ``frame`` into ``out`` now (None), or hand it to the converter threads (the batch to wait on)."""
        if self._handover is None:
            thread_converter().write(frame, out)
            return None
        # swscale runs without the GIL, so the converter threads write while the caller decodes
        return self._handover.convert(frame, out)

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
        """Seek to the keyframe at or before ``target_pts`` if forced, or if that skips more frames after
        ``current`` than the decoder holds in flight.

        Returns the keyframe's pts (frames before it are ignored after the seek), or None when not seeking.
        """
        keys = self.scan.keyframe_pts
        if keys.size == 0:
            key = int(self.scan.pts[0])
        else:
            key = int(keys[max(int(np.searchsorted(keys, target_pts, side="right")) - 1, 0)])
        if force or (
            self.allow_seek and current is not None and self._skipped(current, key) > self.seek_min_skip
        ):
            self.container.seek(key, stream=self.stream, backward=True, any_frame=False)
            return key
        return None

    def _skipped(self, current_pts: int, key_pts: int) -> int:
        """Frames between the current one and the keyframe: the decoding a seek to it saves."""
        return self._index_of[key_pts] - self._index_of[current_pts] - 1

    def truncation(self) -> str | None:
        return self.scan.truncation

    def close(self) -> None:
        if self._handover is not None:
            self._handover.close()
        self.container.close()


class PendingRGB:
    """A decoded frame whose RGB conversion writes straight into the consumer's chunk row: on the calling
    thread, or handed to the converter threads when the reader has them."""

    def __init__(self, frame: av.VideoFrame, reader: PyAVReader):
        self.frame, self.reader = frame, reader
        self.shape = (frame.height, frame.width, 3)

    def write_into(self, out: np.ndarray) -> ConversionBatch | None:
        return self.reader.write_rgb(self.frame, out)
