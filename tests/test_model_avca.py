"""Our AVCA trains exactly like the reference code: the trainer's step and a re-implementation of the
reference's step (``avca_reference``) run side by side from the same weights on the same batches, dropout
off, in float64, on the plain and on the fast path; loss, gradients, parameters and every BatchNorm buffer
agree after each step, and so do the evaluation embeddings afterwards."""

from __future__ import annotations

import pytest
import torch

from model.config import RunConfig, TrainConfig
from model.trainer import Batch, StageTrainer
from tests.avca_reference import ReferenceAVCA, copy_into_reference, reference_name
from tests.model_helpers import SMALL_AVCA, tiny_gzsl

BATCH, STEPS = 12, 4
BN_ONLY_PASSES = ("rec_projection_pass", "extra_embedding_pass")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_data():
    return tiny_gzsl(seed=3)


def avca_config(preset: str, momentum: float, fast_paths: bool) -> TrainConfig:
    """The preset's training switches on a small AVCA (pos_emb1D frozen, as the reference leaves it)."""
    train = RunConfig().with_preset(preset).train
    avca = {**train.avca.to_dict(), **SMALL_AVCA, "bn_momentum": momentum, "pos_emb_trainable": False}
    return TrainConfig.from_dict(
        {**train.to_dict(), "avca": avca, "batch_size": BATCH, "device": "cpu", "fast_paths": fast_paths}
    )


def as_double(batch: Batch) -> Batch:
    return Batch(*(t.double() if t is not None and t.is_floating_point() else t for t in batch))


@pytest.mark.parametrize("fast_paths", [False, True])
@pytest.mark.parametrize("momentum", [0.1, 0.99])  # 0.99: running statistics ~ the last batch seen
@pytest.mark.parametrize("preset", ["published", "corrected"])
def test_training_steps_match_the_reference_step(tiny_data, preset, momentum, fast_paths):
    """``published``: the reference's step as it is, including the BatchNorm calls whose outputs no loss
    uses. ``corrected``: the same step with only the loss forward moving BatchNorm statistics."""
    cfg = avca_config(preset, momentum, fast_paths)
    passes = preset == "published"
    assert all(getattr(cfg.avca, switch) == passes for switch in BN_ONLY_PASSES)
    trainer = StageTrainer(cfg, tiny_data, "train", 1)
    ours = trainer.model.double()
    reference = ReferenceAVCA(
        cfg.avca,
        tiny_data.audio_dim,
        tiny_data.visual_dim,
        int(tiny_data.class_embeddings.shape[1]),
        cfg.lr,
        side_passes=passes,
    ).double()
    copy_into_reference(ours, reference)
    ref_params = dict(reference.named_parameters())
    ref_buffers = dict(reference.named_buffers())
    pairs = trainer.sampler.epoch(STEPS, BATCH, torch.Generator().manual_seed(1))
    for step in range(STEPS):
        batch = as_double(trainer.gather(torch.cat([pairs.positive[step], pairs.negative[step]])))
        logs = trainer.step_on(batch, use_csgm=False)
        a, v, w = batch.audio, batch.visual, batch.w
        ref_loss = reference.train_step(a[:BATCH], v[:BATCH], w[:BATCH], a[BATCH:], v[BATCH:], w[BATCH:])
        torch.testing.assert_close(logs["loss"], ref_loss, msg=f"step {step}: loss")
        for name, p in ours.named_parameters():
            theirs = ref_params[reference_name(name)]
            if p.requires_grad:  # pos_emb1D: neither side steps it (the reference's gets a gradient anyway)
                torch.testing.assert_close(p.grad, theirs.grad, msg=f"step {step}: gradient of {name}")
            torch.testing.assert_close(p, theirs, msg=f"step {step}: {name}")
        for name, buf in ours.named_buffers():  # running_mean, running_var, num_batches_tracked
            torch.testing.assert_close(buf, ref_buffers[reference_name(name)], msg=f"step {step}: {name}")

    ours.eval()
    reference.eval()
    val = tiny_data.splits["val"]
    a, v = val.audio.double(), val.visual.double()
    w = tiny_data.class_embeddings.double()[val.labels]
    with torch.no_grad():
        want_a, want_v, want_w = reference.get_embeddings(a, v, w)
        got_a, got_v = ours.embed(a, v)
        torch.testing.assert_close(got_a, want_a)
        torch.testing.assert_close(got_v, want_v)
        torch.testing.assert_close(ours.embed_classes(w), want_w)


@pytest.mark.parametrize("switch", BN_ONLY_PASSES)
def test_each_batchnorm_only_pass_changes_the_evaluation_statistics(tiny_data, switch):
    """The passes are not a no-op: each moves running statistics that evaluation reads, so a model trained
    without it embeds the same videos (or classes) differently after the same steps (guards the test
    above)."""
    embeddings = []
    for on in (True, False):
        cfg = avca_config("published", 0.99, fast_paths=True)
        cfg = cfg.with_overrides([f"avca.{switch}={str(on).lower()}"])
        trainer = StageTrainer(cfg, tiny_data, "train", 1)
        pairs = trainer.sampler.epoch(STEPS, BATCH, torch.Generator().manual_seed(1))
        for step in range(STEPS):
            trainer.step_on(trainer.gather(torch.cat([pairs.positive[step], pairs.negative[step]])), False)
        trainer.model.eval()
        val = tiny_data.splits["val"]
        with torch.no_grad():
            _, theta_v = trainer.model.embed(val.audio, val.visual)
            theta_w = trainer.model.embed_classes(tiny_data.class_embeddings)
        embeddings.append((theta_v, theta_w))
    (v_on, w_on), (v_off, w_off) = embeddings
    assert not torch.allclose(v_on, v_off)
    if switch == "extra_embedding_pass":  # the post-step pass runs W_proj too, as get_embeddings does
        assert not torch.allclose(w_on, w_off)
