"""TCaF (Mercea, Hummel, Koepke, Akata, ECCV 2022): temporal and cross-modal attention fusion.

Written from the reference code (ExplainableML/TCAF-GZSL, ``src/model_sequence.py``, ``src/dataset.py``);
docs/tcaf.md lists each reference behaviour kept and its switch. Per video, audio steps a_1..a_Ta and
visual steps v_1..v_Tv (one feature vector per window):

    a <- a / 255,  v <- v / ||v||_2 over time                 the reference's input scaling
    x^m_t = Linear([E_m(f_t) ; e_mod(m) + e_time(t) + e_pad])  per step; e_pad only on padding steps
    X = [c ; x^a_1..x^a_Ta ; x^v_1..x^v_Tv]                    c: a learned class token
    X = X + Attn(LN(X));  X = X + FF(LN(X))                    depth times, one LayerNorm per layer
    theta_o = O_proj(X[0]);  rho_o = D_o(theta_o);  theta_w = W_proj(w);  rho_w = D_w(theta_w)
    L = CE(theta_o W_proj(w_c)^T, y) + MSE(theta_o, theta_w) + MSE(w, rho_o) + MSE(w, rho_w)

Attention is masked to valid steps and, by default, to cross-modal pairs (no audio->audio or
visual->visual); the class token attends to and is attended by every valid step. The CE runs over the
training split's classes c. A video is classified by the class whose theta_w is nearest to theta_o.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.config import TCaFConfig
from model.layers import EmbeddingNet, FeedForward
from model.registry import ModelSpec, register

if TYPE_CHECKING:
    from model.config import TrainConfig
    from model.data.gzsl import GZSLData

AUDIO, VISUAL = 0, 1


class Sequences(NamedTuple):
    """A collated batch: zero-padded steps, validity masks (True = a real step), step times in seconds."""

    audio: torch.Tensor  # (B, Ta, Da)
    visual: torch.Tensor  # (B, Tv, Dv)
    audio_mask: torch.Tensor  # (B, Ta) bool
    visual_mask: torch.Tensor  # (B, Tv) bool
    audio_time: torch.Tensor  # (Ta,) float32
    visual_time: torch.Tensor  # (Tv,) float32


# ---- the reference's collator (DefaultCollator), on padded tensors ---------------------------------------
def collate(
    a: torch.Tensor,
    v: torch.Tensor,
    a_mask: torch.Tensor,
    v_mask: torch.Tensor,
    cfg: TCaFConfig,
    train: bool,
    generator: torch.Generator | None = None,
) -> Sequences:
    """Fit a batch of left-aligned padded sequences to the lengths the reference trains and tests on.

    ``batch_max``: pad to the batch's longest sequence per modality, never crop (the reference's ``max``
    mode ignores its length limit). ``fixed`` (ActivityNet): visual sequences are cropped (random start in
    training, centred in evaluation) or zero-padded to ``train_steps`` / ``test_steps``; audio to
    round(steps x visual_step_seconds x audio_step_seconds) steps (the reference multiplies both rates),
    its crop starting at the visual start converted to audio steps. Step times count from the crop start.
    """
    a_len, v_len = a_mask.sum(1), v_mask.sum(1)
    if cfg.lengths == "batch_max":
        ta, tv = int(a_len.max()), int(v_len.max())
        a, a_mask, v, v_mask = a[:, :ta], a_mask[:, :ta], v[:, :tv], v_mask[:, :tv]
    else:
        tv = cfg.train_steps if train else cfg.test_steps
        ta = round(tv * cfg.visual_step_seconds * cfg.audio_step_seconds)
        v_start = crop_starts(v_len - tv, train, generator)
        a_start = audio_starts(a_len - ta, v_start, cfg.visual_step_seconds, cfg.audio_step_seconds)
        a, a_mask = window(a, a_len, a_start, ta)
        v, v_mask = window(v, v_len, v_start, tv)
    return Sequences(
        a,
        v,
        a_mask,
        v_mask,
        step_times(ta, cfg.audio_step_seconds, a.device),
        step_times(tv, cfg.visual_step_seconds, v.device),
    )


def crop_starts(excess: torch.Tensor, train: bool, generator: torch.Generator | None) -> torch.Tensor:
    """First kept step of each sequence longer than the window by ``excess`` > 0 steps (else 0):
    uniform in [0, excess) in training, excess // 2 in evaluation."""
    if train:
        u = torch.rand(len(excess), generator=generator).to(excess.device)
        start = torch.minimum((u * excess).long(), excess - 1)
    else:
        start = excess // 2
    return torch.where(excess > 0, start, 0)


def audio_starts(excess: torch.Tensor, v_start: torch.Tensor, v_rate: float, a_rate: float) -> torch.Tensor:
    """Audio crop start: the visual start in audio steps, round(start x v_rate / a_rate) in float32 as the
    reference computes it, at most the audio's excess; 0 when the visual sequence was not cropped."""
    start = torch.minimum((v_start.float() * v_rate / a_rate).round().long(), excess)
    return torch.where((excess > 0) & (v_start > 0), start, 0)


