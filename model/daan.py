"""DAAN (Discrepancy-Aware Attention Network), reconstructed: the paper's code is not public (docs/daan.md).

AVCA's backbone with (i) TCN temporal enhancement and QDMA differential cross-modal attention in place of
the one-layer transformer, (ii) an alignment loss and (iii) CSGM per-sample gradient modulation
(``model/csgm.py``). Every choice below is a config switch.

    phi^m = E_m(x^m)                          per time step for temporal features
    H     = phi + TCN(phi)                    over time per modality, over the 2 tokens, or off
    X     = H + p[modality]                   tokens of both modalities (p: AVCA's pos_emb1D)
    X     = X + W_O (A1 - beta A2) V          A_i = softmax(Q_i K_i^T / sqrt(d_h)), pre-norm
    X     = X + FF(LN(X))
    Z^m   = phi^m + X[tokens of m]  -> pooled over valid steps -> AVCA heads

Written plainly, one batch per call; ``model/fast.py`` has the same functions faster on a CPU.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from model.config import AVCAConfig, DAANConfig
from model.layers import EmbeddingNet, FeedForward, Fused, Heads, encode_steps, masked_mean
from model.registry import ModelSpec, register

if TYPE_CHECKING:
    from model.config import TrainConfig
    from model.data.gzsl import GZSLData


def dilated_conv(dim: int, kernel: int, dilation: int) -> nn.Conv1d:
    """Non-causal: output step t sees input steps t + dilation * (j - (kernel - 1) / 2), zero-padded."""
    return nn.Conv1d(dim, dim, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)


class TCN(nn.Module):
    """Residual blocks of two dilated convolutions over (B, T, D), dilations 1, 2, 4, ... by level:

    x = x + Drop(ReLU(conv2(Drop(ReLU(conv1(x))))))     padded steps zeroed before each convolution
    """

    def __init__(self, dim: int, levels: int, kernel: int, dropout: float):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"daan.tcn.kernel={kernel}: use an odd kernel (centred, non-causal convolution)")
        self.blocks = nn.ModuleList(
            nn.ModuleList([dilated_conv(dim, kernel, 2**level), dilated_conv(dim, kernel, 2**level)])
            for level in range(levels)
        )
        self.act, self.drop = nn.ReLU(), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D); mask (B, T), True = valid step."""
        keep = mask.unsqueeze(-1).to(x.dtype)
        for conv1, conv2 in self.blocks:
            y = self.drop(self.act(over_time(conv1, x * keep)))
            y = self.drop(self.act(over_time(conv2, y * keep)))
            x = x + y
        return x


