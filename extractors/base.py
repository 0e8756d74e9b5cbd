"""The extractor interface: raw windows in, one embedding row per window out.

Split into ``windows_*`` (cheap CPU slicing of decoded media into model-sized windows, streaming),
``prepare`` (preprocessing batched on the model's device), ``forward`` (the network under
``torch.inference_mode`` and optional autocast) and ``finalize`` (post-processing into the stored array,
e.g. VGGish PCA + uint8). The runner calls ``prepare`` as windows arrive (so raw frames are not held
while a batch fills up) and ``forward`` once a batch of prepared inputs from several videos is full.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from extractors.spec import ExtractorSpec
from pipeline.decode.types import AudioClip, FrameChunk

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class Window:
    """One model input before preprocessing: ``data`` is a CPU tensor (or, for frames decoded on the GPU, a
    tensor on that device), ``valid`` counts real frames/samples.

    Visual windows hold uint8 frames (T, H, W, 3) RGB; audio windows hold float32 samples (N,). Entries past
    ``valid`` are padding, which each extractor treats the way its spec says (zeros, edge repeat, masking).
    """

    data: torch.Tensor
    start_s: float
    end_s: float
    valid: int


class Extractor(torch.nn.Module):
    """Base class: holds the spec, the device and the precision policy; subclasses define the model."""

    spec: ExtractorSpec

    def __init__(self, spec: ExtractorSpec, device: str | torch.device = "cpu", precision: str = "auto"):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
        self.spec = spec
        self.device = torch.device(device)
        self.precision = precision

    # --- windowing (CPU, streaming) -------------------------------------------------------------
    def windows_from_frames(self, chunks: Iterable[FrameChunk]) -> Iterator[Window]:
        raise TypeError(f"{self.spec.name} is an {self.spec.modality} extractor; it takes audio, not frames")

    def windows_from_audio(self, clip: AudioClip) -> Iterator[Window]:
        raise TypeError(f"{self.spec.name} is a {self.spec.modality} extractor; it takes frames, not audio")

    def frame_windower(self):
        """A push-style window maker (``push(chunk)``/``flush()``) so several extractors share one decode."""
        raise TypeError(f"{self.spec.name} is an {self.spec.modality} extractor; it takes audio, not frames")

    # --- model path ---------------------------------------------------------------------------
    def prepare(self, windows: Sequence[Window]) -> torch.Tensor:
        """Stack raw windows, move them to the device and preprocess them there, as one batch."""
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Prepared inputs (B, ...) on the device -> embeddings (B, D) float32."""
        raise NotImplementedError

    @torch.inference_mode()
    def embed(self, windows: Sequence[Window]) -> torch.Tensor:
        """Raw windows -> embeddings (B, D) float32 on the device (prepare + forward, grouped by shape)."""
        prepared = [self.prepare(group) for group in group_by_shape(windows)]
        order = [i for group in group_indices_by_shape(windows) for i in group]
        out = self.run_model(torch.cat(prepared))
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return out[inverse.to(out.device)]

    @torch.inference_mode()
    def run_model(self, inputs: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            out = self.forward(inputs)
        return out.float()

    def finalize(self, features: np.ndarray) -> np.ndarray:
        """Float rows (T, D) -> the stored array; identity unless the spec says otherwise."""
        return np.ascontiguousarray(features, dtype=np.float32)

    # --- device policy ------------------------------------------------------------------------
    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 (or fp16 where bf16 is unsupported) on CUDA for ``auto``; CPU stays float32 unless asked."""
        if self.precision == "fp32":
            return None
        if self.precision == "bf16":
            return torch.bfloat16
        if self.precision == "fp16":
            return torch.float16
        if self.device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None

    def autocast(self):
        dtype = self.autocast_dtype()
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Copy a CPU batch to the device: pinned + non-blocking on CUDA."""
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def batch_to_device(self, parts: Sequence[torch.Tensor], stack: bool = True) -> torch.Tensor:
        """``torch.stack`` (or ``torch.cat``) of CPU tensors, on the device, with one host copy: on CUDA the
        parts are gathered straight into pinned memory instead of stacked and then pinned."""
        join = torch.stack if stack else torch.cat
        if self.device.type != "cuda" or parts[0].device.type == "cuda":  # decoded on the GPU: already there
            return join(list(parts)).to(self.device)
        first = parts[0]
        shape = (len(parts), *first.shape) if stack else (sum(len(p) for p in parts), *first.shape[1:])
        staging = torch.empty(shape, dtype=first.dtype, pin_memory=True)
        join(list(parts), out=staging)
        return staging.to(self.device, non_blocking=True)

    def describe(self) -> str:
        return self.spec.label()


def group_indices_by_shape(windows: Sequence[Window]) -> list[list[int]]:
    """Indices of windows grouped by raw shape (frames of different videos differ in size)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, window in enumerate(windows):
        groups.setdefault(tuple(window.data.shape), []).append(i)
    return list(groups.values())


def group_by_shape(windows: Sequence[Window]) -> list[list[Window]]:
    return [[windows[i] for i in group] for group in group_indices_by_shape(windows)]
