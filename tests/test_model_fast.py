"""Every CPU fast path (model/fast.py) against the plain definition it replaces: values and gradients in
float64, BatchNorm running statistics, and a whole training step (losses and CSGM hooks included)."""

from __future__ import annotations

import copy
from dataclasses import fields

import pytest
import torch
from torch import nn

from model import fast, layers, losses
from model.avca import AVCA, Attention
from model.config import TrainConfig
from model.daan import DAAN, QDMA, TCN, over_time
from model.layers import Branch
from model.trainer import StageTrainer, build_model
from tests.model_helpers import SMALL_AVCA, tiny_gzsl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**train) -> TrainConfig:
    base = {"model": "daan", "avca": SMALL_AVCA, "batches_per_epoch": 2, "batch_size": 8, "device": "cpu"}
    base.update(train)
    daan = base.get("daan", {})
    base["daan"] = {**daan, "tcn": {"dropout": 0.0, **daan.get("tcn", {})}}  # no dropout anywhere
    return TrainConfig.from_dict(base)


@pytest.fixture(scope="module")
def averaged():
    return tiny_gzsl()


@pytest.fixture(scope="module")
def temporal():
    return tiny_gzsl(seed=4, temporal_steps=4)


def plain_and_fast(module: nn.Module) -> tuple[nn.Module, nn.Module]:
    """A float64 module and its fast twin holding a copy of the same parameters."""
    plain = module.double()
    twin = copy.deepcopy(plain)
    for m in twin.modules():
        if type(m) in fast.TWINS:
            m.__class__ = fast.TWINS[type(m)]
    return plain, twin


def assert_same_gradients(got: torch.Tensor, want: torch.Tensor, got_leaves, want_leaves) -> None:
    g = torch.randn_like(want)
    grad = dict(retain_graph=True, allow_unused=True, materialize_grads=True)
    got_grads = torch.autograd.grad(got, list(got_leaves), g, **grad)
    want_grads = torch.autograd.grad(want, list(want_leaves), g, **grad)
    assert any(w.abs().sum() > 0 for w in want_grads)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b)


# ---- the switch -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["avca", "daan"])
def test_enable_swaps_every_module_with_a_twin_and_keeps_the_parameters(averaged, model_name):
    torch.manual_seed(0)
    plain = build_model(tiny_config(model=model_name), averaged)
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    model = fast.enable(plain)
    assert model is plain and type(model) is {"avca": fast.FastAVCA, "daan": fast.FastDAAN}[model_name]
    assert not [type(m) for m in model.modules() if type(m) in fast.TWINS]  # nothing plain left behind
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(TypeError, match="fast_paths=false"):
        fast.enable(nn.Linear(2, 2))


def test_select_is_the_one_switch(averaged):
    daan = build_model(tiny_config(), averaged)
    assert fast.select(True, daan) is fast.FAST and fast.select(False, daan) is fast.PLAIN
    assert fast.select(True, nn.Linear(2, 2)) is fast.PLAIN  # a model without fast twins trains plainly
    assert fast.PLAIN.avca_loss is losses.avca_loss and fast.PLAIN.forward_pairs is layers.forward_pairs
    assert TrainConfig().fast_paths  # the default: measured faster on CPU (docs/fast-paths.md)


# ---- TCN ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 3, 9])
@pytest.mark.parametrize("dilation", [1, 2, 4])
@pytest.mark.parametrize("kernel", [3, 5])
def test_conv_over_time_equals_conv1d(length, dilation, kernel):
    """Both fast paths (one block-Toeplitz GEMM for dilation 1 and short sequences, a GEMM per tap
    otherwise) against torch's Conv1d: output, input gradient, weight and bias gradients."""
    torch.manual_seed(length * 100 + dilation * 10 + kernel)
    conv = nn.Conv1d(6, 6, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2).double()
    x = torch.randn(4, length, 6, dtype=torch.float64, requires_grad=True)
    got, want = fast.conv_over_time(conv, x), over_time(conv, x)
    torch.testing.assert_close(got, want)
    leaves = (x, conv.weight, conv.bias)
    assert_same_gradients(got, want, leaves, leaves)


