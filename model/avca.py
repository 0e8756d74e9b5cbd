"""AVCA (Mercea et al., CVPR 2022), the reference baseline, as its public code trains it (docs/avca.md).

Encoders in -> 512 -> 300; a one-layer pre-norm transformer over the two tokens [phi_a + p0, phi_v + p1]
(3 heads x 100, MLP 64; p = pos_emb1D left at its random init unless ``pos_emb_trainable``); residual
phi' = phi + out; projections 300 -> 512 -> 64; shared decoder 64 -> 300; reconstructors 64 -> 300.
Temporal inputs are averaged over their valid steps first (AVCA is an averaged-feature model).
With the ``published`` preset a training step computes the reference's loss and gradients and moves every
BatchNorm running statistic the reference's step moves, in the same order (the BatchNorm-only passes are the
switches ``rec_projection_pass`` and ``extra_embedding_pass``); tests/test_model_avca.py checks this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from model.config import AVCAConfig
from model.layers import EmbeddingNet, FeedForward, Fused, Heads, masked_mean
from model.registry import ModelSpec, register

if TYPE_CHECKING:
    from model.config import TrainConfig
    from model.data.gzsl import GZSLData


class Attention(nn.Module):
    """Multi-head self-attention as in vit-pytorch (no qkv bias), used by AVCA."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, -1))


class Transformer(nn.Module):
    """Pre-norm layers: x = x + Attn(LN(x)); x = x + FF(LN(x))."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    nn.LayerNorm(dim),
                    Attention(dim, heads, dim_head, dropout),
                    nn.LayerNorm(dim),
                    FeedForward(dim, mlp_dim, dropout),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm1, attn, norm2, ff in self.layers:
            x = x + attn(norm1(x))
            x = x + ff(norm2(x))
        return x


class AVCA(nn.Module):
    def __init__(self, cfg: AVCAConfig, audio_dim: int, visual_dim: int, emb_dim: int):
        super().__init__()
        d = cfg.token_dim
        self.A_enc = EmbeddingNet(audio_dim, d, cfg.embedding_dropout, cfg.encoder_hidden, cfg.bn_momentum)
        self.V_enc = EmbeddingNet(visual_dim, d, cfg.embedding_dropout, cfg.encoder_hidden, cfg.bn_momentum)
        self.pos_emb1D = nn.Parameter(torch.randn(2, d), requires_grad=cfg.pos_emb_trainable)
        self.cross_attention = Transformer(
            d, cfg.depth, cfg.heads, cfg.dim_head, cfg.mlp_dim, cfg.embedding_dropout
        )
        self.heads = Heads(cfg, emb_dim)

    def fuse(self, a, v, a_mask=None, v_mask=None) -> Fused:
        """Encoders, then the transformer over [phi_a + p0, phi_v + p1]: z_m = phi_m + its output m."""
        phi_a = self.A_enc(masked_mean(a, a_mask))
        phi_v = self.V_enc(masked_mean(v, v_mask))
        out = self.cross_attention(torch.stack([phi_a, phi_v], dim=1) + self.pos_emb1D)
        return Fused(phi_a, phi_v, phi_a, phi_v, phi_a + out[:, 0], phi_v + out[:, 1])

    def embed(self, a, v, a_mask=None, v_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.fuse(a, v, a_mask, v_mask)
        return self.heads.A_proj(fused.z_a), self.heads.V_proj(fused.z_v)

    def embed_classes(self, w: torch.Tensor) -> torch.Tensor:
        return self.heads.W_proj(w)

    def encoders(self) -> dict[str, nn.Module]:
        return {"audio": self.A_enc, "visual": self.V_enc}


@register(
    ModelSpec(
        name="avca",
        summary="AVCA (Mercea et al., CVPR 2022): one-layer cross-attention over an audio and a visual token",
        inputs=("averaged", "temporal"),
        inputs_note="temporal features are averaged over their valid steps first",
        objective="pairs",
        decision_rules=("visual",),
        config_sections=("avca",),
    )
)
def build_avca(cfg: TrainConfig, data: GZSLData) -> AVCA:
    return AVCA(cfg.avca, data.audio_dim, data.visual_dim, int(data.class_embeddings.shape[1]))
