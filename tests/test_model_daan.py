"""DAAN's reconstructed parts: CSGM per-sample gradient modulation checked numerically by hand, QDMA's
differential attention (beta = 0 is plain attention), and every config switch training a step on both
paths (the fast ones are compared with the plain ones in test_model_fast.py)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from model.config import CSGMConfig, TrainConfig
from model.csgm import CSGM
from model.daan import QDMA
from model.losses import avca_loss
from model.trainer import StageTrainer
from tests.model_helpers import SMALL_AVCA, tiny_gzsl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**train) -> TrainConfig:
    base = {
        "model": "daan",
        "avca": SMALL_AVCA,
        "epochs": 1,
        "batches_per_epoch": 2,
        "batch_size": 8,
        "device": "cpu",
    }
    base.update(train)
    return TrainConfig.from_dict(base)


@pytest.fixture(scope="module")
def tiny_data():
    return tiny_gzsl(seed=3)


@pytest.fixture(scope="module")
def tiny_temporal():
    return tiny_gzsl(seed=4, temporal_steps=4)


def hand_k(s_a: np.ndarray, s_v: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """docs/daan.md step 4, written out per sample."""
    k_a, k_v = np.ones_like(s_a), np.ones_like(s_v)
    for i in range(len(s_a)):
        rho = s_v[i] / s_a[i]
        if rho > 1:
            k_v[i] = 1 - math.tanh(alpha * rho)
        else:
            k_a[i] = 1 - math.tanh(alpha / rho)
    return k_a, k_v


def pair_scores_by_hand(theta: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray) -> np.ndarray:
    d_pos = np.linalg.norm(theta - w_pos, axis=1)
    d_neg = np.linalg.norm(theta - w_neg, axis=1)
    return np.exp(-d_pos) / (np.exp(-d_pos) + np.exp(-d_neg))


@pytest.mark.parametrize("fast_paths", [False, True])
def test_csgm_scales_each_samples_encoder_gradient_exactly(tiny_data, fast_paths):
    """On both paths: the positives and negatives as two branches (plain) or one stacked (fast)."""
    cfg = tiny_config(
        fast_paths=fast_paths,
        daan={"csgm": {"mode": "sample", "terms": "optimisation", "alpha": 0.5}, "align": "off"},
    )
    trainer = StageTrainer(cfg, tiny_data, "train", 1)
    model = trainer.model.double()
    model.train()
    pairs = trainer.sampler.epoch(1, 5, torch.Generator().manual_seed(0))
    idx = torch.cat([pairs.positive[0], pairs.negative[0]])  # 5 positives, then their 5 negatives
    a, v, w, *_ = (t.double() if t is not None and t.is_floating_point() else t for t in trainer.gather(idx))
    sides = trainer.paths.forward_pairs(model, a, v, w)
    p, n = sides.positive, sides.negative
    loss = avca_loss(p, n, w[:5], 1.0)["total"]
    enc_w = model.A_enc[0].weight  # first layer of the audio encoder
    vis_w = model.V_enc[0].weight
    head_w = model.heads.W_proj[0].weight  # not an encoder: must be untouched
    outs_a, outs_v = [b.enc_a for b in sides.computed], [b.enc_v for b in sides.computed]
    *g, g_head = torch.autograd.grad(loss, [*outs_a, *outs_v, head_w], retain_graph=True)
    g_a, g_v = g[: len(outs_a)], g[len(outs_a) :]

    s_a = pair_scores_by_hand(
        p.theta_a.detach().numpy(), p.theta_w.detach().numpy(), n.theta_w.detach().numpy()
    )
    s_v = pair_scores_by_hand(
        p.theta_v.detach().numpy(), p.theta_w.detach().numpy(), n.theta_w.detach().numpy()
    )
    k_a, k_v = hand_k(s_a, s_v, alpha=0.5)
    assert (k_a < 1).any() or (k_v < 1).any()

    def scaled(k: np.ndarray, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Pair i's k on its positive (row i) and its negative (row i of the negatives, or 5 + i)."""
        return [torch.from_numpy(np.tile(k, len(gr) // 5))[:, None] * gr for gr in grads]

    def encoder_grad(outs, weight, grads):
        return torch.autograd.grad(outs, weight, grads, retain_graph=True)[0]

    expect_audio, expect_visual = (
        encoder_grad(outs_a, enc_w, scaled(k_a, g_a)),
        encoder_grad(outs_v, vis_w, scaled(k_v, g_v)),
    )
    unmod_audio, unmod_visual = encoder_grad(outs_a, enc_w, g_a), encoder_grad(outs_v, vis_w, g_v)

    csgm = CSGM(cfg.daan.csgm)
    s_a_t, s_v_t = csgm.scores(p, n)
    mod = csgm.coefficients(s_a_t, s_v_t, 0.0, 0.0)
    np.testing.assert_allclose(mod.k_a.numpy(), k_a, rtol=1e-10)
    np.testing.assert_allclose(mod.k_v.numpy(), k_v, rtol=1e-10)
    CSGM.apply(sides.computed, mod)
    model.zero_grad()
    loss.backward()
    torch.testing.assert_close(enc_w.grad, expect_audio)
    torch.testing.assert_close(vis_w.grad, expect_visual)
    torch.testing.assert_close(head_w.grad, g_head)  # projections/decoders get the unmodulated gradient
    # and modulation really changed the encoder gradient of the modulated modality
    changed = enc_w.grad if (k_a < 1).any() else vis_w.grad
    assert not torch.allclose(changed, unmod_audio if (k_a < 1).any() else unmod_visual)


def test_csgm_convergence_rate_and_combinations_by_hand():
    csgm = CSGM(CSGMConfig(mode="sample", terms="both", combine="product", gamma=1.0, ema=0.9, alpha=0.3))
    assert csgm.convergence(2.0, 4.0) == (0.0, 0.0)  # first step: no previous EMA
    r_a, r_v = csgm.convergence(1.0, 4.0)
    assert r_a == pytest.approx((2.0 - (0.9 * 2.0 + 0.1 * 1.0)) / 2.0) and r_v == 0.0
    s_a, s_v = torch.tensor([0.6, 0.9]), torch.tensor([0.8, 0.5])
    mod = csgm.coefficients(s_a, s_v, r_a, r_v)
    c_a, c_v = s_a.numpy() * (1 + r_a), s_v.numpy() * (1 + r_v)
    k_a, k_v = hand_k(c_a, c_v, 0.3)
    np.testing.assert_allclose(mod.k_a.numpy(), k_a, rtol=1e-6)
    np.testing.assert_allclose(mod.k_v.numpy(), k_v, rtol=1e-6)
    # convergence only: one coefficient per modality for every sample
    conv = CSGM(CSGMConfig(terms="convergence", alpha=0.3)).coefficients(s_a, s_v, 0.2, 0.0)
    rho = 1.0 / 1.2
    assert torch.allclose(conv.k_a, torch.full((2,), 1 - math.tanh(0.3 / rho)))
    assert torch.all(conv.k_v == 1)
    # mix: eta s + (1 - eta) softmax(r)
    mix = CSGM(CSGMConfig(terms="both", combine="mix", eta=0.5, alpha=0.3)).coefficients(s_a, s_v, 0.2, 0.0)
    za, zv = math.exp(0.2), 1.0
    ca = 0.5 * s_a.numpy() + 0.5 * za / (za + zv)
    cv = 0.5 * s_v.numpy() + 0.5 * zv / (za + zv)
    k_a, k_v = hand_k(ca, cv, 0.3)
    np.testing.assert_allclose(mix.k_a.numpy(), k_a, rtol=1e-6)
    np.testing.assert_allclose(mix.k_v.numpy(), k_v, rtol=1e-6)


def test_csgm_batch_mode_is_ogm_ge_one_coefficient_per_modality():
    s_a, s_v = torch.tensor([0.6, 0.9, 0.7]), torch.tensor([0.8, 0.95, 0.9])
    mod = CSGM(CSGMConfig(mode="batch", terms="optimisation", alpha=0.5)).coefficients(s_a, s_v, 0.0, 0.0)
    rho = float(s_v.mean() / s_a.mean())
    assert rho > 1
    assert torch.allclose(mod.k_v, torch.full((3,), 1 - math.tanh(0.5 * rho)))
    assert torch.all(mod.k_a == 1)


def test_csgm_all_classes_score():
    csgm = CSGM(CSGMConfig(score="all_classes"))
    theta = torch.tensor([[0.0, 0.0], [1.0, 1.0]])

    class B:  # minimal branch stand-in
        theta_a = theta
        theta_v = theta + 0.5
        theta_w = torch.zeros(2, 2)

    classes = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    s_a, _ = csgm.scores(B, B, classes, torch.tensor([0, 2]))
    d = torch.cdist(theta, classes)
    expect = torch.softmax(-d, dim=1)[[0, 1], [0, 2]]
    assert torch.allclose(s_a, expect)


def test_qdma_beta_zero_is_plain_attention_and_beta_subtracts():
    torch.manual_seed(0)
    attn = QDMA(
        dim=8,
        heads=2,
        dim_head=4,
        dropout=0.0,
        beta=0.0,
        learnable_lambda=False,
        subtract_on="all",
        head_norm=False,
    )
    x = torch.randn(3, 4, 8)
    modality = torch.tensor([0, 0, 1, 1])
    allowed = torch.ones(3, 4, 4, dtype=torch.bool)
    out = attn(x, modality, allowed)
    # plain multi-head attention with the first query/key halves
    q = attn.to_q(x).reshape(3, 4, 2, 2, 4)[:, :, :, 0].transpose(1, 2)
    k = attn.to_k(x).reshape(3, 4, 2, 2, 4)[:, :, :, 0].transpose(1, 2)
    v = attn.to_v(x).reshape(3, 4, 2, 4).transpose(1, 2)
    ref = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v
    ref = attn.to_out(ref.transpose(1, 2).reshape(3, 4, 8))
    torch.testing.assert_close(out, ref)
    attn.beta = 0.5
    q2 = attn.to_q(x).reshape(3, 4, 2, 2, 4)[:, :, :, 1].transpose(1, 2)
    k2 = attn.to_k(x).reshape(3, 4, 2, 2, 4)[:, :, :, 1].transpose(1, 2)
    a2 = torch.softmax(q2 @ k2.transpose(-1, -2) / 2.0, dim=-1)
    diff = (torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) - 0.5 * a2) @ v
    torch.testing.assert_close(attn(x, modality, allowed), attn.to_out(diff.transpose(1, 2).reshape(3, 4, 8)))
    # cross-only mask: a query attends to the keys of the other modality only
    attn.beta = 0.0
    cross = allowed & (modality[:, None] != modality[None, :])
    logits = q @ k.transpose(-1, -2) / 2.0
    logits[..., :2, :2] = float("-inf")
    logits[..., 2:, 2:] = float("-inf")
    ref = attn.to_out((torch.softmax(logits, dim=-1) @ v).transpose(1, 2).reshape(3, 4, 8))
    torch.testing.assert_close(attn(x, modality, cross), ref)


def test_qdma_subtract_on_visual_leaves_audio_keys_plain():
    torch.manual_seed(1)
    mk = dict(dim=8, heads=1, dim_head=4, dropout=0.0, learnable_lambda=False, head_norm=False)
    a = QDMA(beta=0.7, subtract_on="visual", **mk)
    b = QDMA(beta=0.0, subtract_on="all", **mk)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 2, 8)
    audio_only = torch.tensor([0, 0])  # no visual keys: nothing is subtracted
    allowed = torch.ones(2, 2, 2, dtype=torch.bool)
    torch.testing.assert_close(a(x, audio_only, allowed), b(x, audio_only, allowed))
    assert not torch.allclose(a(x, torch.tensor([0, 1]), allowed), b(x, torch.tensor([0, 1]), allowed))


SWITCHES = [
    {"daan": {"qdma": {"beta": 0.0}}},
    {"daan": {"qdma": {"learnable_lambda": True}}},
    {"daan": {"qdma": {"subtract_on": "visual", "keys": "cross", "head_norm": True}}},
    {"daan": {"tcn": {"mode": "off"}}},
    {"daan": {"tcn": {"mode": "tokens", "levels": 3}}},
    {"daan": {"csgm": {"mode": "off"}}},
    {"daan": {"csgm": {"mode": "batch", "gradient_noise": True}}},
    {"daan": {"csgm": {"terms": "convergence"}}},
    {"daan": {"csgm": {"terms": "both", "combine": "mix", "score": "all_classes"}}},
    {"daan": {"csgm": {"start_epoch": 1}}},
    {"daan": {"align": "infonce"}},
    {"daan": {"align": "off"}},
    {"decision_rule": "mean"},
    {"decision_rule": "sum_dist"},
    {"model": "avca", "avca": {**SMALL_AVCA, "pos_emb_trainable": True, "extra_embedding_pass": True}},
    {"avca": {**SMALL_AVCA, "extra_embedding_pass": True, "rec_projection_pass": True}},
]


@pytest.mark.parametrize("fast_paths", [True, False])
@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: str(s).replace(" ", ""))
def test_every_switch_trains_and_evaluates(tiny_data, switch, fast_paths):
    cfg = tiny_config(**switch, fast_paths=fast_paths)
    trainer = StageTrainer(cfg, tiny_data, "train", 1)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    logs = trainer.train_epoch(0)
    assert math.isfinite(logs["loss"])
    csgm_on = cfg.model == "daan" and cfg.daan.csgm.mode != "off" and cfg.daan.csgm.start_epoch == 0
    assert ("k_audio" in logs) == csgm_on and logs["csgm_active"] == float(csgm_on)
    if cfg.model == "daan" and cfg.daan.align != "off":
        assert "l_align" in logs
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("A_enc") for k in changed) and any(k.startswith("heads") for k in changed)
    if cfg.model == "avca" and cfg.avca.pos_emb_trainable:
        assert "pos_emb1D" in changed
    scores, curve = trainer.evaluate(tiny_data.splits["val"])
    assert len(curve) == 16 and 0 <= scores.hm <= 1


