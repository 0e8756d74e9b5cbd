"""The model registry: what ``avzsl models list`` shows, config validation against it, and that a new
AVCA-family model needs only a registered builder to train under the protocol."""

from __future__ import annotations

import pytest

from model import registry
from model.api import bundled_configs, list_models
from model.avca import AVCA
from model.config import TrainConfig
from model.data.synthetic import make_synthetic
from model.registry import ModelSpec, register
from model.trainer import StageTrainer
from pipeline.config import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_model_is_listed_with_its_inputs_and_config():
    rows = {r["name"]: r for r in list_models()}
    assert sorted(rows) == ["avca", "daan", "tcaf"]
    assert rows["tcaf"]["inputs"].startswith("temporal") and rows["tcaf"]["objective"] == "classes"
    assert rows["avca"]["inputs"].startswith("averaged or temporal") and rows["daan"]["objective"] == "pairs"
    assert set(rows["daan"]["config"]) == {"avca", "daan"}
    assert rows["tcaf"]["config"]["tcaf"]["cross_attention"] is True
    assert rows["tcaf"]["bundled_configs"] == [c for c in bundled_configs() if c.endswith("_tcaf")]
    assert rows["avca"]["bundled_configs"] == [c for c in bundled_configs() if not c.endswith("_tcaf")]


def test_models_list_command_prints_every_registered_model(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from workflows.cli import main

    assert main(["models", "list"]) == 0
    text = capsys.readouterr().out
    for row in list_models():
        assert f"{row['name']}: " in text and f"  inputs: {row['inputs']}" in text
    assert "ucf_cls_tcaf" in text
    assert main(["models", "list", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["avca", "daan", "tcaf"]
    assert main(["models", "list", "--config"]) == 0
    assert "cross_attention: true" in capsys.readouterr().out


def test_config_accepts_registered_models_only():
    with pytest.raises(ConfigError, match="unknown model 'avcaa'.*avca, daan, tcaf"):
        TrainConfig.from_dict({"model": "avcaa"})
    with pytest.raises(ConfigError, match="tcaf is evaluated with decision_rule visual"):
        TrainConfig.from_dict({"model": "tcaf", "decision_rule": "mean"})
    assert TrainConfig.from_dict({"model": "daan", "decision_rule": "mean"}).decision_rule == "mean"


SMALL_AVCA = {"token_dim": 12, "encoder_hidden": 10, "projector_hidden": 10, "dim_out": 6, "heads": 2}


def test_a_new_avca_family_model_is_one_registered_builder():
    spec = ModelSpec(
        name="avca_variant",
        summary="AVCA under another name",
        inputs=("averaged",),
        objective="pairs",
        decision_rules=("visual",),
        config_sections=("avca",),
    )

    def build(cfg, data):
        return AVCA(cfg.avca, data.audio_dim, data.visual_dim, int(data.class_embeddings.shape[1]))

    register(spec)(build)
    try:
        with pytest.raises(ValueError, match="registered twice"):
            register(spec)(lambda cfg, data: None)
        cfg = TrainConfig.from_dict(
            {
                "model": "avca_variant",
                "avca": SMALL_AVCA,
                "batches_per_epoch": 2,
                "batch_size": 8,
                "device": "cpu",
            }
        )
        data = make_synthetic(n_seen=3, n_val_unseen=1, n_test_unseen=1, videos_per_class=8, seed=1)
        trainer = StageTrainer(cfg, data, "train", 1)
        assert isinstance(trainer.model, AVCA) and "l_ct" in trainer.train_epoch(0)
        temporal = make_synthetic(
            n_seen=3, n_val_unseen=1, n_test_unseen=1, videos_per_class=8, temporal_steps=3
        )
        with pytest.raises(ValueError, match="avca_variant takes averaged features"):
            StageTrainer(cfg, temporal, "train", 1)
    finally:
        registry._REGISTRY.pop("avca_variant")
