"""Shared helpers for the extractor tests: decoding the samples once, tiny checkpoints with full shapes."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from pipeline.decode import iter_frames, read_audio


@lru_cache(maxsize=4)
def sample_audio(path: str) -> np.ndarray:
    """Mono 16 kHz float32 samples of a sample video (cached: several tests use them)."""
    return read_audio(path, sample_rate=16000).samples


def sample_frames(path: str | Path, fps: float | None):
    return list(iter_frames(path, fps=fps, chunk_frames=64))


def save_zero_checkpoint(table: dict[str, tuple[int, ...]], path: Path, edit=None) -> Path:
    """A full-shape state_dict stored in a few bytes: each tensor is one zero expanded to its shape.

    ``torch.save`` writes the one-element storage, ``load_state_dict`` copies it into the real parameters,
    so strict key/shape loading is exercised at real size without writing hundreds of megabytes.
    """
    state = {key: torch.zeros(1).expand(*shape) for key, shape in table.items()}
    if edit is not None:
        state = edit(state)
    torch.save(state, path)
    return path