def test_optimiser_step_matches_reference_adam(tiny_data):
    """The trainer's (fused) Adam is a speed choice only: the same update as torch's per-parameter loop."""
    trainer = StageTrainer(tiny_config(weight_decay=1e-3), tiny_data, "train", 1)
    reference = copy.deepcopy(trainer.model)
    pairs = [
        (p, q)
        for p, q in zip(trainer.model.parameters(), reference.parameters(), strict=True)
        if p.requires_grad
    ]
    ref_opt = torch.optim.Adam([q for _, q in pairs], lr=1e-3, weight_decay=1e-3, foreach=False, fused=False)
    start = [p.detach().clone() for p, _ in pairs]
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in pairs:
            g = torch.randn(p.shape, generator=gen) * 10 ** torch.empty(p.shape).uniform_(
                -6, 0, generator=gen
            )
            p.grad, q.grad = g.clone(), g
        trainer.optimizer.step()
        ref_opt.step()
    for (p, q), p0 in zip(pairs, start, strict=True):
        assert not torch.equal(p, p0)  # the steps did move every parameter
        torch.testing.assert_close(p, q, atol=1e-8, rtol=1e-6)


def test_avca_positional_embedding_frozen_by_default(tiny_data):
    trainer = StageTrainer(tiny_config(model="avca"), tiny_data, "train", 1)
    before = trainer.model.pos_emb1D.detach().clone()
    trainer.train_epoch(0)
    assert torch.equal(trainer.model.pos_emb1D, before)


