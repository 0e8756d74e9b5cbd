"""RGB conversion moved off the decoding thread: frames go to a process-wide pool of threads in batches.

A decoding thread that converts its own frames stops feeding the decoder meanwhile. Handing frames over one
at a time costs the decoding thread nearly what converting them would (a submit, a wake-up and the GIL
traded per frame: 2-core machine, 480x360, one decoding thread, raw decode 0.88x with per-frame hand-over
against 0.98x in batches of 4). So frames travel in batches of about ``BATCH_PIXELS``, and the threads,
with their swscale contexts already verified (see :mod:`pipeline.decode.rgb`), live as long as the process
instead of being started for each video.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import av
import numpy as np

from pipeline.decode.rgb import thread_converter

# Pixels per hand-over: four 320x240 frames, one frame from 480x360 up (16 cores, 320x240, 2 converters:
# batches of 4 and 8 frames ran alike, single frames at 0.77x of the raw decode rate against 0.89x).
BATCH_PIXELS = 4 * 320 * 240

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def shared_pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of ``workers`` converter threads, started on first use and kept for later videos."""
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, f"avzsl-rgb{workers}")
        return pool


def _forget_pools_after_fork() -> None:
    """A forked child has none of its parent's threads, so a parent's pool would take work and never do it."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools_after_fork)


def _convert_all(items: list[tuple[av.VideoFrame, np.ndarray]]) -> None:
    converter = thread_converter()
    for frame, out in items:
        converter.write(frame, out)
    items.clear()  # let the decoder's frame buffers go as soon as they are written


class ConversionBatch:
    """Frames converted together by one pool thread. ``wait`` sends it if it is still filling."""

    def __init__(self, pool: ThreadPoolExecutor):
        self._pool = pool
        self.items: list[tuple[av.VideoFrame, np.ndarray]] = []
        self.future: Future[None] | None = None

    def send(self) -> None:
        if self.future is None:
            self.future = self._pool.submit(_convert_all, self.items)

    def wait(self) -> None:
        """Block until every frame of the batch is written; re-raises a conversion error."""
        self.send()
        self.future.result()


class RGBHandover:
    """One video's hand-over to the shared pool: fills a batch, sends it when it holds ``batch_frames``.

    Used from the decoding thread only. The consumer waits for a row through the batch it was put in.
    """

    def __init__(self, workers: int, frame_pixels: int, batch_pixels: int = BATCH_PIXELS):
        self._pool = shared_pool(workers)
        self.batch_frames = max(1, batch_pixels // max(1, frame_pixels))
        self._filling: ConversionBatch | None = None
        self._sent: deque[ConversionBatch] = deque()

    def convert(self, frame: av.VideoFrame, out: np.ndarray) -> ConversionBatch:
        """Queue ``frame`` to be written as RGB into ``out``; the batch to wait on before reading ``out``."""
        batch = self._filling
        if batch is None or batch.future is not None:  # none yet, or a consumer's wait sent it early
            batch = self._filling = ConversionBatch(self._pool)
        batch.items.append((frame, out))
        if len(batch.items) >= self.batch_frames:
            self._send(batch)
        return batch

    def _send(self, batch: ConversionBatch) -> None:
        batch.send()
        self._filling = None
        while self._sent and self._sent[0].future.done():
            self._sent.popleft()
        self._sent.append(batch)

    def close(self) -> None:
        """Drop the batch still filling (nobody waits for it) and let the sent ones finish: no pool thread
        writes into a chunk after its video is closed."""
        self._filling = None
        while self._sent:
            with contextlib.suppress(Exception):  # an error in frames nobody will read
                self._sent.popleft().wait()
