"""Benchmark-mode resampling on the audio models' GPU.

With the audio models on a GPU, the decode child stops before resampling (float64 mono at the native rate: the
exact int16 channel mean) and resampy's computation runs here, as the float64 matrix product of
:class:`pipeline.decode.resample.PhaseTable` on the device; the CPU then only decodes. The same table and
index arithmetic as the CPU path, so the results agree to float64 rounding (tests/test_audio_fast_paths.py runs this
on CPU tensors against it). Rate pairs without a table are resampled on the CPU, by resampy itself.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from pipeline.decode.resample import PhaseTable, phase_table, resample_like_resampy
from pipeline.decode.types import AudioClip


def resample_clip(clip: AudioClip, sample_rate: int, device: torch.device) -> AudioClip:
    """``clip`` (float64, native rate) resampled like resampy to ``sample_rate``, as float32."""
    table = phase_table(clip.sample_rate, sample_rate) if clip.sample_rate != sample_rate else None
    if table is not None:
        samples = apply_on_device(table, torch.from_numpy(np.asarray(clip.samples, np.float64)).to(device))
        resampled = samples.cpu().numpy()
    elif clip.sample_rate != sample_rate:
        resampled = resample_like_resampy(clip.samples, clip.sample_rate, sample_rate)
    else:
        resampled = clip.samples
    return AudioClip(np.asarray(resampled, dtype=np.float32), sample_rate, clip.start_s)


def apply_on_device(table: PhaseTable, x: torch.Tensor) -> torch.Tensor:
    """:meth:`PhaseTable.apply` with tensor ops, on ``x``'s device (float64)."""
    n_out = table.checked_length(x.numel())
    weights, short_weights = _weights_on(table, x.device)
    padded = x.new_zeros(table.padded_length(x.numel(), n_out))
    padded[-table.first : -table.first + x.numel()] = x  # zeros outside the signal: resampy skips those taps
    windows = padded.unfold(0, weights.shape[1], table.period_in)[: table.periods(n_out)]
    y = (windows @ weights.T).reshape(-1)[:n_out]
    outputs, exact = table.short_outputs(n_out)
    if outputs.size:
        taps = short_weights.numel()
        padded = torch.cat([x.new_zeros(table.short_left), x, x.new_zeros(taps)])
        inputs = torch.as_tensor(exact[:, None] + np.arange(taps), device=x.device)
        y[torch.as_tensor(outputs, device=x.device)] = padded[inputs] @ short_weights
    return y


@functools.lru_cache(maxsize=16)
def _weights_on(table: PhaseTable, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The table's weights copied to ``device`` once per rate pair."""
    return torch.from_numpy(table.weights).to(device), torch.from_numpy(table.short_weights).to(device)