@pytest.mark.parametrize("length", [2, 6])
def test_fast_tcn_equals_tcn_with_and_without_padding(length):
    torch.manual_seed(length)
    plain, twin = plain_and_fast(TCN(6, levels=3, kernel=3, dropout=0.0))
    x = torch.randn(3, length, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, length, dtype=torch.bool)
    torch.testing.assert_close(twin(x, None), plain(x, mask))  # no mask: no masking work, same function
    mask[0, -1] = mask[2, 1:] = False
    got, want = twin(x, mask), plain(x, mask)
    torch.testing.assert_close(got, want)
    assert_same_gradients(got, want, [x, *twin.parameters()], [x, *plain.parameters()])


# ---- attention ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", [1, 2, 3, 5])
def test_attention_products_equal_matmul_for_any_token_count(tokens):
    q, k, v = torch.randn(3, 2, tokens, 4), torch.randn(3, 2, 2, 4), torch.randn(3, 2, 2, 4)
    torch.testing.assert_close(fast.attention_scores(q, k), q @ k.transpose(-1, -2))
    attn = torch.softmax(torch.randn(3, 2, tokens, 2), dim=-1)
    torch.testing.assert_close(fast.attention_mix(attn, v), attn @ v)


@pytest.mark.parametrize("tokens", [2, 5])
def test_fast_avca_attention_equals_attention(tokens):
    torch.manual_seed(tokens)
    plain, twin = plain_and_fast(Attention(8, heads=2, dim_head=4, dropout=0.0))
    x = torch.randn(3, tokens, 8, dtype=torch.float64, requires_grad=True)
    got, want = twin(x), plain(x)
    torch.testing.assert_close(got, want)
    assert_same_gradients(got, want, [x, *twin.parameters()], [x, *plain.parameters()])


