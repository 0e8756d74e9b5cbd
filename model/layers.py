"""Building blocks shared by AVCA and DAAN, named as in the AVCA code (REFERENCE §3.5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from model.config import AVCAConfig


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU keep-mask comes from numpy's PCG64 instead of torch's generator.

    torch's CPU generator (mt19937, one draw per element) made the masks about 10 % of a DAAN training step.
    Here each raw 64-bit PCG64 output is split into four 16-bit uniforms (bulk, no per-element bounding:
    about 6x faster than torch, 2.5x faster than numpy's ``integers``). Each call seeds a fresh PCG64 from
    one draw of torch's generator, so ``torch.manual_seed`` and the checkpointed torch RNG state still
    decide every mask. An element is kept when its 16-bit uniform is >= round(p * 2^16): keep probability
    within 2^-17 of 1 - p, and the output is scaled by the exact inverse of it. CUDA keeps torch's kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.is_cuda:
            return super().forward(x)
        threshold = round(self.p * _UNIFORM_LEVELS)
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        uniforms = _uniform_uint16(x.numel(), seed).reshape(tuple(x.shape))
        # via uint8: torch turns a bool tensor times a float into float ~15x slower than uint8 to float
        keep = torch.from_numpy(uniforms >= threshold).view(torch.uint8)
        return x * keep.to(x.dtype).mul_(_UNIFORM_LEVELS / (_UNIFORM_LEVELS - threshold))


_UNIFORM_LEVELS = 1 << 16


def _uniform_uint16(count: int, seed: int) -> np.ndarray:
    """``count`` independent uniform 16-bit integers: the four 16-bit words of PCG64's raw outputs."""
    raw = np.random.PCG64(seed).random_raw(-(-count // 4))
    return raw.view(np.uint16)[:count]


class EmbeddingNet(nn.Sequential):
    """AVCA's MLP block: Linear-BN-ReLU-Dropout (twice when ``hidden``).

    Only the second BN of a hidden-layer net takes the configured momentum; the others keep 0.1 (§2.6).
    ``sizes`` stacks independent batches along dim 0 (a step's positives, then its negatives): every
    layer runs once on all rows, but each batch gets its own BatchNorm statistics, in order, exactly as
    if the net had been called once per batch. One GEMM of 2B rows instead of two of B is cheaper on a
    CPU, mostly in the weight gradient. ``order`` is the sequence of the per-batch BatchNorm calls (their
    running statistics depend on it) when it differs from the row order.
    """

    def __init__(
        self, d_in: int, d_out: int, dropout: float, hidden: int | None = None, momentum: float = 0.1
    ):
        if hidden:
            layers = [
                nn.Linear(d_in, hidden),
                nn.BatchNorm1d(hidden),
                nn.ReLU(),
                Dropout(dropout),
                nn.Linear(hidden, d_out),
                nn.BatchNorm1d(d_out, momentum=momentum),
                nn.ReLU(),
                Dropout(dropout),
            ]
        else:
            layers = [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU(), Dropout(dropout)]
        super().__init__(*layers)

    def forward(
        self, x: torch.Tensor, sizes: Sequence[int] | None = None, order: Sequence[int] | None = None
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, nn.BatchNorm1d) and sizes is not None and len(sizes) > 1:
                parts = x.split(list(sizes))
                normed = {i: layer(parts[i]) for i in (order or range(len(parts)))}
                x = torch.cat([normed[i] for i in range(len(parts))])
            else:
                x = layer(x)
        return x


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__(
            nn.Linear(dim, hidden),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(hidden, dim),
            Dropout(dropout),
        )


class Heads(nn.Module):
    """Projections to the 64-d joint space, shared decoder to the class-embedding space, reconstructors."""

    def __init__(self, cfg: AVCAConfig, emb_dim: int):
        super().__init__()
        d, out = cfg.token_dim, cfg.dim_out
        self.A_proj = EmbeddingNet(d, out, cfg.decoder_dropout, cfg.projector_hidden, cfg.bn_momentum)
        self.V_proj = EmbeddingNet(d, out, cfg.decoder_dropout, cfg.projector_hidden, cfg.bn_momentum)
        self.W_proj = EmbeddingNet(emb_dim, out, cfg.additional_dropout)
        self.D = EmbeddingNet(out, emb_dim, cfg.additional_dropout)
        self.A_rec = EmbeddingNet(out, d, cfg.additional_dropout)
        self.V_rec = EmbeddingNet(out, d, cfg.additional_dropout)


@dataclass
class Branch:
    """Outputs for one side of a pair (positive or negative), or for both stacked on dim 0.

    ``enc_a``/``enc_v`` are the raw encoder outputs ((B, D) or (B, T, D)): gradient modulation acts there.
    ``phi_*`` are their (pooled) vectors used by the reconstruction and alignment losses.
    """

    enc_a: torch.Tensor
    enc_v: torch.Tensor
    phi_a: torch.Tensor
    phi_v: torch.Tensor
    theta_a: torch.Tensor
    theta_v: torch.Tensor
    theta_w: torch.Tensor
    rho_a: torch.Tensor
    rho_v: torch.Tensor
    rho_w: torch.Tensor
    rec_a: torch.Tensor
    rec_v: torch.Tensor

    def split(self, groups: int) -> list[Branch]:
        """The stacked batches of a ``branch(..., groups=groups)`` call, as views (gradients flow back)."""
        parts = [getattr(self, f.name).chunk(groups) for f in fields(self)]
        return [Branch(*(p[g] for p in parts)) for g in range(groups)]


def heads_forward(heads: Heads, enc_a, enc_v, phi_a, phi_v, z_a, z_v, w, groups: int = 1) -> Branch:
    sizes = [len(w) // groups] * groups
    theta_a, theta_v, theta_w = heads.A_proj(z_a, sizes), heads.V_proj(z_v, sizes), heads.W_proj(w, sizes)
    rho_a, rho_v, rho_w = shared_decoder(heads.D, (theta_a, theta_v, theta_w), groups)
    return Branch(
        enc_a,
        enc_v,
        phi_a,
        phi_v,
        theta_a,
        theta_v,
        theta_w,
        rho_a,
        rho_v,
        rho_w,
        heads.A_rec(theta_a, sizes),
        heads.V_rec(theta_v, sizes),
    )


def shared_decoder(
    decoder: EmbeddingNet, inputs: Sequence[torch.Tensor], groups: int
) -> tuple[torch.Tensor, ...]:
    """The decoder D on every input in one call, its BatchNorm fed batch by batch in the reference's
    order (group 0's inputs in turn, then group 1's, ...), so running statistics match call for call.
    Rows stay input-major, so each input's output is a view of the result."""
    sizes = [len(t) // groups for t in inputs for _ in range(groups)]
    order = [i * groups + g for g in range(groups) for i in range(len(inputs))]
    return decoder(torch.cat(list(inputs)), sizes, order).split([len(t) for t in inputs])


FEW_TOKENS = 3  # up to this many queries and keys, broadcasting beats batched GEMM (measured on CPU)


def attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q @ k^T over (..., N, d). With a few tokens (averaged features: 2), torch's batched GEMM is all
    per-matrix overhead (B x heads products of 2 x d x 2); a broadcast multiply-sum is ~4x faster, fwd+bwd."""
    if q.shape[-2] <= FEW_TOKENS and k.shape[-2] <= FEW_TOKENS:
        return (q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1)
    return q @ k.transpose(-1, -2)


def attention_mix(attn: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """attn @ v for (..., N, M) weights and (..., M, d) values, broadcast for a few tokens as above."""
    if attn.shape[-2] <= FEW_TOKENS and attn.shape[-1] <= FEW_TOKENS:
        return (attn.unsqueeze(-1) * v.unsqueeze(-3)).sum(-2)
    return attn @ v


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of (B, T, D) using a (B, T) validity mask; vectors pass through."""
    if x.dim() == 2:
        return x
    if mask is None:
        return x.mean(1)
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def encode_steps(
    net: EmbeddingNet, x: torch.Tensor, mask: torch.Tensor | None, groups: int = 1
) -> torch.Tensor:
    """Apply a per-vector net to every valid time step of (B, T, D) (BN sees valid steps only).

    ``groups`` equal batches stacked on dim 0 keep their own BN statistics (see ``EmbeddingNet``).
    """
    if x.dim() == 2:
        return net(x, [len(x) // groups] * groups)
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    rows = net(x[mask], mask.reshape(groups, -1).sum(1).tolist())
    out = rows.new_zeros(*x.shape[:2], rows.shape[-1])
    out[mask] = rows
    return out
