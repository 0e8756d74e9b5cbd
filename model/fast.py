"""CPU fast paths: the plain model's functions computed with fewer, larger operations (docs/fast-paths.md).

A training step of AVCA or DAAN is hundreds of small tensor operations on (256, 300)-sized inputs, so on a
CPU its cost is mostly per-operation overhead, not arithmetic. Every class and function here computes the
same function as its plain counterpart in ``layers``/``avca``/``daan``/``losses`` with fewer operations;
``tests/test_model_fast.py`` checks each against the plain one (values and gradients).

``select(enabled, model)`` is the one switch (``TrainConfig.fast_paths``, read by ``model/trainer.py``). With it
on, ``enable`` turns a plain model into its fast twin in place by swapping module classes: the parameters,
buffers and state_dict keys stay as they are, so plain and fast models share checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model import layers, losses
from model.avca import AVCA, Attention
from model.daan import DAAN, QDMA, TCN
from model.layers import Branch, EmbeddingNet, Fused, Heads, Pairs, masked_mean

# ---- dropout ----------------------------------------------------------------------------------------


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU keep-mask comes from numpy's PCG64 instead of torch's generator.

    torch's CPU generator (mt19937, one draw per element) made the masks about 10 % of a DAAN training step.
    Here each raw 64-bit PCG64 output is split into four 16-bit uniforms (bulk, no per-element bounding:
    about 6x faster than torch, 2.5x faster than numpy's ``integers``). Each call seeds a fresh PCG64 from
    one draw of torch's generator, so ``torch.manual_seed`` and the checkpointed torch RNG state still
    decide every mask. An element is kept when its 16-bit uniform is >= round(p * 2^16): keep probability
    within 2^-17 of 1 - p, and the output is scaled by the exact inverse of it, so it stays unbiased. The
    masks are not torch's (another generator): equal in distribution only. CUDA keeps torch's kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.is_cuda:
            return super().forward(x)
        threshold = round(self.p * _UNIFORM_LEVELS)
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        uniforms = _uniform_uint16(x.numel(), seed).reshape(tuple(x.shape))
        # via uint8: torch turns a bool tensor times a float into float ~15x slower than uint8 to float
        keep = torch.from_numpy(uniforms >= threshold).view(torch.uint8)
        return x * keep.to(x.dtype).mul_(_UNIFORM_LEVELS / (_UNIFORM_LEVELS - threshold))


_UNIFORM_LEVELS = 1 << 16


def _uniform_uint16(count: int, seed: int) -> np.ndarray:
    """``count`` independent uniform 16-bit integers: the four 16-bit words of PCG64's raw outputs."""
    raw = np.random.PCG64(seed).random_raw(-(-count // 4))
    return raw.view(np.uint16)[:count]


# ---- TCN: dilated convolutions as GEMMs ---------------------------------------------------------------


def conv_over_time(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``daan.over_time(conv, x)`` for (B, T, D) x: one matmul per tap on the steps it really sees.

    torch's CPU dilated conv path is ~10x slower for our short sequences, and multiplying zero padding is
    not free either: with 2 tokens, padding is a third of a dense conv's work. Each tap multiplies only the
    rows whose shifted partner exists and is added in place.

    When every step sees every other one through some tap (dilation 1, T <= centre + 1: the 2 tokens of
    averaged features), the whole convolution is one block-Toeplitz matrix over the flattened steps: the
    same multiply-adds in a single GEMM, without the per-tap slicing and in-place adds, whose backward
    copies cost DAAN about 4 % of a training step on CPU.
    """
    b, t, d_in = x.shape
    (kernel,), (dilation,) = conv.kernel_size, conv.dilation
    weight = conv.weight.transpose(1, 2).reshape(len(conv.weight), -1)  # (D_out, k * D_in), tap-major
    centre = (kernel - 1) // 2
    if dilation == 1 and 2 <= t <= centre + 1:
        # output step s sees input steps 0..t-1 through taps centre-s .. centre-s+t-1: a slice of the
        # weight's columns (slices and a cat: no index_put in backward, which syncs on CUDA)
        rows = [weight[:, (centre - s) * d_in : (centre - s + t) * d_in] for s in range(t)]
        return F.linear(x.reshape(b, -1), torch.cat(rows), conv.bias.repeat(t)).view(b, t, -1)
    taps = weight.unflatten(1, (kernel, -1))  # (D_out, k, D_in), a view
    out = F.linear(x, taps[:, centre], conv.bias)
    for j in range(kernel):
        shift = (j - centre) * dilation  # out[:, s] += W_j x[:, s + shift]
        if shift == 0 or abs(shift) >= t:  # taps shifted by >= T steps only ever see zero padding
            continue
        part = F.linear(x[:, max(shift, 0) : t + min(shift, 0)], taps[:, j])
        out[:, max(-shift, 0) : t - max(shift, 0)] += part
    return out


class FastTCN(TCN):
    """``TCN`` with the convolutions above; no mask (None) means no masking work at all."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        keep = None if mask is None else mask.unsqueeze(-1).to(x.dtype)
        for conv1, conv2 in self.blocks:
            y = x if keep is None else x * keep
            y = self.drop(self.act(conv_over_time(conv1, y)))
            y = self.drop(self.act(conv_over_time(conv2, y if keep is None else y * keep)))
            x = x + y
        return x


# ---- attention ------------------------------------------------------------------------------------------

FEW_TOKENS = 3  # up to this many queries and keys, broadcasting beats batched GEMM (measured on CPU)


def attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q @ k^T over (..., N, d). With a few tokens (averaged features: 2), torch's batched GEMM is all
    per-matrix overhead (B x heads products of 2 x d x 2); a broadcast multiply-sum is ~4x faster, fwd+bwd."""
    if q.shape[-2] <= FEW_TOKENS and k.shape[-2] <= FEW_TOKENS:
        return (q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1)
    return q @ k.transpose(-1, -2)


def attention_mix(attn: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """attn @ v for (..., N, M) weights and (..., M, d) values, broadcast for a few tokens as above."""
    if attn.shape[-2] <= FEW_TOKENS and attn.shape[-1] <= FEW_TOKENS:
        return (attn.unsqueeze(-1) * v.unsqueeze(-3)).sum(-2)
    return attn @ v


class FastAttention(Attention):
    """AVCA's attention with the few-token products."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        attn = torch.softmax(attention_scores(q, k) * self.scale, dim=-1)
        return self.to_out(attention_mix(attn, v).transpose(1, 2).reshape(b, n, -1))


class FastQDMA(QDMA):
    """QDMA with the few-token products, and a closed form when every query sees the same 2 keys."""

    def forward(self, x: torch.Tensor, modality: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        """As ``QDMA.forward``; ``allowed`` None: every query sees every key (no masking work)."""
        b, n, _ = x.shape
        h, dh = self.heads, self.dim_head
        coef = self.coefficient(modality, x.dtype)
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
        """The attention when every query sees the same 2 keys (averaged features), in closed form,
        (B, N, h, dh): softmax over 2 scores is sigmoid(s_0 - s_1), and s_0 - s_1 = q . W_k (x_0 - x_1)
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


# ---- positives and negatives in one forward -----------------------------------------------------------


class GroupedEmbeddingNet(EmbeddingNet):
    """``EmbeddingNet`` on independent batches stacked along dim 0 (a step's positives, then its negatives).

    Every layer runs once on all rows, but each batch (``sizes``) gets its own BatchNorm statistics, in
    row order, exactly as if the net had been called once per batch. One GEMM of 2B rows instead of two of
    B is cheaper on a CPU, mostly in the weight gradient.
    """

    def forward(self, x: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, nn.BatchNorm1d) and sizes is not None and len(sizes) > 1:
                x = torch.cat([layer(part) for part in x.split(list(sizes))])
            else:
                x = layer(x)
        return x


class GroupedHeads(Heads):
    """``Heads`` on ``groups`` stacked batches (positives first), each with its own BatchNorm statistics."""

    def stacked(self, fused: Fused, w: torch.Tensor, groups: int) -> Branch:
        """``Heads.forward`` on the stacked batches: every net sees them in the same order (the decoder's
        calls as one call, rows in that order), the reconstructors the positives only."""
        sizes = [len(w) // groups] * groups
        theta_w = self.W_proj(w, sizes)
        theta_v, theta_a = self.V_proj(fused.z_v, sizes), self.A_proj(fused.z_a, sizes)
        rec_v, rec_a = self.V_rec(theta_v[: sizes[0]]), self.A_rec(theta_a[: sizes[0]])
        if self.rec_projection_pass:  # the AVCA code's A_proj(rec_a), V_proj(rec_v): outputs unused
            with torch.no_grad():
                self.A_proj(rec_a)
                self.V_proj(rec_v)
        rho_w, rho_a, rho_v = self._shared_decoder((theta_w, theta_a, theta_v), groups)
        enc_a, enc_v, phi_a, phi_v, _, _ = fused
        return Branch(
            enc_a, enc_v, phi_a, phi_v, theta_a, theta_v, theta_w, rho_a, rho_v, rho_w, rec_a, rec_v
        )

    def _shared_decoder(self, inputs: Sequence[torch.Tensor], groups: int) -> tuple[torch.Tensor, ...]:
        """The decoder D on every input in one call, its BatchNorm fed batch by batch in row order: each
        input's groups in turn (theta_w, theta_w-, theta_a, theta_a-, theta_v, theta_v-, as ``Heads.forward``
        calls it), so running statistics match call for call. Each input's output is a view of the result."""
        sizes = [len(t) // groups for t in inputs for _ in range(groups)]
        return self.D(torch.cat(list(inputs)), sizes).split([len(t) for t in inputs])


def encode_steps(net: GroupedEmbeddingNet, x: torch.Tensor, mask: torch.Tensor | None, groups: int = 1):
    """``layers.encode_steps`` for ``groups`` stacked batches, each with its own BatchNorm statistics."""
    if x.dim() == 2:
        return net(x, [len(x) // groups] * groups)
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    rows = net(x[mask], mask.reshape(groups, -1).sum(1).tolist())
    out = rows.new_zeros(*x.shape[:2], rows.shape[-1])
    out[mask] = rows
    return out


class FastAVCA(AVCA):
    def fuse(self, a, v, a_mask=None, v_mask=None, groups: int = 1) -> Fused:
        """``groups`` equal batches stacked on dim 0, each with its own BN statistics (the transformer is
        per sample, so only BN needs the grouping)."""
        sizes = [len(a) // groups] * groups
        phi_a = self.A_enc(masked_mean(a, a_mask), sizes)
        phi_v = self.V_enc(masked_mean(v, v_mask), sizes)
        out = self.cross_attention(torch.stack([phi_a, phi_v], dim=1) + self.pos_emb1D)
        return Fused(phi_a, phi_v, phi_a, phi_v, phi_a + out[:, 0], phi_v + out[:, 1])


class FastDAAN(DAAN):
    def fuse(self, a, v, a_mask=None, v_mask=None, groups: int = 1) -> Fused:
        """``DAAN.fuse`` for ``groups`` stacked batches. Only the encoders' BatchNorm mixes samples, so the
        batches share every other op. Unmasked features build no all-true masks: every step is valid, and
        masking or pooling with them would be wasted work (averaged features attending to all tokens take
        QDMA's closed form)."""
        raw_a = encode_steps(self.A_enc, a, a_mask, groups)
        raw_v = encode_steps(self.V_enc, v, v_mask, groups)
        enc_a, enc_v = raw_a, raw_v
        if raw_a.dim() == 2:  # averaged features: one token per modality
            enc_a, enc_v = raw_a.unsqueeze(1), raw_v.unsqueeze(1)
            a_mask = v_mask = None
        b, ta, tv = enc_a.shape[0], enc_a.shape[1], enc_v.shape[1]
        if self.tcn_mode == "time":
            h_a = self.tcns[0](enc_a, a_mask) + self.pos_emb1D[0]
            h_v = self.tcns[1](enc_v, v_mask) + self.pos_emb1D[1]
            x = torch.cat([h_a, h_v], dim=1)
        elif self.tcn_mode == "tokens":
            x = self.tcns[0](torch.cat([enc_a + self.pos_emb1D[0], enc_v + self.pos_emb1D[1]], dim=1), None)
        else:
            x = torch.cat([enc_a + self.pos_emb1D[0], enc_v + self.pos_emb1D[1]], dim=1)
        modality = (torch.arange(ta + tv, device=x.device) >= ta).long()
        allowed = None
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
        return Fused(raw_a, raw_v, masked_mean(raw_a, a_mask), masked_mean(raw_v, v_mask), z_a, z_v)


def forward_pairs(model: FastAVCA | FastDAAN, a, v, w, a_mask=None, v_mask=None) -> Pairs:
    """``layers.forward_pairs`` in one forward of both halves (``groups=2``): the same outputs, gradients
    and BatchNorm running statistics as one call per half, in half the operations."""
    both = model.heads.stacked(model.fuse(a, v, a_mask, v_mask, groups=2), w, groups=2)
    positive, negative = both.split(2)
    return Pairs(positive, negative, [both])


# ---- losses ---------------------------------------------------------------------------------------------


def triplets(rows: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], margin: float) -> torch.Tensor:
    """``losses.triplet`` of each (anchor, positive, negative) row of equal-shape (B, D) tensors, in one
    stacked pass: returns the k batch means, shape (k,)."""
    a, p, n = (torch.stack(list(t)) for t in zip(*rows, strict=True))
    return (margin + F.pairwise_distance(a, p) - F.pairwise_distance(a, n)).clamp_min(0).mean(-1)


def avca_loss(p: Branch, n: Branch, w: torch.Tensor, margin: float) -> dict[str, torch.Tensor]:
    """``losses.avca_loss`` with its ten triplet terms as two stacked passes (one per tensor shape)."""
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
    """``losses.cosine_matrix`` over (..., B, D), with the one-matmul Gram backward."""
    return _Gram.apply(F.normalize(x, dim=-1))


def alignment_loss(kind: str, p: Branch, n: Branch, temperature: float) -> torch.Tensor:
    """``losses.alignment_loss``; ``hyper_mse`` computes its four similarity matrices as one batch."""
    if kind != "hyper_mse":
        return losses.alignment_loss(kind, p, n, temperature)
    sims = cosine_matrix(torch.stack([p.phi_v, n.phi_v, p.phi_a, n.phi_a]))
    per_side = F.mse_loss(sims[:2], sims[2:], reduction="none").mean((1, 2))
    return per_side[0] + per_side[1]


def unimodal_triplet(p: Branch, n: Branch, modality: str, margin: float) -> torch.Tensor:
    """``losses.unimodal_triplet`` in one stacked pass."""
    t, tn = (p.theta_a, n.theta_a) if modality == "audio" else (p.theta_v, n.theta_v)
    return triplets([(p.theta_w, t, tn), (t, p.theta_w, n.theta_w)], margin).sum()


# ---- the switch -----------------------------------------------------------------------------------------

TWINS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Dropout: Dropout,
    TCN: FastTCN,
    Attention: FastAttention,
    QDMA: FastQDMA,
    EmbeddingNet: GroupedEmbeddingNet,
    Heads: GroupedHeads,
    AVCA: FastAVCA,
    DAAN: FastDAAN,
}


def enable(model: nn.Module) -> nn.Module:
    """Give every module of a plain AVCA or DAAN its fast twin's class, in place (parameters untouched)."""
    if type(model) not in (AVCA, DAAN):
        raise TypeError(
            f"fast paths exist for AVCA and DAAN, not {type(model).__name__}: use fast_paths=false"
        )
    for module in model.modules():
        twin = TWINS.get(type(module))
        if twin is not None:
            module.__class__ = twin
    return model


@dataclass(frozen=True)
class Paths:
    """What a training step calls: the model's preparation, the pair forward and the losses."""

    prepare: Callable[[nn.Module], nn.Module]
    forward_pairs: Callable[..., Pairs]
    avca_loss: Callable[..., dict[str, torch.Tensor]]
    alignment_loss: Callable[..., torch.Tensor]
    unimodal_triplet: Callable[..., torch.Tensor]


def _as_is(model: nn.Module) -> nn.Module:
    return model


PLAIN = Paths(_as_is, layers.forward_pairs, losses.avca_loss, losses.alignment_loss, losses.unimodal_triplet)
FAST = Paths(enable, forward_pairs, avca_loss, alignment_loss, unimodal_triplet)


def select(enabled: bool, model: nn.Module) -> Paths:
    """The one switch: the fast paths when enabled and ``model`` has them (AVCA, DAAN), else the plain
    definitions (a model without fast twins trains plainly whatever the switch says)."""
    return FAST if enabled and type(model) in (AVCA, DAAN) else PLAIN
