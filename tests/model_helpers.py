"""What the model tests share: a small AVCA-family network and a tiny synthetic benchmark."""

from __future__ import annotations

from model.data.gzsl import GZSLData
from model.data.synthetic import make_synthetic

# AVCA's (and DAAN's) sizes cut down so that a training step takes milliseconds; no dropout anywhere
SMALL_AVCA = {
    "token_dim": 24,
    "encoder_hidden": 20,
    "projector_hidden": 20,
    "dim_out": 8,
    "heads": 2,
    "dim_head": 6,
    "mlp_dim": 12,
    "embedding_dropout": 0.0,
    "decoder_dropout": 0.0,
    "additional_dropout": 0.0,
}


def tiny_gzsl(seed: int = 0, temporal_steps: int = 0, audio_dim: int = 5, visual_dim: int = 7) -> GZSLData:
    """4 seen, 2 validation-unseen and 2 test-unseen classes of 10 videos each."""
    return make_synthetic(
        n_seen=4,
        n_val_unseen=2,
        n_test_unseen=2,
        videos_per_class=10,
        audio_dim=audio_dim,
        visual_dim=visual_dim,
        embedding_dim=6,
        temporal_steps=temporal_steps,
        seed=seed,
    )
