"""Test-only backend that decodes a few frames with PyAV and then never returns, like decord#373.

It lets tests prove that :func:`pipeline.decode.guarded.open_guarded` cuts off a hung decode without a
real hanging file. :func:`pipeline.decode.backends.get_backend` only hands it out for the guarded child.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.decode.backends.base import PendingFrame
from pipeline.decode.backends.pyav_backend import PyAVBackend, PyAVReader

HANG_AFTER_FRAMES = 8


class HangBackend:
    name = "hang-test"

    def open(self, path: Path) -> HangReader:
        return HangReader(PyAVBackend().open(path))


class HangReader:
    def __init__(self, inner: PyAVReader):
        self.inner = inner

    def frame_times(self) -> tuple[np.ndarray, float]:
        return self.inner.frame_times()

    def read(self, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray | PendingFrame]]:
        for count, item in enumerate(self.inner.read(indices)):
            if count == HANG_AFTER_FRAMES:
                while True:  # the hang: only killing the process ends it
                    time.sleep(3600)
            yield item

    def truncation(self) -> str | None:
        return self.inner.truncation()

    def close(self) -> None:
        self.inner.close()
