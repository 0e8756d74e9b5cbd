"""AVCA's training step as the public reference code runs it, re-written for tests (ExplainableML/AVCA-GZSL
at 2711aeb: ``src/model_improvements.py`` class ``AVCA``, ``src/train.py`` ``train_step``).

What matters here is the exact sequence of BatchNorm calls in train mode, since every call moves the running
statistics that evaluation uses:

- ``forward``: each net called once per side (positives, then negatives), in the reference's order, plus two
  calls whose outputs no loss uses: ``A_proj(A_rec(theta_a))`` and ``V_proj(V_rec(theta_v))``. The
  reconstructors and the reconstruction projections see the positives only.
- ``train_step``: Adam over every parameter but ``pos_emb1D`` (never handed to the optimiser), then
  ``get_embeddings`` on the positives with the model still in train mode (``train_step`` calls it after
  ``optimize_params`` for every batch, unconditionally).

``side_passes=False`` leaves out those BatchNorm-only calls (the unused projections and the post-step
``get_embeddings``): what a step computes for the loss alone.
"""

from __future__ import annotations

import re

import torch
from torch import nn


class MLP(nn.Module):
    """The reference's ``EmbeddingNet``: Linear-BN-ReLU-Dropout, twice with a hidden layer; only the second
    BN of a hidden-layer net takes ``momentum``."""

    def __init__(self, d_in: int, d_out: int, dropout: float, momentum: float, hidden: int | None = None):
        super().__init__()
        if hidden:
            layers = [nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)]
            layers += [nn.Linear(hidden, d_out), nn.BatchNorm1d(d_out, momentum=momentum)]
        else:
            layers = [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out)]
        self.fc = nn.Sequential(*layers, nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm, self.fn = nn.LayerNorm(dim), fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class SelfAttention(nn.Module):
    """vit-pytorch attention: bias-free qkv, softmax(q k^T / sqrt(d)) v, output Linear + Dropout."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
        return self.to_out(torch.matmul(attn, v).transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transformer(nn.Module):
    """Pre-norm layers, each wrapping attention and the MLP in its own ``PreNorm``."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PreNorm(dim, SelfAttention(dim, heads, dim_head, dropout)),
                    PreNorm(dim, FeedForward(dim, mlp_dim, dropout)),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class ReferenceAVCA(nn.Module):
    def __init__(
        self, cfg, audio_dim: int, visual_dim: int, emb_dim: int, lr: float, side_passes: bool = True
    ):
        super().__init__()
        self.side_passes = side_passes
        d, out, m = cfg.token_dim, cfg.dim_out, cfg.bn_momentum
        self.A_enc = MLP(audio_dim, d, cfg.embedding_dropout, m, cfg.encoder_hidden)
        self.V_enc = MLP(visual_dim, d, cfg.embedding_dropout, m, cfg.encoder_hidden)
        self.cross_attention = Transformer(
            d, cfg.depth, cfg.heads, cfg.dim_head, cfg.mlp_dim, cfg.embedding_dropout
        )
        self.W_proj = MLP(emb_dim, out, cfg.additional_dropout, m)
        self.D = MLP(out, emb_dim, cfg.additional_dropout, m)
        self.A_proj = MLP(d, out, cfg.decoder_dropout, m, cfg.projector_hidden)
        self.V_proj = MLP(d, out, cfg.decoder_dropout, m, cfg.projector_hidden)
        self.A_rec = MLP(out, d, cfg.additional_dropout, m)
        self.V_rec = MLP(out, d, cfg.additional_dropout, m)
        self.pos_emb1D = nn.Parameter(torch.randn(2, d))
        trained = [p for name, p in self.named_parameters() if name != "pos_emb1D"]
        self.optimizer = torch.optim.Adam(trained, lr=lr, weight_decay=1e-5, foreach=False, fused=False)
        self.triplet, self.mse = nn.TripletMarginLoss(margin=cfg.margin), nn.MSELoss()

    def attend(self, phi_a: torch.Tensor, phi_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.stack((phi_a + self.pos_emb1D[0], phi_v + self.pos_emb1D[1]), dim=1)
        out = self.cross_attention(tokens)
        return phi_a + out[:, 0], phi_v + out[:, 1]

    def loss(self, a, v, w, a_neg, v_neg, w_neg) -> torch.Tensor:
        """``forward`` then ``backward``'s loss, every call in the reference's order."""
        phi_a, phi_v = self.A_enc(a), self.V_enc(v)
        phi_a_neg, phi_v_neg = self.A_enc(a_neg), self.V_enc(v_neg)
        theta_w, theta_w_neg = self.W_proj(w), self.W_proj(w_neg)
        rho_w, _ = self.D(theta_w), self.D(theta_w_neg)  # no loss term uses rho_w-: BN statistics only
        za, zv = self.attend(phi_a, phi_v)
        za_neg, zv_neg = self.attend(phi_a_neg, phi_v_neg)
        theta_v, theta_v_neg = self.V_proj(zv), self.V_proj(zv_neg)
        theta_a, theta_a_neg = self.A_proj(za), self.A_proj(za_neg)
        rec_v, rec_a = self.V_rec(theta_v), self.A_rec(theta_a)
        if self.side_passes:  # outputs used by no loss term
            self.A_proj(rec_a)
            self.V_proj(rec_v)
        rho_a, rho_a_neg = self.D(theta_a), self.D(theta_a_neg)
        rho_v, rho_v_neg = self.D(theta_v), self.D(theta_v_neg)

        tl, mse = self.triplet, self.mse
        l_t = tl(theta_a, theta_w, theta_a_neg) + tl(theta_v, theta_w, theta_v_neg)
        l_t = l_t + tl(theta_w, theta_a, theta_w_neg) + tl(theta_w, theta_v, theta_w_neg)
        l_r = mse(rec_v, phi_v) + mse(rec_a, phi_a) + mse(theta_v, theta_w) + mse(theta_a, theta_w)
        l_rec = mse(w, rho_v) + mse(w, rho_a) + mse(w, rho_w)
        l_ct = tl(rho_w, rho_a, rho_a_neg) + tl(rho_w, rho_v, rho_v_neg)
        l_w = tl(theta_w, theta_a, theta_a_neg) + tl(theta_a, theta_w, theta_w_neg)
        l_w = l_w + tl(theta_w, theta_v, theta_v_neg) + tl(theta_v, theta_w, theta_w_neg)
        return l_rec + l_ct + l_w + l_t + l_r

    def get_embeddings(self, a, v, w) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        phi_a, phi_v = self.A_enc(a), self.V_enc(v)
        theta_w = self.W_proj(w)
        za, zv = self.attend(phi_a, phi_v)
        return self.A_proj(za), self.V_proj(zv), theta_w

    def train_step(self, a, v, w, a_neg, v_neg, w_neg) -> torch.Tensor:
        self.train()
        loss = self.loss(a, v, w, a_neg, v_neg, w_neg)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.side_passes:
            self.get_embeddings(a, v, w)
        return loss.detach()


def reference_name(ours: str) -> str:
    """The reference's state-dict key of one of our AVCA's keys (``heads.A_proj.4.weight`` ->
    ``A_proj.fc.4.weight``; the transformer's four sub-modules per layer sit in two ``PreNorm`` wrappers)."""
    name = ours.removeprefix("heads.")
    if name.startswith("cross_attention."):
        layer = re.match(r"cross_attention\.layers\.(\d+)\.(\d)\.(.*)", name)
        assert layer, name
        index, part, rest = layer.group(1), int(layer.group(2)), layer.group(3)
        inner = ("norm.", "fn.", "norm.", "fn.net.")[part]
        return f"cross_attention.layers.{index}.{part // 2}.{inner}{rest}"
    if name == "pos_emb1D":
        return name
    net, rest = name.split(".", 1)
    return f"{net}.fc.{rest}"


def copy_into_reference(ours: nn.Module, reference: ReferenceAVCA) -> None:
    """Give the reference our weights and BN buffers, key for key (every key on both sides used once)."""
    theirs = reference.state_dict()
    mapped = {reference_name(k): v for k, v in ours.state_dict().items()}
    assert set(mapped) == set(theirs), set(mapped) ^ set(theirs)
    reference.load_state_dict(mapped)
