"""DAAN (Discrepancy-Aware Attention Network), reconstructed [REC, REFERENCE §3.4].

The paper's code is not public. This is AVCA's backbone with (i) TCN temporal enhancement and QDMA
differential cross-modal attention in place of the one-layer transformer, (ii) an alignment loss and
(iii) CSGM per-sample gradient modulation (``model/csgm.py``). Every choice below is a config switch.

    phi^m = E_m(x^m)                          per time step for temporal features
    H     = phi + TCN(phi)                    over time per modality, over the 2 tokens, or off
    X     = H + p[modality]                   tokens of both modalities (p: AVCA's pos_emb1D)
    X     = X + W_O (A1 - beta A2) V          A_i = softmax(Q_i K_i^T / sqrt(d_h)), pre-norm
    X     = X + FF(LN(X))
    Z^m   = phi^m + X[tokens of m]  -> pooled over valid steps -> AVCA heads
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from model.config import AVCAConfig, DAANConfig
from model.layers import (
    Branch,
    Dropout,
    EmbeddingNet,
    FeedForward,
    Heads,
    attention_mix,
    attention_scores,
    encode_steps,
    heads_forward,
    masked_mean,
)
from model.registry import ModelSpec, register

if TYPE_CHECKING:
    from model.config import TrainConfig
    from model.data.gzsl import GZSLData


class DilatedConv(nn.Module):
    """Non-causal dilated 1-D convolution over (B, T, D): one matmul per tap on the steps it really sees.

    Same function as ``nn.Conv1d(D, D, k, dilation=d, padding=d(k-1)/2)`` (weight stored tap-major as
    ``proj.weight`` (D, k*D)), but torch's CPU dilated conv path is ~10x slower for our short sequences,
    and multiplying zero padding is not free either: with 2 tokens, padding is a third of a dense conv's
    work. Each tap multiplies only the rows whose shifted partner exists and is added in place.

    When every step sees every other one through some tap (dilation 1, T <= centre + 1: the 2 tokens of
    averaged features), the whole convolution is one block-Toeplitz matrix over the flattened steps: the
    same multiply-adds in a single GEMM, without the per-tap slicing and in-place adds, whose backward
    copies cost DAAN about 4 % of a training step on CPU.
    """

    def __init__(self, dim: int, kernel: int, dilation: int):
        super().__init__()
        self.kernel, self.dilation = kernel, dilation
        self.proj = nn.Linear(kernel * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d_in = x.shape
        centre = (self.kernel - 1) // 2
        if self.dilation == 1 and 2 <= t <= centre + 1:
            # output step s sees input steps 0..t-1 through taps centre-s .. centre-s+t-1: a slice of
            # proj.weight's columns (slices and a cat: no index_put in backward, which syncs on CUDA)
            rows = [self.proj.weight[:, (centre - s) * d_in : (centre - s + t) * d_in] for s in range(t)]
            block = torch.cat(rows)
            return nn.functional.linear(x.reshape(b, -1), block, self.proj.bias.repeat(t)).view(b, t, -1)
        taps = self.proj.weight.unflatten(1, (self.kernel, -1))  # (D_out, k, D_in), a view
        out = nn.functional.linear(x, taps[:, centre], self.proj.bias)
        for j in range(self.kernel):
            shift = (j - centre) * self.dilation  # out[:, s] += W_j x[:, s + shift]
            if shift == 0 or abs(shift) >= t:  # taps shifted by >= T steps only ever see zero padding
                continue
            part = nn.functional.linear(x[:, max(shift, 0) : t + min(shift, 0)], taps[:, j])
            out[:, max(-shift, 0) : t - max(shift, 0)] += part
        return out


class TCN(nn.Module):
    """Residual blocks of dilated non-causal convolutions (dilations 1, 2, 4, ...) over (B, T, D)."""

    def __init__(self, dim: int, levels: int, kernel: int, dropout: float):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"daan.tcn.kernel={kernel}: use an odd kernel (centred, non-causal convolution)")
        self.blocks = nn.ModuleList(
            nn.ModuleList([DilatedConv(dim, kernel, 2**level), DilatedConv(dim, kernel, 2**level)])
            for level in range(levels)
        )
        self.act, self.drop = nn.ReLU(), Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        keep = None if mask is None else mask.unsqueeze(-1).to(x.dtype)
        for conv1, conv2 in self.blocks:
            y = x if keep is None else x * keep
            y = self.drop(self.act(conv1(y)))
            y = self.drop(self.act(conv2(y if keep is None else y * keep)))
            x = x + y
        return x


class QDMA(nn.Module):
    """Quality-discrepancy mitigation attention: differential multi-head attention between modalities."""

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
        self.to_out = nn.Sequential(nn.Linear(inner, dim), Dropout(dropout))
        self.head_norm = nn.LayerNorm(dim_head) if head_norm else None
        self.lambdas = None
        if learnable_lambda:  # DIFF Transformer: lambda = exp(q1.k1) - exp(q2.k2) + lambda_init (layer 1)
            self.lambda_init = 0.8 - 0.6 * math.exp(0.0)
            self.lambdas = nn.Parameter(torch.randn(4, dim_head) * 0.1)

    def coefficient(self) -> torch.Tensor | float:
        if self.lambdas is None:
            return self.beta
        q1, k1, q2, k2 = self.lambdas
        return torch.exp((q1 * k1).sum()) - torch.exp((q2 * k2).sum()) + self.lambda_init

    def forward(self, x: torch.Tensor, modality: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        """x (B, N, D); modality (N,) 0 audio / 1 visual; allowed (B, N, N) which keys each query sees
        (None: every query sees every key, so no masking work is done)."""
        b, n, _ = x.shape
        h, dh = self.heads, self.dim_head
        coef = self.coefficient()
        if self.subtract_on == "visual":
            coef = coef * (modality == 1).to(x.dtype)  # subtract only the maps of visual keys
        if n == 2 and allowed is None:
            out = self._two_keys(x, coef)
        else:
            split = self._split_heads
            (q1, q2), (k1, k2), (v,) = split(self.to_q(x), 2), split(self.to_k(x), 2), split(self.to_v(x), 1)
            s1 = attention_scores(q1, k1) / math.sqrt(dh)
            s2 = attention_scores(q2, k2) / math.sqrt(dh)
            if allowed is not None:
                block, neg = ~allowed.unsqueeze(1), torch.finfo(x.dtype).min
                s1, s2 = s1.masked_fill(block, neg), s2.masked_fill(block, neg)
            a1, a2 = torch.softmax(s1, dim=-1), torch.softmax(s2, dim=-1)
            out = attention_mix(a1 - coef * a2, v).transpose(1, 2)  # (B, N, h, dh)
        if self.head_norm is not None:
            out = self.head_norm(out)
        return self.to_out(out.reshape(b, n, h * dh))

    def _split_heads(self, t: torch.Tensor, parts: int) -> list[torch.Tensor]:
        """(B, N, h * parts * dh) projections -> ``parts`` views of shape (B, h, N, dh)."""
        b, n, _ = t.shape
        return list(t.reshape(b, n, self.heads, parts, self.dim_head).permute(3, 0, 2, 1, 4))

    def _two_keys(self, x: torch.Tensor, coef: torch.Tensor | float) -> torch.Tensor:
        """The attention of ``forward`` when every query sees the same 2 keys (averaged features), in closed
        form, (B, N, h, dh): softmax over 2 scores is sigmoid(s_0 - s_1), and s_0 - s_1 = q . W_k (x_0 - x_1)
        needs the key projection of one difference instead of both tokens (to_k has no bias). Same
        function, half the key GEMM, none of the (B, h, 2, 2, d) products, and computed token-major, so
        the heads need no transpose copy before ``to_out`` (together ~5 % of a DAAN step on CPU)."""
        b, n, h, dh = *x.shape[:2], self.heads, self.dim_head
        q = self.to_q(x).view(b, n, h, 2, dh)  # both maps' queries
        dk = self.to_k(x[:, 0] - x[:, 1]).view(b, 1, h, 2, dh)
        p1, p2 = torch.sigmoid((q * dk).sum(-1) / math.sqrt(dh)).unbind(-1)  # (B, N, h): weight on key 0
        c0, c1 = (coef[0], coef[1]) if isinstance(coef, torch.Tensor) and coef.dim() else (coef, coef)
        w0, w1 = p1 - c0 * p2, (1 - p1) - c1 * (1 - p2)  # rows of a1 - coef a2
        v = self.to_v(x).view(b, n, h, dh)
        return torch.addcmul(w1.unsqueeze(-1) * v[:, 1:], w0.unsqueeze(-1), v[:, :1])


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

    def _fuse(self, a, v, a_mask, v_mask, groups: int = 1):
        """Encoders, TCN and QDMA; returns raw encoder outputs and fused (pooled) Z^a, Z^v.

        Only the encoders' BatchNorm mixes samples, so ``groups`` stacked batches share every other op.
        """
        raw_a = encode_steps(self.A_enc, a, a_mask, groups)
        raw_v = encode_steps(self.V_enc, v, v_mask, groups)
        enc_a, enc_v = raw_a, raw_v
        if raw_a.dim() == 2:  # averaged features: one token per modality
            enc_a, enc_v = raw_a.unsqueeze(1), raw_v.unsqueeze(1)
            a_mask = v_mask = None
        b, ta, tv = enc_a.shape[0], enc_a.shape[1], enc_v.shape[1]
        # no mask: every step is valid, and masking or pooling with an all-true mask would be wasted work
        if self.tcn_mode == "time":
            h_a = self.tcns[0](enc_a, a_mask) + self.pos_emb1D[0]
            h_v = self.tcns[1](enc_v, v_mask) + self.pos_emb1D[1]
            x = torch.cat([h_a, h_v], dim=1)
        elif self.tcn_mode == "tokens":
            x = self.tcns[0](torch.cat([enc_a + self.pos_emb1D[0], enc_v + self.pos_emb1D[1]], dim=1), None)
        else:
            x = torch.cat([enc_a + self.pos_emb1D[0], enc_v + self.pos_emb1D[1]], dim=1)
        modality = (torch.arange(ta + tv, device=x.device) >= ta).long()  # built on the device: no sync
        allowed = None  # averaged features attending to all tokens: nothing to mask
        if a_mask is not None or v_mask is not None or self.keys == "cross":
            am = a_mask if a_mask is not None else enc_a.new_ones(b, ta, dtype=torch.bool)
            vm = v_mask if v_mask is not None else enc_v.new_ones(b, tv, dtype=torch.bool)
            valid = torch.cat([am, vm], dim=1)
            allowed = valid.unsqueeze(1).expand(b, ta + tv, ta + tv)
            if self.keys == "cross":
                allowed = allowed & (modality[:, None] != modality[None, :])
        for norm1, attn, norm2, ff in self.layers:
            x = x + attn(norm1(x), modality, allowed)
            x = x + ff(norm2(x))
        z_a = masked_mean(enc_a + x[:, :ta], a_mask)
        z_v = masked_mean(enc_v + x[:, ta:], v_mask)
        # raw encoder outputs are returned as they are: CSGM's gradient hooks must sit upstream of every use
        return raw_a, raw_v, masked_mean(raw_a, a_mask), masked_mean(raw_v, v_mask), z_a, z_v

    def branch(self, a, v, w, a_mask=None, v_mask=None, groups: int = 1) -> Branch:
        """One forward for ``groups`` equal batches stacked on dim 0, each with its own BN statistics."""
        enc_a, enc_v, phi_a, phi_v, z_a, z_v = self._fuse(a, v, a_mask, v_mask, groups)
        return heads_forward(self.heads, enc_a, enc_v, phi_a, phi_v, z_a, z_v, w, groups)

    def embed(self, a, v, a_mask=None, v_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        *_, z_a, z_v = self._fuse(a, v, a_mask, v_mask)
        return self.heads.A_proj(z_a), self.heads.V_proj(z_v)

    def embed_classes(self, w: torch.Tensor) -> torch.Tensor:
        return self.heads.W_proj(w)

    def encoders(self) -> dict[str, nn.Module]:
        return {"audio": self.A_enc, "visual": self.V_enc}


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
