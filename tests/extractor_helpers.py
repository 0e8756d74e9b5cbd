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


def kaiming_(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-initialise every conv/linear layer He-normal (fan_in, ReLU gain) with zero biases, from ``seed``.

    PyTorch's default initialisation shrinks activations layer after layer: with it C3D's fc7 barely depends
    on its input (cosine 0.99998 between different clips), so a test could not see a preprocessing change.
    These weights keep the signal's scale through the ReLU stack, so the output follows the input.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Conv3d | torch.nn.Linear):
                fan_in = module.weight[0].numel()
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
                )
                module.bias.zero_()
    return net


def relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||a||: how far an output moved."""
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(a))