def window(x: torch.Tensor, length: torch.Tensor, start: torch.Tensor, steps: int):
    """Steps start..start+steps-1 of each sequence, zero (and invalid) past its length."""
    idx = start[:, None] + torch.arange(steps, device=x.device)
    valid = idx < length[:, None]
    rows = x.gather(1, idx.clamp(max=x.shape[1] - 1)[..., None].expand(-1, -1, x.shape[2]))
    return torch.where(valid[..., None], rows, 0.0), valid


def step_times(steps: int, seconds: float, device: torch.device) -> torch.Tensor:
    """Start time of each step in seconds (float64 product, then float32, as the reference's numpy)."""
    return (torch.arange(steps, dtype=torch.float64) * seconds).float().to(device)


# ---- the model --------------------------------------------------------------------------------------------
class FourierTime(nn.Module):
    """Random Fourier features of a time t: Linear([sin 2 pi [t, t] R ; cos 2 pi [t, t] R]), R ~ scale N(0, 1)."""

    def __init__(self, dim: int, scale: float):
        super().__init__()
        self.fourier_embeddings = nn.Linear(dim, dim)
        self.register_buffer("fourier_randn", scale * torch.randn(2, dim // 2))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.fourier_randn.dtype)
        angles = (2.0 * math.pi * torch.stack([t, t], dim=-1)) @ self.fourier_randn
        return self.fourier_embeddings(torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1))


class StepEmbedding(nn.Module):
    """The reference's AudioVisualEmbedding: each step's features next to the sum of its modality, time and
    padding codes, projected to the token width per step (the reference's 1x1 convolutions)."""

    def __init__(self, cfg: TCaFConfig):
        super().__init__()
        d, e = cfg.token_dim, cfg.embed_dim
        self.modal_embedding = nn.Embedding(2, e) if cfg.modality_embedding else None
        self.time = FourierTime(e, cfg.fourier_scale) if cfg.time_embedding == "sinusoid" else None
        self.pad_embedding = nn.Embedding(1, e)
        self.dropout = nn.Dropout(cfg.embed_dropout)
        self.out_proj = nn.ModuleList([nn.Linear(d + e, d), nn.Linear(d + e, d)])  # audio, visual

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, times: torch.Tensor, modality: int
    ) -> torch.Tensor:
        code = x.new_zeros(*x.shape[:2], self.pad_embedding.embedding_dim)
        if self.modal_embedding is not None:
            code = code + self.modal_embedding.weight[modality]
        if self.time is not None:
            code = code + self.time(times)
        code = code + (~mask)[..., None] * self.pad_embedding.weight[0]
        return self.dropout(self.out_proj[modality](torch.cat([x, code], dim=-1)))


class Attention(nn.Module):
    """Multi-head attention without qkv bias; ``allowed`` (B, N, N) says which keys each query may see."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, self.heads, -1).transpose(1, 2) for p in (self.to_q, self.to_k, self.to_v))
        scores = (q @ k.transpose(-1, -2)) * self.scale
        # a finite fill, as the reference: a padding query that sees no key gets uniform weights, not NaN
        scores = scores.masked_fill(~allowed[:, None], -torch.finfo(scores.dtype).max)
        out = torch.softmax(scores, dim=-1) @ v
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    """Pre-norm layer whose two sub-layers share ONE LayerNorm, as in the reference."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.attn = Attention(dim, heads, dim_head, dropout)
        self.ff = FeedForward(dim, mlp_dim, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm(x), allowed)
        return x + self.ff(self.norm(x))


