"""AVCA's composite loss (docs/avca.md) and DAAN's alignment variants (docs/daan.md), all weights explicit.

One call per term, as the AVCA code writes them; ``model/fast.py`` runs the same-shaped terms stacked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.layers import Branch


def triplet(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    """nn.TripletMarginLoss(margin): mean over the batch of max(0, margin + |a - p| - |a - n|)."""
    return F.triplet_margin_loss(anchor, positive, negative, margin=margin)


def avca_loss(p: Branch, n: Branch, w: torch.Tensor, margin: float) -> dict[str, torch.Tensor]:
    """L = l_rec + l_ct + l_w + l_t + l_r; returns every term (for logging) and ``total``."""
    mse = F.mse_loss

    def tl(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return triplet(anchor, positive, negative, margin)

    terms = {
        "l_rec": mse(p.rho_v, w) + mse(p.rho_a, w) + mse(p.rho_w, w),
        "l_ct": tl(p.rho_w, p.rho_a, n.rho_a) + tl(p.rho_w, p.rho_v, n.rho_v),
        "l_w": tl(p.theta_w, p.theta_v, n.theta_v)
        + tl(p.theta_w, p.theta_a, n.theta_a)
        + tl(p.theta_a, p.theta_w, n.theta_w)
        + tl(p.theta_v, p.theta_w, n.theta_w),
        "l_t": tl(p.theta_a, p.theta_w, n.theta_a)
        + tl(p.theta_v, p.theta_w, n.theta_v)
        + tl(p.theta_w, p.theta_a, n.theta_w)
        + tl(p.theta_w, p.theta_v, n.theta_w),
        "l_r": mse(p.rec_v, p.phi_v)
        + mse(p.rec_a, p.phi_a)
        + mse(p.theta_v, p.theta_w)
        + mse(p.theta_a, p.theta_w),
    }
    terms["total"] = sum(terms.values())
    return terms


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    """Cosine similarities between the rows of (B, D): (B, B)."""
    x = F.normalize(x, dim=-1)
    return x @ x.mT


def alignment_loss(kind: str, p: Branch, n: Branch, temperature: float) -> torch.Tensor:
    """``hyper_mse``: MSE between audio and visual batch similarity matrices (Hyper-AVZSL, Euclidean), for
    positives and negatives; ``infonce``: symmetric InfoNCE between theta_a and theta_v of the positives."""
    if kind == "hyper_mse":
        return F.mse_loss(cosine_matrix(p.phi_v), cosine_matrix(p.phi_a)) + F.mse_loss(
            cosine_matrix(n.phi_v), cosine_matrix(n.phi_a)
        )
    if kind == "infonce":
        logits = F.normalize(p.theta_a, dim=-1) @ F.normalize(p.theta_v, dim=-1).T / temperature
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    raise ValueError(f"alignment loss {kind!r}: expected hyper_mse, infonce or off")


def unimodal_triplet(p: Branch, n: Branch, modality: str, margin: float) -> torch.Tensor:
    """TL(theta_w, theta_m, theta_m-) + TL(theta_m, theta_w, theta_w-): CSGM's convergence signal."""
    t, tn = (p.theta_a, n.theta_a) if modality == "audio" else (p.theta_v, n.theta_v)
    return triplet(p.theta_w, t, tn, margin) + triplet(t, p.theta_w, n.theta_w, margin)