@pytest.mark.parametrize("tokens", [2, 3, 4])
@pytest.mark.parametrize("subtract_on", ["all", "visual"])
@pytest.mark.parametrize("learnable_lambda", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_fast_qdma_equals_qdma(tokens, subtract_on, learnable_lambda, masked):
    """Unmasked 2 tokens take the closed form (sigmoid of one key difference); the rest the general path
    with few-token products. Either way the plain equation's outputs and gradients."""
    torch.manual_seed(tokens)
    plain, twin = plain_and_fast(QDMA(8, 2, 4, 0.0, 0.5, learnable_lambda, subtract_on, head_norm=True))
    x = torch.randn(3, tokens, 8, dtype=torch.float64, requires_grad=True)
    modality = (torch.arange(tokens) >= tokens // 2).long()
    allowed = torch.ones(3, tokens, tokens, dtype=torch.bool)
    if masked:
        allowed[0, :, -1] = False  # sample 0's last token is padding
        allowed[1] &= modality[:, None] != modality[None, :]  # sample 1 attends across modalities only
    got = twin(x, modality, allowed if masked else None)
    want = plain(x, modality, allowed)
    torch.testing.assert_close(got, want)
    assert_same_gradients(got, want, [x, *twin.parameters()], [x, *plain.parameters()])


# ---- positives and negatives in one forward -------------------------------------------------------------

SWITCHES = [
    {"model": "avca"},
    {"model": "avca", "avca": {**SMALL_AVCA, "rec_projection_pass": True}},
    {"model": "daan"},
    {"model": "daan", "daan": {"tcn": {"mode": "off"}, "qdma": {"keys": "cross"}}},
    {"model": "daan", "daan": {"tcn": {"levels": 3}, "qdma": {"learnable_lambda": True}}},
    {"model": "daan", "daan": {"qdma": {"subtract_on": "visual", "head_norm": True, "keys": "all"}}},
]


def double_batch(trainer: StageTrainer, batch_size: int, seed: int):
    pairs = trainer.sampler.epoch(1, batch_size, torch.Generator().manual_seed(seed))
    batch = trainer.gather(torch.cat([pairs.positive[0], pairs.negative[0]]))
    return [t.double() if t is not None and t.is_floating_point() else t for t in batch]


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: str(s).replace(" ", ""))
@pytest.mark.parametrize("kind", ["averaged", "temporal"])
def test_stacked_pair_forward_equals_one_call_per_side(averaged, temporal, switch, kind):
    """``fast.forward_pairs`` (one forward of positives + negatives, per-side BatchNorm) against the plain
    pair forward (fusion per side, heads on both): the same outputs, gradients and BatchNorm running
    statistics, so the nets see their batches in the same order on both paths."""
    data = averaged if kind == "averaged" else temporal  # DAAN's TCN runs over the 2 tokens / over time
    trainer = StageTrainer(tiny_config(**switch, fast_paths=False), data, "train", 1)
    plain = trainer.model.double().train()
    twin = fast.enable(copy.deepcopy(plain))
    a, v, w, am, vm, _ = double_batch(trainer, 6, seed=1)
    got = fast.forward_pairs(twin, a, v, w, am, vm)
    want = layers.forward_pairs(plain, a, v, w, am, vm)
    for side, ref in ((got.positive, want.positive), (got.negative, want.negative)):
        for f in fields(Branch):
            if getattr(ref, f.name) is None:  # the negatives' reconstructions: computed on neither path
                assert getattr(side, f.name) is None, f.name
            else:
                torch.testing.assert_close(getattr(side, f.name), getattr(ref, f.name), msg=f.name)
    assert want.positive.rec_a is not None and want.negative.rec_a is None
    losses.avca_loss(got.positive, got.negative, w[:6], 1.0)["total"].backward()
    losses.avca_loss(want.positive, want.negative, w[:6], 1.0)["total"].backward()
    for (name, g), r in zip(twin.named_parameters(), plain.parameters(), strict=True):
        if g.requires_grad:
            torch.testing.assert_close(g.grad, r.grad, msg=name)
    for (name, g), r in zip(twin.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(g, r, msg=name)  # running means/vars, batches tracked
    # evaluation embeddings (BN in eval mode) and class embeddings
    twin.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(twin.embed(a, v, am, vm), plain.embed(a, v, am, vm))
        torch.testing.assert_close(twin.embed_classes(w), plain.embed_classes(w))


# ---- losses ---------------------------------------------------------------------------------------------


def random_sides(batch: int = 6, seed: int = 0) -> tuple[Branch, Branch, list[torch.Tensor]]:
    """Positives and negatives as views of stacked leaves, as ``fast.forward_pairs`` returns them
    (reconstructions for the positives only)."""
    dims = {"enc": 7, "phi": 7, "theta": 4, "rho": 5, "rec": 7}
    gen = torch.Generator().manual_seed(seed)
    leaves = {
        f.name: torch.randn(
            batch if f.name.startswith("rec_") else 2 * batch,
            dims[f.name.split("_")[0]],
            generator=gen,
            dtype=torch.float64,
        )
        for f in fields(Branch)
    }
    leaves = {k: v.requires_grad_() for k, v in leaves.items()}
    p, n = Branch(**leaves).split(2)
    return p, n, list(leaves.values())


@pytest.mark.parametrize("margin", [1.0, 3.0])  # 3: most triplets active, 1: a mix of active and clamped
def test_stacked_avca_loss_equals_one_call_per_term(margin):
    p, n, leaves = random_sides()
    w = torch.randn(6, 5, dtype=torch.float64)
    got, want = fast.avca_loss(p, n, w, margin), losses.avca_loss(p, n, w, margin)
    assert got.keys() == want.keys()
    for name in want:  # every term's own gradient, so a swapped pair inside one term is caught too
        torch.testing.assert_close(got[name], want[name], msg=name)
        assert_same_gradients(got[name], want[name], leaves, leaves)


@pytest.mark.parametrize("modality", ["audio", "visual"])
def test_stacked_unimodal_triplet_equals_its_two_terms(modality):
    p, n, leaves = random_sides(seed=1)
    got, want = fast.unimodal_triplet(p, n, modality, 1.0), losses.unimodal_triplet(p, n, modality, 1.0)
    torch.testing.assert_close(got, want)
    assert_same_gradients(got, want, leaves, leaves)


@pytest.mark.parametrize("kind", ["hyper_mse", "infonce"])
def test_batched_alignment_loss_equals_plain(kind):
    p, n, leaves = random_sides(seed=2)
    got, want = fast.alignment_loss(kind, p, n, 0.07), losses.alignment_loss(kind, p, n, 0.07)
    torch.testing.assert_close(got, want)
    assert_same_gradients(got, want, leaves, leaves)


def test_gram_backward_is_exact():
    """The Gram product's one-matmul backward ((G + G^T) x), against finite differences."""
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fast.cosine_matrix, (x,))
    torch.testing.assert_close(fast.cosine_matrix(x), torch.stack([losses.cosine_matrix(m) for m in x]))


# ---- dropout --------------------------------------------------------------------------------------------


def test_dropout_is_bernoulli_with_the_inverse_keep_scaling():
    """Another generator than torch's, so not the same masks as ``nn.Dropout``: the same distribution
    (tested statistically) and the same deterministic parts (scaling, gradient, eval and p = 0: exactly)."""
    torch.manual_seed(0)
    p = 0.3
    drop = fast.Dropout(p).train()
    x = torch.ones(200_000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    reference = (nn.Dropout(p).train()(torch.ones(200_000)) != 0).float().mean().item()
    assert abs(kept.float().mean().item() - 0.7) < 0.005  # 7 sigma of a Bernoulli(0.7) mean over 2e5 draws
    assert abs(kept.float().mean().item() - reference) < 0.007
    # neighbours are independent (each raw draw feeds four elements): both kept 0.49, one of 4 all 0.7^4
    assert abs((kept[1:] & kept[:-1]).float().mean().item() - 0.49) < 0.008
    assert abs(kept.view(-1, 4).all(1).float().mean().item() - 0.7**4) < 0.01
    threshold = round(p * 2**16)  # keep when a 16-bit uniform >= threshold: the scale is its exact inverse
    assert torch.equal(y[kept], torch.full_like(y[kept], 2**16 / (2**16 - threshold)))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask * scale)/dx is mask * scale
    assert torch.equal(drop.eval()(x), x) and torch.equal(fast.Dropout(0.0).train()(x), x)
    drop.train()
    masks = []
    for seed in (1, 1, 2):  # torch's seed decides the mask, as for nn.Dropout
        torch.manual_seed(seed)
        masks.append(drop(torch.ones(1000)) != 0)
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


# ---- a whole training step ------------------------------------------------------------------------------

STEP_SWITCHES = [
    {"model": "avca", "avca": {**SMALL_AVCA, "extra_embedding_pass": True, "rec_projection_pass": True}},
    {"model": "daan"},
    {"model": "daan", "avca": {**SMALL_AVCA, "extra_embedding_pass": True, "rec_projection_pass": True}},
    {"model": "daan", "daan": {"csgm": {"mode": "batch", "score": "all_classes"}, "align": "infonce"}},
    {"model": "daan", "daan": {"csgm": {"combine": "mix"}, "qdma": {"keys": "cross"}}},
]


@pytest.mark.parametrize("switch", STEP_SWITCHES, ids=lambda s: str(s).replace(" ", ""))
@pytest.mark.parametrize("kind", ["averaged", "temporal"])
def test_training_step_gradients_equal_on_both_paths(averaged, temporal, switch, kind):
    """``StageTrainer.step_on`` with fast_paths on and off, from the same weights (float64, no dropout):
    the same logged losses and CSGM coefficients, parameter gradients and BatchNorm statistics."""
    data = averaged if kind == "averaged" else temporal
    trainers = [StageTrainer(tiny_config(**switch, fast_paths=on), data, "train", 1) for on in (True, False)]
    for t in trainers:
        t.model.double()
        t.class_emb = t.class_emb.double()  # CSGM's all-class scores embed them
        t.optimizer.step = lambda: None  # compare the gradients the step computed, not Adam's update
    assert all(
        torch.equal(a, b) for a, b in zip(*(t.model.state_dict().values() for t in trainers), strict=True)
    )
    batch = double_batch(trainers[0], 8, seed=3)
    got, want = (t.step_on(batch, use_csgm=switch["model"] == "daan") for t in trainers)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key].double(), want[key].double(), msg=key)
    models = [t.model for t in trainers]
    for (name, g), r in zip(models[0].named_parameters(), models[1].parameters(), strict=True):
        if r.grad is not None:
            torch.testing.assert_close(g.grad, r.grad, msg=name)
    for (name, g), r in zip(models[0].named_buffers(), models[1].buffers(), strict=True):
        torch.testing.assert_close(g, r, msg=name)


def test_plain_model_is_untouched_by_the_fast_module(averaged):
    """The plain classes hold no fast code: with fast_paths off, the model is built of torch's modules."""
    trainer = StageTrainer(tiny_config(fast_paths=False), averaged, "train", 1)
    assert type(trainer.model) is DAAN
    kinds = {type(m) for m in trainer.model.modules()}
    assert nn.Dropout in kinds and nn.Conv1d in kinds and not kinds & set(fast.TWINS.values())
    assert type(StageTrainer(tiny_config(model="avca"), averaged, "train", 1).model) is fast.FastAVCA
    assert AVCA in fast.TWINS and DAAN in fast.TWINS