class TCaF(nn.Module):
    def __init__(self, cfg: TCaFConfig, audio_dim: int, visual_dim: int, emb_dim: int):
        super().__init__()
        self.cfg = cfg
        d = cfg.token_dim
        # created in the reference's order, so that one seed gives the reference's initial weights
        self.A_enc = EmbeddingNet(audio_dim, d, cfg.embedding_dropout, cfg.encoder_hidden)
        self.V_enc = EmbeddingNet(visual_dim, d, cfg.embedding_dropout, cfg.encoder_hidden)
        self.W_proj = EmbeddingNet(emb_dim, cfg.dim_out, cfg.additional_dropout)
        self.D_w = EmbeddingNet(cfg.dim_out, emb_dim, cfg.additional_dropout)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d))
        self.embedding = StepEmbedding(cfg)
        self.layers = nn.ModuleList(
            Block(d, cfg.heads, cfg.dim_head, cfg.mlp_dim, cfg.transformer_dropout) for _ in range(cfg.depth)
        )
        self.O_proj = EmbeddingNet(d, cfg.dim_out, cfg.decoder_dropout, cfg.projector_hidden)
        self.D_o = EmbeddingNet(cfg.dim_out, emb_dim, cfg.decoder_dropout, cfg.projector_hidden)

    def collate(
        self, a, v, a_mask, v_mask, train: bool, generator: torch.Generator | None = None
    ) -> Sequences:
        return collate(a, v, a_mask, v_mask, self.cfg, train, generator)

    def allowed(self, a_mask: torch.Tensor, v_mask: torch.Tensor) -> torch.Tensor:
        """(B, N, N) attention mask over [class token, audio steps, visual steps]."""
        b, ta, tv = len(a_mask), a_mask.shape[1], v_mask.shape[1]
        valid = torch.cat([a_mask.new_ones(b, 1), a_mask, v_mask], dim=1)
        kind = torch.tensor([-1] + [AUDIO] * ta + [VISUAL] * tv, device=a_mask.device)
        same = kind[:, None] == kind[None, :]
        pairs = (kind[:, None] == -1) | (kind[None, :] == -1)  # the class token with anything
        if self.cfg.self_attention:
            pairs = pairs | same
        if self.cfg.cross_attention:
            pairs = pairs | ~same
        return valid[:, :, None] & valid[:, None, :] & pairs

    def fuse(self, seq: Sequences, audio_time: torch.Tensor, visual_time: torch.Tensor) -> torch.Tensor:
        """c_o: the class token's output; time codes placed at the given step times."""
        a = seq.audio / self.cfg.audio_divisor
        v = F.normalize(seq.visual, dim=1) if self.cfg.visual_l2_over_time else seq.visual
        (b, ta, _), tv = a.shape, v.shape[1]
        # every row goes through the encoders, padding included: the reference's BatchNorm statistics do
        a = self.A_enc(a.reshape(b * ta, -1)).view(b, ta, -1)
        v = self.V_enc(v.reshape(b * tv, -1)).view(b, tv, -1)
        x = torch.cat(
            [
                self.cls_token.expand(b, -1, -1),
                self.embedding(a, seq.audio_mask, audio_time, AUDIO),
                self.embedding(v, seq.visual_mask, visual_time, VISUAL),
            ],
            dim=1,
        )
        allowed = self.allowed(seq.audio_mask, seq.visual_mask)
        for layer in self.layers:
            x = layer(x, allowed)
        return x[:, 0]

    def forward(self, seq: Sequences, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training forward: time codes at each step's time in seconds."""
        theta_o = self.O_proj(self.fuse(seq, seq.audio_time, seq.visual_time))
        theta_w = self.W_proj(w)
        return {
            "theta_o": theta_o,
            "rho_o": self.D_o(theta_o),
            "theta_w": theta_w,
            "rho_w": self.D_w(theta_w),
        }

    def loss(
        self, seq: Sequences, w: torch.Tensor, class_w: torch.Tensor, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """CE over the classes ``class_w`` (``target`` indexes its rows) + regression + reconstruction."""
        out = self(seq, w)
        scores = out["theta_o"] @ self.W_proj(class_w).T
        terms = {
            "l_rec": F.mse_loss(out["rho_o"], w) + F.mse_loss(out["rho_w"], w),
            "l_reg": F.mse_loss(out["theta_o"], out["theta_w"]),
            "l_ce": F.cross_entropy(scores, target),
        }
        terms["total"] = terms["l_rec"] + terms["l_reg"] + terms["l_ce"]
        return terms

    def get_embeddings(self, seq: Sequences, w: torch.Tensor | None = None):
        """(theta_o, theta_w) as the reference evaluates: time codes at step indices by default."""
        if self.cfg.eval_positions == "step_index":
            times = [
                torch.arange(len(t), device=t.device, dtype=t.dtype)
                for t in (seq.audio_time, seq.visual_time)
            ]
        else:
            times = [seq.audio_time, seq.visual_time]
        theta_o = self.O_proj(self.fuse(seq, *times))
        return theta_o, None if w is None else self.W_proj(w)

    def after_step(self, seq: Sequences, w: torch.Tensor) -> None:
        """The reference re-embeds each training batch in train mode after the optimiser step: one more
        BatchNorm statistics update of A_enc, V_enc, O_proj and W_proj (and dropout draws)."""
        if self.cfg.extra_embedding_pass:
            with torch.no_grad():
                self.get_embeddings(seq, w)

    def embed(self, a, v, a_mask=None, v_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """theta_o of whole sequences (cut as the reference's test collator), in both slots: the protocol's
        ``visual`` rule then compares theta_o with the classes, like the reference's ``video`` mode."""
        if a_mask is None or v_mask is None:
            raise ValueError("TCaF embeds temporal features: audio and visual masks are required")
        theta_o, _ = self.get_embeddings(self.collate(a, v, a_mask, v_mask, train=False))
        return theta_o, theta_o

    def embed_classes(self, w: torch.Tensor) -> torch.Tensor:
        return self.W_proj(w)


@register(
    ModelSpec(
        name="tcaf",
        summary="TCaF (Mercea et al., ECCV 2022): cross-modal attention over time steps with a class token",
        inputs=("temporal",),
        inputs_note="per-window sequences with masks; theta_o is evaluated through the visual rule",
        objective="classes",
        decision_rules=("visual",),
        config_sections=("tcaf",),
    )
)
def build_tcaf(cfg: TrainConfig, data: GZSLData) -> TCaF:
    return TCaF(cfg.tcaf, data.audio_dim, data.visual_dim, int(data.class_embeddings.shape[1]))
