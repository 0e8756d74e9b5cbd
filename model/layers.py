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


class Fused(NamedTuple):
    """A batch after the encoders and the cross-modal fusion: what the heads take.

    ``enc_a``/``enc_v`` are the raw encoder outputs ((B, D) or (B, T, D)): gradient modulation acts there.
    ``phi_*`` are their (pooled) vectors, ``z_*`` the fused vectors the projections take.
    """

    enc_a: torch.Tensor
    enc_v: torch.Tensor
    phi_a: torch.Tensor
    phi_v: torch.Tensor
    z_a: torch.Tensor
    z_v: torch.Tensor


@dataclass
class Branch:
    """Outputs for one side of a pair (the positives or the negatives).

    ``enc_*`` and ``phi_*`` as in :class:`Fused`; ``phi_*`` are used by the reconstruction and alignment
    losses. The reconstructions ``rec_*`` exist for the positives only: no loss term uses a negative's.
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
    rec_a: torch.Tensor | None
    rec_v: torch.Tensor | None

    def split(self, groups: int) -> list[Branch]:
        """The batches stacked on dim 0 of every field, as views (gradients flow back); the reconstructions
        (of the first batch, the positives, only) go with the first."""
        stacked = [f.name for f in fields(self) if not f.name.startswith("rec_")]
        parts = {name: getattr(self, name).chunk(groups) for name in stacked}
        return [
            Branch(
                **{name: chunks[g] for name, chunks in parts.items()},
                rec_a=self.rec_a if g == 0 else None,
                rec_v=self.rec_v if g == 0 else None,
            )
            for g in range(groups)
        ]


class Pairs(NamedTuple):
    """A training step's forward: the positives, their negatives, and the branches as the model computed
    them (``positive`` and ``negative``, or both stacked in one): CSGM hooks those encoder outputs."""

    positive: Branch
    negative: Branch
    computed: list[Branch]


def forward_pairs(model: nn.Module, a, v, w, a_mask=None, v_mask=None) -> Pairs:
    """The positives (first half of the rows) and their negatives (second half): the model's ``fuse`` once
    per side, positives first, then the heads on both sides together, so that every net sees its batches in
    the AVCA code's order (``Heads.forward``). BatchNorm normalises each batch with its own statistics."""
    half = len(w) // 2
    sides = [slice(None, half), slice(half, None)]
    p, n = (model.fuse(*(t if t is None else t[rows] for t in (a, v, a_mask, v_mask))) for rows in sides)
    positive, negative = model.heads(p, n, w[:half], w[half:])
    return Pairs(positive, negative, [positive, negative])


class Heads(nn.Module):
    """Projections to the 64-d joint space, the shared decoder D to the class-embedding space, and the
    reconstructors back to the encoders' space:

        theta_m = m_proj(z_m)      theta_w = W_proj(w)
        rho_m   = D(theta_m)       rho_w   = D(theta_w)       rec_m = m_rec(theta_m)   (m = a, v)

    In train mode every call of a net moves its BatchNorm running statistics, which evaluation reads, so
    ``forward`` calls the nets on the same batches in the same order as the AVCA code (docs/avca.md).
    """

    def __init__(self, cfg: AVCAConfig, emb_dim: int):
        super().__init__()
        d, out = cfg.token_dim, cfg.dim_out
        self.rec_projection_pass = cfg.rec_projection_pass
        self.A_proj = EmbeddingNet(d, out, cfg.decoder_dropout, cfg.projector_hidden, cfg.bn_momentum)
        self.V_proj = EmbeddingNet(d, out, cfg.decoder_dropout, cfg.projector_hidden, cfg.bn_momentum)
        self.W_proj = EmbeddingNet(emb_dim, out, cfg.additional_dropout)
        self.D = EmbeddingNet(out, emb_dim, cfg.additional_dropout)
        self.A_rec = EmbeddingNet(out, d, cfg.additional_dropout)
        self.V_rec = EmbeddingNet(out, d, cfg.additional_dropout)

    def forward(self, p: Fused, n: Fused, w: torch.Tensor, w_neg: torch.Tensor) -> tuple[Branch, Branch]:
        """The positives ``p`` (class embeddings ``w``) and their negatives ``n`` (``w_neg``)."""
        theta_w, theta_w_neg = self.W_proj(w), self.W_proj(w_neg)
        rho_w, rho_w_neg = self.D(theta_w), self.D(theta_w_neg)
        theta_v, theta_v_neg = self.V_proj(p.z_v), self.V_proj(n.z_v)
        theta_a, theta_a_neg = self.A_proj(p.z_a), self.A_proj(n.z_a)
        rec_v, rec_a = self.V_rec(theta_v), self.A_rec(theta_a)
        if self.rec_projection_pass:  # the AVCA code's A_proj(rec_a), V_proj(rec_v): outputs unused
            with torch.no_grad():
                self.A_proj(rec_a)
                self.V_proj(rec_v)
        rho_a, rho_a_neg = self.D(theta_a), self.D(theta_a_neg)
        rho_v, rho_v_neg = self.D(theta_v), self.D(theta_v_neg)
        positive = Branch(
            p.enc_a, p.enc_v, p.phi_a, p.phi_v, theta_a, theta_v, theta_w, rho_a, rho_v, rho_w, rec_a, rec_v
        )
        negative = Branch(
            n.enc_a,
            n.enc_v,
            n.phi_a,
            n.phi_v,
            theta_a_neg,
            theta_v_neg,
            theta_w_neg,
            rho_a_neg,
            rho_v_neg,
            rho_w_neg,
            None,
            None,
        )
        return positive, negative


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