def over_time(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A Conv1d (channels first) on (B, T, D) sequences."""
    return conv(x.transpose(1, 2)).transpose(1, 2)


class QDMA(nn.Module):
    """Quality-discrepancy mitigation attention: differential multi-head attention between modalities.

    Per head, with [Q1 Q2] = X W_Q and [K1 K2] = X W_K (each head's two halves side by side):
        out = (softmax(Q1 K1^T / sqrt(d_h)) - lambda softmax(Q2 K2^T / sqrt(d_h))) V
    lambda is ``beta``, or DIFF Transformer's exp(q1.k1) - exp(q2.k2) + lambda_init when learnable; with
    ``subtract_on=visual`` only the columns of visual keys are subtracted.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        dropout: float,
        beta: float,
        learnable_lambda: bool,
        subtract_on: str,
        head_norm: bool,
    ):
        super().__init__()
        self.heads, self.dim_head, self.beta = heads, dim_head, beta
        self.subtract_on = subtract_on
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, 2 * inner, bias=False)
        self.to_k = nn.Linear(dim, 2 * inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.head_norm = nn.LayerNorm(dim_head) if head_norm else None
        self.lambdas = None
        if learnable_lambda:  # DIFF Transformer: lambda = exp(q1.k1) - exp(q2.k2) + lambda_init (layer 1)
            self.lambda_init = 0.8 - 0.6 * math.exp(0.0)
            self.lambdas = nn.Parameter(torch.randn(4, dim_head) * 0.1)

    def coefficient(self, modality: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | float:
        """lambda, a scalar, or per key (N,) when only the visual keys' map is subtracted."""
        coef = self.beta
        if self.lambdas is not None:
            q1, k1, q2, k2 = self.lambdas
            coef = torch.exp((q1 * k1).sum()) - torch.exp((q2 * k2).sum()) + self.lambda_init
        if self.subtract_on == "visual":
            coef = coef * (modality == 1).to(dtype)
        return coef

    def forward(self, x: torch.Tensor, modality: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x (B, N, D); modality (N,) 0 audio / 1 visual; allowed (B, N, N) which keys each query sees."""
        b, n, _ = x.shape
        h, dh = self.heads, self.dim_head
        q1, q2 = self.to_q(x).view(b, n, h, 2, dh).transpose(1, 2).unbind(3)  # (B, h, N, dh) each
        k1, k2 = self.to_k(x).view(b, n, h, 2, dh).transpose(1, 2).unbind(3)
        v = self.to_v(x).view(b, n, h, dh).transpose(1, 2)
        blocked = ~allowed.unsqueeze(1)  # (B, 1, N, N), the same for every head
        lowest = torch.finfo(x.dtype).min  # not -inf: a query with no allowed key gets a uniform row, not NaN
        a1 = torch.softmax((q1 @ k1.transpose(-1, -2) / math.sqrt(dh)).masked_fill(blocked, lowest), dim=-1)
        a2 = torch.softmax((q2 @ k2.transpose(-1, -2) / math.sqrt(dh)).masked_fill(blocked, lowest), dim=-1)
        out = (a1 - self.coefficient(modality, x.dtype) * a2) @ v  # (B, h, N, dh)
        if self.head_norm is not None:
            out = self.head_norm(out)
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * dh))


class DAAN(nn.Module):
    def __init__(
        self, cfg: AVCAConfig, daan: DAANConfig, audio_dim: int, visual_dim: int, emb_dim: int, temporal: bool
    ):
        super().__init__()
        d = cfg.token_dim
        self.temporal = temporal
        self.tcn_mode = daan.tcn.mode if daan.tcn.mode != "auto" else ("time" if temporal else "tokens")
        if self.tcn_mode == "time" and not temporal:
            raise ValueError(
                "daan.tcn.mode=time needs temporal features; use tokens or off for averaged ones"
            )
        if self.tcn_mode == "tokens" and temporal:
            raise ValueError(
                "daan.tcn.mode=tokens is for averaged features; use time or off for temporal ones"
            )
        self.keys = daan.qdma.keys if daan.qdma.keys != "auto" else ("cross" if temporal else "all")
        self.A_enc = EmbeddingNet(audio_dim, d, cfg.embedding_dropout, cfg.encoder_hidden, cfg.bn_momentum)
        self.V_enc = EmbeddingNet(visual_dim, d, cfg.embedding_dropout, cfg.encoder_hidden, cfg.bn_momentum)
        self.pos_emb1D = nn.Parameter(torch.randn(2, d), requires_grad=cfg.pos_emb_trainable)
        t = daan.tcn
        n_tcn = {"time": 2, "tokens": 1, "off": 0}[self.tcn_mode]
        self.tcns = nn.ModuleList(TCN(d, t.levels, t.kernel, t.dropout) for _ in range(n_tcn))
        q = daan.qdma
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    nn.LayerNorm(d),
                    QDMA(
                        d,
                        cfg.heads,
                        cfg.dim_head,
                        cfg.embedding_dropout,
                        q.beta,
                        q.learnable_lambda,
                        q.subtract_on,
                        q.head_norm,
                    ),
                    nn.LayerNorm(d),
                    FeedForward(d, cfg.mlp_dim, cfg.embedding_dropout),
                ]
            )
            for _ in range(cfg.depth)
        )
        self.heads = Heads(cfg, emb_dim)

    def fuse(self, a, v, a_mask=None, v_mask=None) -> Fused:
        """Encoders, TCN and QDMA: the raw encoder outputs, their pooled vectors, and the pooled Z^a, Z^v."""
        enc_a = encode_steps(self.A_enc, a, a_mask)
        enc_v = encode_steps(self.V_enc, v, v_mask)
        (phi_a, a_valid), (phi_v, v_valid) = as_steps(enc_a, a_mask), as_steps(enc_v, v_mask)
        h_a, h_v = phi_a, phi_v
        if self.tcn_mode == "time":
            h_a, h_v = self.tcns[0](phi_a, a_valid), self.tcns[1](phi_v, v_valid)
        x = torch.cat([h_a + self.pos_emb1D[0], h_v + self.pos_emb1D[1]], dim=1)
        valid = torch.cat([a_valid, v_valid], dim=1)  # (B, N)
        if self.tcn_mode == "tokens":
            x = self.tcns[0](x, valid)
        ta, tv = phi_a.shape[1], phi_v.shape[1]
        modality = torch.tensor([0] * ta + [1] * tv, device=x.device)  # 0 audio, 1 visual
        allowed = valid.unsqueeze(1).expand(-1, ta + tv, -1)  # (B, N queries, N keys)
        if self.keys == "cross":
            allowed = allowed & (modality[:, None] != modality[None, :])
        for norm1, attn, norm2, ff in self.layers:
            x = x + attn(norm1(x), modality, allowed)
            x = x + ff(norm2(x))
        z_a = masked_mean(phi_a + x[:, :ta], a_valid)
        z_v = masked_mean(phi_v + x[:, ta:], v_valid)
        # raw encoder outputs are returned as they are: CSGM's gradient hooks must sit upstream of every use
        return Fused(enc_a, enc_v, masked_mean(enc_a, a_mask), masked_mean(enc_v, v_mask), z_a, z_v)

    def embed(self, a, v, a_mask=None, v_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.fuse(a, v, a_mask, v_mask)
        return self.heads.A_proj(fused.z_a), self.heads.V_proj(fused.z_v)

    def embed_classes(self, w: torch.Tensor) -> torch.Tensor:
        return self.heads.W_proj(w)

    def encoders(self) -> dict[str, nn.Module]:
        return {"audio": self.A_enc, "visual": self.V_enc}


def as_steps(enc: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) steps and their (B, T) validity; averaged features (B, D) are one always-valid step."""
    steps = enc.unsqueeze(1) if enc.dim() == 2 else enc
    if mask is None or enc.dim() == 2:
        mask = torch.ones(steps.shape[:2], dtype=torch.bool, device=enc.device)
    return steps, mask


@register(
    ModelSpec(
        name="daan",
        summary="DAAN (reconstructed): AVCA backbone + TCN + QDMA + CSGM + alignment loss; "
        "starts from the AVCA configs with train.model=daan",
        inputs=("averaged", "temporal"),
        objective="pairs",
        decision_rules=("visual", "mean", "sum_dist"),
        config_sections=("avca", "daan"),
    )
)
def build_daan(cfg: TrainConfig, data: GZSLData) -> DAAN:
    emb_dim = int(data.class_embeddings.shape[1])
    return DAAN(cfg.avca, cfg.daan, data.audio_dim, data.visual_dim, emb_dim, data.temporal)
