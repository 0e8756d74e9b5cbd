"""The interface every frame backend implements, so sampling and chunking are written once.

A backend opens a file and answers two questions: when is each frame shown (presentation order), and what
are the pixels of these frames. Everything else (which frames to take, chunking, partial results, typed
outcomes) lives in :mod:`pipeline.decode.frames` and is identical for all backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np


class PendingWrite(Protocol):
    """A conversion under way on another thread."""

    def wait(self) -> None:
        """Block until the frame is written; re-raise the conversion's error."""
        ...


class PendingFrame(Protocol):
    """A decoded frame not yet converted to RGB, so the conversion can write straight into the consumer's
    buffer instead of into a new array that is then copied."""

    shape: tuple[int, int, int]  # (H, W, 3) of the RGB frame it writes

    def write_into(self, out: np.ndarray) -> PendingWrite | None:
        """Write the RGB pixels into ``out``: now (returns None) or on other threads while the caller goes
        on decoding (returns what the consumer waits on before handing ``out`` on)."""
        ...


class FrameReader(Protocol):
    """An open video stream. Created in the process that uses it (decord readers must not cross a fork)."""

    def frame_times(self) -> tuple[np.ndarray, float]:
        """Presentation times of all frames in seconds, sorted, and when the last one stops being shown."""
        ...

    def read(self, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray | PendingFrame]]:
        """Yield ``(index, frame)`` for the sorted unique presentation-order ``indices``; frames (H, W, 3)
        uint8 RGB, or a :class:`PendingFrame` that writes them. Raises :class:`pipeline.decode.types.MediaError`
        (or the library's error) when decoding fails; frames yielded before that are valid."""
        ...

    def truncation(self) -> str | None:
        """Why the stream looks cut short (e.g. fewer frames than its header promises), or None."""
        ...

    def close(self) -> None: ...


class FrameBackend(Protocol):
    name: str

    def open(self, path: Path) -> FrameReader:
        """Open ``path``; raise :class:`pipeline.decode.types.MediaError` with a typed outcome on failure."""
        ...
