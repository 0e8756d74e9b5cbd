"""Antialiased resizing of uint8 images, with the same integers on every device.

The definition is PyTorch's uint8 antialiased bilinear/bicubic resize, itself Pillow-SIMD's algorithm: per
axis, each output pixel is a weighted sum of the input pixels under the filter (support widened by the
downscale factor), with weights normalised and rounded to 16-bit fixed point; the sum is rounded to uint8;
the horizontal pass runs first, then the vertical one on its uint8 result. It differs from Pillow's own
resize (22-bit weights) by one uint8 level on 0.2-0.5 % of the values of real frames (about 1 % on noise).

:func:`resize_reference` is that definition written out with tensor ops, on any device; on the CPU,
:func:`resize_u8` runs PyTorch's kernel instead (0.09 CPU-ms for a 320x240 frame to 128x171, against 0.8 for a
float antialiased resize), and tests/test_resize.py checks that both give the same integers. CUDA has no uint8
antialiased kernel (PyTorch's works on floats, whose rounding differs), so there the reference runs, and it
computes only the rows and columns inside ``crop``. :func:`resize_u8` is the one place that chooses.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

MODES = ("bilinear", "bicubic")
_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}  # filter half-width at scale 1
_MAX_PRECISION = 22


def resize_u8(
    images: torch.Tensor,
    size: tuple[int, int],
    mode: str = "bilinear",
    crop: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, h, w) uint8 resized to ``size``, then cut to ``crop`` = (top, left,
    height, width) of the resized image if given."""
    _check(images, size, mode)
    if images.device.type != "cpu":
        return resize_reference(images, size, mode, crop)
    out = F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=True)
    if crop is None:
        return out
    top, left, height, width = crop
    return out[:, :, top : top + height, left : left + width]


def resize_reference(
    images: torch.Tensor,
    size: tuple[int, int],
    mode: str = "bilinear",
    crop: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """The definition: horizontal pass, uint8, vertical pass, uint8 (only the pixels of ``crop``)."""
    _check(images, size, mode)
    top, left, height, width = crop if crop is not None else (0, 0, *size)
    x = images
    if size[1] != images.shape[-1]:
        x = _resample_last_axis(x, _Weights.of(images.shape[-1], size[1], mode).rows(left, width))
    elif crop is not None:
        x = x[..., left : left + width]
    if size[0] != images.shape[-2]:
        x = _resample_last_axis(
            x.transpose(-1, -2), _Weights.of(images.shape[-2], size[0], mode).rows(top, height)
        )
        x = x.transpose(-1, -2)
    elif crop is not None:
        x = x[..., top : top + height, :]
    return x.contiguous()


def _resample_last_axis(x: torch.Tensor, weights: _Weights) -> torch.Tensor:
    """out[..., j] = clamp((sum_k x[..., first[j] + k] * w[j, k] + 2^(p-1)) >> p, 0, 255)."""
    index = weights.first[:, None] + torch.arange(weights.taps.shape[1])
    index = index.clamp_(max=x.shape[-1] - 1).to(x.device)  # taps past the edge have weight 0
    taps = x[..., index].to(torch.int32)  # (..., out, taps)
    total = (taps * weights.taps.to(x.device)).sum(-1) + (1 << (weights.precision - 1))
    return (total >> weights.precision).clamp_(0, 255).to(torch.uint8)


class _Weights:
    """Per output pixel: the first input pixel and the fixed-point weights of the pixels from there."""

    def __init__(self, first: torch.Tensor, taps: torch.Tensor, precision: int):
        self.first, self.taps, self.precision = first, taps, precision

    @staticmethod
    @functools.cache
    def of(in_size: int, out_size: int, mode: str) -> _Weights:
        scale = in_size / out_size
        support = _SUPPORT[mode] * scale if scale >= 1.0 else _SUPPORT[mode]
        inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
        width = math.ceil(support) * 2 + 1
        first, rows = [], []
        for i in range(out_size):
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            count = min(max(min(int(center + support + 0.5), in_size) - lo, 0), width)
            w = [_FILTERS[mode]((j + lo - center + 0.5) * inv_scale) for j in range(count)]
            total = sum(w)
            first.append(lo)
            rows.append([v / total if total != 0.0 else v for v in w] + [0.0] * (width - count))
        largest = max(max(row) for row in rows)
        precision = 0  # the most fraction bits that keep the largest weight within int16
        while precision < _MAX_PRECISION and int(0.5 + largest * (1 << (precision + 1))) < (1 << 15):
            precision += 1
        taps = [[_round_half_away(v * (1 << precision)) for v in row] for row in rows]
        return _Weights(torch.tensor(first), torch.tensor(taps, dtype=torch.int32), precision)

    def rows(self, start: int, count: int) -> _Weights:
        return _Weights(self.first[start : start + count], self.taps[start : start + count], self.precision)


def _round_half_away(v: float) -> int:
    return int(v - 0.5) if v < 0 else int(v + 0.5)


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return 0.0


_FILTERS = {"bilinear": _bilinear, "bicubic": _bicubic}


def _check(images: torch.Tensor, size: tuple[int, int], mode: str) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
    if mode not in MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(MODES)}")
    if min(size) < 1:
        raise ValueError(f"output size must be positive, got {size}")
