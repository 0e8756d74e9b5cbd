"""AVCA's composite loss (REFERENCE §3.5) and DAAN's alignment variants (§3.4), all weights explicit.

The terms are the reference's, but same-shaped ones run stacked: the ten triplet losses as two passes and
the four cosine matrices of the alignment loss as one batched product, whose backward is one matmul.
Each term alone is a handful of small ops on (256, 64) or (256, 300) tensors, where the cost is per op.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from model.layers import Branch


def triplets(rows: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], margin: float) -> torch.Tensor:
    """nn.TripletMarginLoss(margin) (L2 distance, batch mean) of each (anchor, positive, negative) row of
    equal-shape (B, D) tensors, computed in one stacked pass: returns the k batch means, shape (k,)."""
    a, p, n = (torch.stack(list(t)) for t in zip(*rows, strict=True))
    return (margin + F.pairwise_distance(a, p) - F.pairwise_distance(a, n)).clamp_min(0).mean(-1)


def avca_loss(p: Branch, n: Branch, w: torch.Tensor, margin: float) -> dict[str, torch.Tensor]:
    """L = l_rec + l_ct + l_w + l_t + l_r; returns every term (for logging) and ``total``."""
    mse = F.mse_loss
    ct = triplets([(p.rho_w, p.rho_a, n.rho_a), (p.rho_w, p.rho_v, n.rho_v)], margin)
    ta, tv, tw = p.theta_a, p.theta_v, p.theta_w
    theta_rows = [  # l_w's four triplets, then l_t's four
        (tw, tv, n.theta_v),
        (tw, ta, n.theta_a),
        (ta, tw, n.theta_w),
        (tv, tw, n.theta_w),
        (ta, tw, n.theta_a),
        (tv, tw, n.theta_v),
        (tw, ta, n.theta_w),
        (tw, tv, n.theta_w),
    ]
    theta = triplets(theta_rows, margin)
    terms = {
        "l_rec": mse(p.rho_v, w) + mse(p.rho_a, w) + mse(p.rho_w, w),
        "l_ct": ct[0] + ct[1],
        "l_w": theta[0] + theta[1] + theta[2] + theta[3],
        "l_t": theta[4] + theta[5] + theta[6] + theta[7],
        "l_r": mse(p.rec_v, p.phi_v)
        + mse(p.rec_a, p.phi_a)
        + mse(p.theta_v, p.theta_w)
        + mse(p.theta_a, p.theta_w),
    }
    terms["total"] = sum(terms.values())
    return terms


class _Gram(torch.autograd.Function):
    """x @ x^T over the last two dims. Its gradient is (G + G^T) x: one matmul, where autograd would
    differentiate the two operands separately (two matmuls and an add)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x @ x.mT

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return (grad + grad.mT) @ x


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    """Cosine similarities between the rows of (..., B, D): (..., B, B)."""
    return _Gram.apply(F.normalize(x, dim=-1))


def alignment_loss(kind: str, p: Branch, n: Branch, temperature: float) -> torch.Tensor:
    """``hyper_mse``: MSE between audio and visual batch similarity matrices (Hyper-AVZSL, Euclidean), for
    positives and negatives; ``infonce``: symmetric InfoNCE between theta_a and theta_v of the positives."""
    if kind == "hyper_mse":
        sims = cosine_matrix(torch.stack([p.phi_v, n.phi_v, p.phi_a, n.phi_a]))
        per_side = F.mse_loss(sims[:2], sims[2:], reduction="none").mean((1, 2))
        return per_side[0] + per_side[1]
    if kind == "infonce":
        logits = F.normalize(p.theta_a, dim=-1) @ F.normalize(p.theta_v, dim=-1).T / temperature
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    raise ValueError(f"alignment loss {kind!r}: expected hyper_mse, infonce or off")


def unimodal_triplet(p: Branch, n: Branch, modality: str, margin: float) -> torch.Tensor:
    """TL(theta_w, theta_m, theta_m-) + TL(theta_m, theta_w, theta_w-): CSGM's convergence signal."""
    t, tn = (p.theta_a, n.theta_a) if modality == "audio" else (p.theta_v, n.theta_v)
    return triplets([(p.theta_w, t, tn), (t, p.theta_w, n.theta_w)], margin).sum()
