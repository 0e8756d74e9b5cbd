"""Recycle chunk buffers the consumer has let go of, so streaming does not page-fault fresh memory per chunk.

A 32-frame 720p chunk is 88 MB: above glibc's mmap threshold, so every new chunk is fresh pages and the
first write to each page faults (profiled at 720p: about half the cost of the RGB conversion). A buffer is only
reused once nothing outside the pool refers to it (a consumer holding a chunk, or any view of it, keeps
its buffer out of reuse), so a chunk a caller keeps is never overwritten.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

# References to a pooled buffer when nobody else holds it: the pool's list, the loop variable and
# getrefcount's own argument.
_UNUSED_REFS = 3


class BufferPool:
    def __init__(self, keep: int = 2):
        self.keep = keep
        self._buffers: list[np.ndarray] = []
        self._lock = threading.Lock()  # one pool may serve several reader threads

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised uint8 array of ``shape``: a recycled one if free, else a new one."""
        with self._lock:
            for i in range(len(self._buffers)):
                buf = self._buffers[i]
                if buf.shape == shape and sys.getrefcount(buf) <= _UNUSED_REFS:
                    self._buffers.append(self._buffers.pop(i))  # most recently used last: evicted last
                    return buf
            buf = np.empty(shape, dtype=np.uint8)
            if len(self._buffers) >= self.keep:
                self._buffers.pop(0)
            self._buffers.append(buf)
            return buf