@pytest.mark.parametrize("fast_paths", [True, False])
@pytest.mark.parametrize("tcn", ["time", "off"])
def test_daan_temporal_features_with_masks(tiny_temporal, tcn, fast_paths):
    cfg = tiny_config(daan={"tcn": {"mode": tcn}}, fast_paths=fast_paths)
    trainer = StageTrainer(cfg, tiny_temporal, "train", 1)
    assert math.isfinite(trainer.train_epoch(0)["loss"])
    val = tiny_temporal.splits["val"]
    # padded steps must not change the embedding: append padding and compare
    model = trainer.model.eval()
    a, v, am, vm = val.audio[:6], val.visual[:6], val.audio_mask[:6], val.visual_mask[:6]

    def pad(t: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        extra = torch.randn(t.shape[0], 2, t.shape[2])
        return torch.cat([t, extra], 1), torch.cat([m, torch.zeros(m.shape[0], 2, dtype=torch.bool)], 1)

    (a2, am2), (v2, vm2) = pad(a, am), pad(v, vm)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(a, v, am, vm), model.embed(a2, v2, am2, vm2))
        # no masks means every step is valid: the same as all-true masks (which take the masking path)
        all_valid = torch.ones_like(am), torch.ones_like(vm)
        torch.testing.assert_close(model.embed(a, v), model.embed(a, v, *all_valid))
        assert not torch.allclose(model.embed(a, v)[1], model.embed(a, v, am, vm)[1])


def test_tcn_mode_must_match_feature_kind(tiny_data, tiny_temporal):
    with pytest.raises(ValueError, match="needs temporal features"):
        StageTrainer(tiny_config(daan={"tcn": {"mode": "time"}}), tiny_data, "train", 1)
    with pytest.raises(ValueError, match="for averaged features"):
        StageTrainer(tiny_config(daan={"tcn": {"mode": "tokens"}}), tiny_temporal, "train", 1)


def test_avca_rejects_fused_decision_rule():
    with pytest.raises(Exception, match="visual"):
        tiny_config(model="avca", decision_rule="mean")
