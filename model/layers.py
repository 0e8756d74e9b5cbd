"""Building blocks shared by AVCA and DAAN, named as in the AVCA code (docs/avca.md).

Plain definitions, one batch at a time; ``model/fast.py`` holds faster CPU versions of the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import nn

from model.config import AVCAConfig


class EmbeddingNet(nn.Sequential):
    """AVCA's MLP block: Linear-BN-ReLU-Dropout (twice when ``hidden``).

    Only the second BN of a hidden-layer net takes the configured momentum; the others keep 0.1 (as AVCA).
    """

    def __init__(
        self, d_in: int, d_out: int, dropout: float, hidden: int | None = None, momentum: float = 0.1
    ):
        if hidden:
            layers = [
                nn.Linear(d_in, hidden),
                nn.BatchNorm1d(hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, d_out),
                nn.BatchNorm1d(d_out, momentum=momentum),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
        else:
            layers = [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU(), nn.Dropout(dropout)]
        super().__init__(*layers)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )


@dataclass
class Branch:
    """Outputs for one side of a pair (the positives or the negatives).

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
        """The batches stacked on dim 0 of every field, as views (gradients flow back)."""
        parts = [getattr(self, f.name).chunk(groups) for f in fields(self)]
        return [Branch(*(p[g] for p in parts)) for g in range(groups)]


class Pairs(NamedTuple):
    """A training step's forward: the positives, their negatives, and the branches as the model computed
    them (``positive`` and ``negative``, or both stacked in one): CSGM hooks those encoder outputs."""

    positive: Branch
    negative: Branch
    computed: list[Branch]


def forward_pairs(model: nn.Module, a, v, w, a_mask=None, v_mask=None) -> Pairs:
    """The positives (first half of the rows) and their negatives (second half), one ``branch`` call each,
    positives first, as the reference code does (BatchNorm normalises each with its own statistics)."""
    half = len(w) // 2
    positive, negative = (
        model.branch(*(t if t is None else t[rows] for t in (a, v, w, a_mask, v_mask)))
        for rows in (slice(None, half), slice(half, None))
    )
    return Pairs(positive, negative, [positive, negative])


class Heads(nn.Module):
    """Projections to the 64-d joint space, the shared decoder D to the class-embedding space, and the
    reconstructors back to the encoders' space:

        theta_m = m_proj(z_m)      theta_w = W_proj(w)
        rho_m   = D(theta_m)       rho_w   = D(theta_w)       rec_m = m_rec(theta_m)   (m = a, v)
    """

    def __init__(self, cfg: AVCAConfig, emb_dim: int):
        super().__init__()
        d, out = cfg.token_dim, cfg.dim_out
        self.A_proj = EmbeddingNet(d, out, cfg.decoder_dropout, cfg.projector_hidden, cfg.bn_momentum)
        self.V_proj = EmbeddingNet(d, out, cfg.decoder_dropout, cfg.projector_hidden, cfg.bn_momentum)
        self.W_proj = EmbeddingNet(emb_dim, out, cfg.additional_dropout)
        self.D = EmbeddingNet(out, emb_dim, cfg.additional_dropout)
        self.A_rec = EmbeddingNet(out, d, cfg.additional_dropout)
        self.V_rec = EmbeddingNet(out, d, cfg.additional_dropout)

    def forward(self, enc_a, enc_v, phi_a, phi_v, z_a, z_v, w) -> Branch:
        theta_a, theta_v, theta_w = self.A_proj(z_a), self.V_proj(z_v), self.W_proj(w)
        rho_a, rho_v, rho_w = self.D(theta_a), self.D(theta_v), self.D(theta_w)
        rec_a, rec_v = self.A_rec(theta_a), self.V_rec(theta_v)
        return Branch(
            enc_a, enc_v, phi_a, phi_v, theta_a, theta_v, theta_w, rho_a, rho_v, rho_w, rec_a, rec_v
        )


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of (B, T, D) using a (B, T) validity mask (None: every step is valid); vectors pass."""
    if x.dim() == 2:
        return x
    if mask is None:
        return x.mean(1)
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def encode_steps(net: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A per-vector net on (B, D) vectors, or on every valid step of (B, T, D) sequences (BatchNorm sees the
    valid steps only, padded steps come out 0). ``mask`` (B, T): True = valid; None: every step is valid."""
    if x.dim() == 2:
        return net(x)
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    rows = net(x[mask])
    out = rows.new_zeros(*x.shape[:2], rows.shape[-1])
    out[mask] = rows
    return out
