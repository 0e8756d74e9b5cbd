"""CSGM: contrastive sample-level gradient modulation, reconstructed (docs/daan.md, "CSGM").

For each pair i and modality m: an optimisation score s^m_i (how well theta^m_i picks its own class
embedding over the negative's, or over all training classes), a convergence rate r^m (relative drop of
the EMA of the unimodal triplet loss), a contribution c^m_i combining them, and the ratio
rho_i = c^v_i / c^a_i. The dominant modality's encoder gradient for that sample is scaled by
k = 1 - tanh(alpha * rho) (visual, rho > 1) or 1 - tanh(alpha / rho) (audio, rho <= 1); the other keeps 1.
Scaling is a backward hook on the raw encoder outputs (identity forward), so for encoder parameters
dL/dW = sum_i k_i (dL/dphi_i)(dphi_i/dW): exactly per-sample modulation, nothing else is touched.
``mode=batch`` is OGM-GE: one score per modality (batch mean), one k for the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from model.config import CSGMConfig
from model.layers import Branch


@dataclass
class Modulation:
    """Detached per-sample quantities of one step (shape (B,) each; rates are scalars)."""

    s_a: torch.Tensor
    s_v: torch.Tensor
    r_a: float
    r_v: float
    k_a: torch.Tensor
    k_v: torch.Tensor


@dataclass
class ConvergenceState:
    ema_a: float | None = None
    ema_v: float | None = None


class CSGM:
    def __init__(self, cfg: CSGMConfig):
        self.cfg = cfg
        self.state = ConvergenceState()

    def active(self, epoch: int) -> bool:
        return self.cfg.mode != "off" and self.cfg.start_epoch <= epoch < self.cfg.end_epoch

    def convergence(self, loss_a: float, loss_v: float) -> tuple[float, float]:
        """Update the loss EMAs and return r^m = (prev - new) / prev (0 on the first step)."""
        rates = []
        for name, value in (("ema_a", loss_a), ("ema_v", loss_v)):
            prev = getattr(self.state, name)
            new = value if prev is None else self.cfg.ema * prev + (1 - self.cfg.ema) * value
            setattr(self.state, name, new)
            rates.append(0.0 if prev is None or prev <= 0 else (prev - new) / prev)
        return rates[0], rates[1]

    def scores(
        self,
        p: Branch,
        n: Branch,
        class_theta: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """s^m_i, detached. ``pair``: softmax over {own class, negative's class} of -L2 distances;
        ``all_classes``: softmax over ``class_theta`` rows, picking column ``target``."""
        out = []
        for theta in (p.theta_a.detach(), p.theta_v.detach()):
            if self.cfg.score == "pair":
                d_pos = (theta - p.theta_w.detach()).norm(dim=1)
                d_neg = (theta - n.theta_w.detach()).norm(dim=1)
                out.append(torch.sigmoid(d_neg - d_pos))
            else:
                if class_theta is None or target is None:
                    raise ValueError("CSGM score=all_classes needs the training class embeddings")
                probs = torch.softmax(-torch.cdist(theta, class_theta.detach()), dim=1)
                out.append(probs.gather(1, target.view(-1, 1)).squeeze(1))
        return out[0], out[1]

    def coefficients(self, s_a: torch.Tensor, s_v: torch.Tensor, r_a: float, r_v: float) -> Modulation:
        cfg = self.cfg
        sa, sv = (s_a.mean().expand_as(s_a), s_v.mean().expand_as(s_v)) if cfg.mode == "batch" else (s_a, s_v)
        if cfg.terms == "optimisation":
            c_a, c_v = sa, sv
        elif cfg.terms == "convergence":
            c_a, c_v = torch.full_like(sa, 1 + cfg.gamma * r_a), torch.full_like(sv, 1 + cfg.gamma * r_v)
        elif cfg.combine == "product":
            c_a, c_v = sa * (1 + cfg.gamma * r_a), sv * (1 + cfg.gamma * r_v)
        else:
            za, zv = math.exp(r_a), math.exp(r_v)
            c_a = cfg.eta * sa + (1 - cfg.eta) * za / (za + zv)
            c_v = cfg.eta * sv + (1 - cfg.eta) * zv / (za + zv)
        rho = c_v.clamp_min(1e-8) / c_a.clamp_min(1e-8)
        ones = torch.ones_like(rho)
        k_v = torch.where(rho > 1, 1 - torch.tanh(cfg.alpha * rho), ones)
        k_a = torch.where(rho > 1, ones, 1 - torch.tanh(cfg.alpha / rho))
        return Modulation(s_a, s_v, r_a, r_v, k_a, k_v)

    @staticmethod
    def apply(computed: Sequence[Branch], mod: Modulation) -> None:
        """Register backward hooks scaling each sample's gradient into the encoders, on the branches as the
        model computed them (``Pairs.computed``): pair i's k scales both its samples, the positive (row i
        of the positives) and its negative (row i of the negatives, or row B + i of both stacked)."""
        for branch in computed:
            for t, k in ((branch.enc_a, mod.k_a), (branch.enc_v, mod.k_v)):
                if t.requires_grad:
                    t.register_hook(_scale_hook(k.detach().repeat(len(t) // len(k))))

    @staticmethod
    def add_gradient_noise(encoder: nn.Module, generator: torch.Generator | None = None) -> None:
        """OGM-GE's generalisation enhancement: grad += N(0, std(grad))."""
        for param in encoder.parameters():
            if param.grad is not None and param.grad.numel() > 1:
                noise = torch.randn(param.grad.shape, generator=generator, device="cpu").to(param.grad.device)
                param.grad.add_(noise * param.grad.std())

    def state_dict(self) -> dict[str, float | None]:
        return asdict(self.state)

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.state = ConvergenceState(**state)


def _scale_hook(k: torch.Tensor):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad * k.view(-1, *([1] * (grad.dim() - 1))).to(grad.dtype)

    return hook
