"""The losses are the reference's: AVCA's terms as the public code writes them (one nn.TripletMarginLoss /
nn.MSELoss call each, so a swapped or missing triplet is caught), values and gradients in float64. The
stacked fast versions are compared with these in test_model_fast.py."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.layers import Branch
from model.losses import alignment_loss, avca_loss, unimodal_triplet

DIMS = {"enc": 7, "phi": 7, "theta": 4, "rho": 5, "rec": 7}


def random_sides(batch: int = 6, seed: int = 0) -> tuple[Branch, Branch, list[torch.Tensor]]:
    """Positives and negatives as views of stacked leaves, as the fast pair forward returns them
    (reconstructions for the positives only)."""
    gen = torch.Generator().manual_seed(seed)
    leaves = {
        f.name: torch.randn(
            batch if f.name.startswith("rec_") else 2 * batch,
            DIMS[f.name.split("_")[0]],
            generator=gen,
            dtype=torch.float64,
        ).requires_grad_()
        for f in fields(Branch)
    }
    p, n = Branch(**leaves).split(2)
    return p, n, list(leaves.values())


def reference_avca_terms(p: Branch, n: Branch, w: torch.Tensor, margin: float) -> dict[str, torch.Tensor]:
    """AVCA's loss as the public code writes it: one nn.TripletMarginLoss / nn.MSELoss call per term."""
    tl, mse = nn.TripletMarginLoss(margin=margin), nn.MSELoss()
    return {
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


def assert_same_gradients(ours: torch.Tensor, ref: torch.Tensor, leaves: list[torch.Tensor]) -> None:
    got = torch.autograd.grad(ours, leaves, retain_graph=True, allow_unused=True, materialize_grads=True)
    want = torch.autograd.grad(ref, leaves, retain_graph=True, allow_unused=True, materialize_grads=True)
    assert any(g.abs().sum() > 0 for g in want)
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("margin", [1.0, 3.0])  # 3: most triplets active, 1: a mix of active and clamped
def test_avca_loss_equals_one_call_per_term(margin):
    p, n, leaves = random_sides()
    w = torch.randn(6, DIMS["rho"], dtype=torch.float64)
    ours, ref = avca_loss(p, n, w, margin), reference_avca_terms(p, n, w, margin)
    for name, value in ref.items():
        torch.testing.assert_close(ours[name], value, msg=name)
    torch.testing.assert_close(ours["total"], sum(ref.values()))
    for name in ref:  # every term's own gradient, so a swapped pair inside one term is caught too
        assert_same_gradients(ours[name], ref[name], leaves)


@pytest.mark.parametrize("modality", ["audio", "visual"])
def test_unimodal_triplet_equals_its_two_reference_terms(modality):
    p, n, _ = random_sides(seed=1)
    tl = nn.TripletMarginLoss(margin=1.0)
    t, tn = (p.theta_a, n.theta_a) if modality == "audio" else (p.theta_v, n.theta_v)
    ref = tl(p.theta_w, t, tn) + tl(t, p.theta_w, n.theta_w)
    torch.testing.assert_close(unimodal_triplet(p, n, modality, 1.0), ref)


def test_hyper_mse_alignment_equals_mse_of_cosine_similarity_matrices():
    p, n, leaves = random_sides(seed=2)

    def cos(x: torch.Tensor) -> torch.Tensor:
        x = x / x.norm(dim=1, keepdim=True)
        return x @ x.T

    ref = F.mse_loss(cos(p.phi_v), cos(p.phi_a)) + F.mse_loss(cos(n.phi_v), cos(n.phi_a))
    ours = alignment_loss("hyper_mse", p, n, 0.07)
    torch.testing.assert_close(ours, ref)
    assert_same_gradients(ours, ref, leaves)
