"""Typed training configuration: one registered model (AVCA, DAAN, TCaF), every reconstruction choice a switch.

Defaults are AVCA's published UCF/main settings (docs/avca.md). DAAN's own hyper-parameters are not
published; everything under ``daan`` is our reconstruction (docs/daan.md), so each ablation is one flag.
TCaF's section holds the reference code's model switches; its per-dataset values are the bundled
``*_tcaf.yaml`` configs (docs/tcaf.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config import ConfigError, ConfigModel, set_dotted


class AVCAConfig(ConfigModel):
    """The AVCA embedding/reconstruction backbone shared by AVCA and DAAN (docs/avca.md)."""

    token_dim: int = 300
    encoder_hidden: int = 512
    projector_hidden: int = 512
    dim_out: int = 64
    heads: int = 3
    dim_head: int = 100
    mlp_dim: int = 64
    depth: int = 1
    embedding_dropout: float = Field(0.2, ge=0, lt=1)
    decoder_dropout: float = Field(0.3, ge=0, lt=1)
    additional_dropout: float = Field(0.5, ge=0, lt=1)
    bn_momentum: float = Field(0.1, gt=0, le=1, description="second BN of hidden-layer EmbeddingNets only")
    margin: float = 1.0
    pos_emb_trainable: bool = Field(False, description="AVCA leaves pos_emb1D at its random init (compat)")
    extra_embedding_pass: bool = Field(
        False,
        description="AVCA runs get_embeddings in train mode after each step: encoders, W_proj, A_proj and "
        "V_proj see the positives again (BN running statistics only; docs/avca.md)",
    )
    rec_projection_pass: bool = Field(
        False,
        description="AVCA's forward also runs A_proj/V_proj on the reconstructions, outputs unused "
        "(BN running statistics only; docs/avca.md)",
    )


class QDMAConfig(ConfigModel):
    """Differential cross-modal attention: (softmax(Q1K1) - beta softmax(Q2K2)) V  [REC]."""

    beta: float = Field(0.5, ge=0, description="0 gives plain attention")
    learnable_lambda: bool = Field(
        False, description="DIFF-Transformer style learnable lambda instead of beta"
    )
    subtract_on: Literal["all", "visual"] = Field("all", description="keys whose map is subtracted")
    keys: Literal["auto", "all", "cross"] = Field(
        "auto",
        description="attend to all tokens or the other modality only; auto: all (averaged), cross (temporal)",
    )
    head_norm: bool = Field(False, description="per-head LayerNorm of the attention output (DIFF style)")


class TCNConfig(ConfigModel):
    """Temporal enhancement H = phi + TCN(phi) with dilated residual 1-D convolutions  [REC]."""

    mode: Literal["auto", "time", "tokens", "off"] = Field(
        "auto", description="auto: over time for temporal features, over the 2 tokens for averaged ones"
    )
    levels: int = Field(2, ge=1)
    kernel: int = Field(3, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


class CSGMConfig(ConfigModel):
    """Contrastive sample-level gradient modulation of the encoders  [REC, docs/daan.md]."""

    mode: Literal["off", "batch", "sample"] = "sample"
    terms: Literal["optimisation", "convergence", "both"] = "both"
    score: Literal["pair", "all_classes"] = Field(
        "pair", description="pos/neg contrastive or all seen classes"
    )
    combine: Literal["product", "mix"] = Field(
        "product", description="s(1+gamma r) or eta s + (1-eta) norm(r)"
    )
    alpha: float = Field(0.3, gt=0)
    gamma: float = 1.0
    eta: float = Field(0.5, ge=0, le=1)
    ema: float = Field(0.9, ge=0, lt=1)
    start_epoch: int = Field(0, ge=0)
    end_epoch: int = Field(50, ge=0, description="modulation active for start_epoch <= epoch < end_epoch")
    gradient_noise: bool = Field(False, description="OGM-GE: add N(0, std(grad)) to modulated encoders")


class DAANConfig(ConfigModel):
    """DAAN = AVCA backbone + TCN + QDMA + CSGM + alignment loss  [REC]."""

    qdma: QDMAConfig = QDMAConfig()
    tcn: TCNConfig = TCNConfig()
    csgm: CSGMConfig = CSGMConfig()
    align: Literal["hyper_mse", "infonce", "off"] = "hyper_mse"
    align_weight: float = Field(1e-3, ge=0)
    align_temperature: float = Field(0.07, gt=0)


class TCaFConfig(ConfigModel):
    """TCaF (temporal and cross-modal attention fusion), fields named after the reference code's flags.

    Defaults are the reference's UCF cls configuration (docs/tcaf.md has every dataset's values).
    """

    token_dim: int = Field(300, description="transformer_dim")
    encoder_hidden: int = Field(512, description="embeddings_hidden_size: A_enc / V_enc hidden layer")
    projector_hidden: int = Field(512, description="decoder_hidden_size: O_proj / D_o hidden layer")
    dim_out: int = 64
    embedding_dropout: float = Field(0.3, ge=0, lt=1, description="A_enc, V_enc")
    decoder_dropout: float = Field(0.1, ge=0, lt=1, description="O_proj, D_o")
    additional_dropout: float = Field(0.1, ge=0, lt=1, description="W_proj, D_w")
    depth: int = Field(6, ge=1)
    heads: int = Field(8, ge=1)
    dim_head: int = Field(64, ge=1)
    mlp_dim: int = 128
    transformer_dropout: float = Field(0.3, ge=0, lt=1, description="attention output and feed-forward")
    embed_dim: int = Field(64, ge=2, description="transformer_embedding_dim: modality/time/padding codes")
    embed_dropout: float = Field(0.2, ge=0, lt=1, description="transformer_embedding_dropout")
    modality_embedding: bool = True
    time_embedding: Literal["sinusoid", "none"] = Field(
        "sinusoid", description="random Fourier features of each step's time"
    )
    fourier_scale: float = Field(10.0, gt=0)
    self_attention: bool = Field(False, description="tokens attend within their modality")
    cross_attention: bool = Field(True, description="tokens attend to the other modality")
    audio_step_seconds: float = Field(0.96, gt=0, description="0.96 VGGish, 1.0 SeLaVi")
    visual_step_seconds: float = Field(0.64, gt=0, description="0.64 C3D (16 frames at 25 fps), 1.0 SeLaVi")
    lengths: Literal["batch_max", "fixed"] = Field(
        "batch_max",
        description="pad each batch to its longest sequence (no crop), or crop/pad to fixed lengths",
    )
    train_steps: int = Field(60, ge=1, description="fixed: visual steps in training (random crop)")
    test_steps: int = Field(300, ge=1, description="fixed: visual steps in evaluation (centre crop)")
    audio_divisor: float = Field(255.0, gt=0, description="the reference divides every audio input by 255")
    visual_l2_over_time: bool = Field(True, description="the reference L2-normalises video over time")
    eval_positions: Literal["step_index", "seconds"] = Field(
        "step_index",
        description="reference: evaluation places time codes at step indices, training at seconds",
    )
    extra_embedding_pass: bool = Field(
        True, description="the reference re-embeds each batch in train mode after its step (BN statistics)"
    )

    @model_validator(mode="after")
    def _check(self) -> TCaFConfig:
        if not (self.self_attention or self.cross_attention):
            raise ValueError("tcaf: enable self_attention, cross_attention or both")
        if self.embed_dim % 2:
            raise ValueError(f"tcaf.embed_dim={self.embed_dim}: must be even (sine and cosine halves)")
        return self


class TrainConfig(ConfigModel):
    """Everything that decides a training run under the two-stage AV-GZSL protocol."""

    model: str = Field("avca", description="a registered model (model/registry.py): avca, daan, tcaf")
    avca: AVCAConfig = AVCAConfig()
    daan: DAANConfig = DAANConfig()
    tcaf: TCaFConfig = TCaFConfig()
    decision_rule: Literal["visual", "mean", "sum_dist"] = Field(
        "visual", description="embedding compared with class embeddings (docs/benchmark.md); AVCA uses visual"
    )
    epochs: int = Field(50, ge=1)
    batches_per_epoch: int = Field(500, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    lr_patience: int = Field(3, ge=0)
    lr_factor: float = Field(0.1, gt=0, lt=1)
    lr_scheduler: bool = Field(True, description="ReduceLROnPlateau on val HM (some TCaF configs: off)")
    stage2_lr_schedule: Literal["val_hm", "replay"] = Field(
        "val_hm", description="val_hm: published (HM on data now trained on); replay: stage-1 LR per epoch"
    )
    beta_grid: tuple[float, float, int] = Field((0.0, 3.0, 16), description="calibration sweep linspace")
    seed: int = 42
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads during the run (None: torch's default); 1 on busy machines",
    )
    keep_checkpoints: int = Field(
        2, ge=1, description="per-epoch checkpoints kept per stage (best kept apart)"
    )
    eval_batch_size: int = Field(2048, ge=1)
    fast_paths: bool = Field(
        True,
        description="CPU fast paths of model/fast.py (same function, fewer ops) where the model has them",
    )
    stages: Literal["both", "stage1"] = "both"

    @field_validator("model")
    @classmethod
    def _registered(cls, name: str) -> str:
        from model.registry import names  # the model modules import this one: resolve at validation time

        if name not in names():
            raise ValueError(f"unknown model {name!r}; registered: {', '.join(names())}")
        return name

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        from model.registry import get_spec

        rules = get_spec(self.model).decision_rules
        if self.decision_rule not in rules:
            raise ValueError(
                f"{self.model} is evaluated with decision_rule {' or '.join(rules)}, not {self.decision_rule}"
            )
        lo, hi, n = self.beta_grid
        if n < 1 or hi < lo:
            raise ValueError(f"beta_grid {self.beta_grid}: expected (low, high, count>=1) with high >= low")
        return self


class SyntheticConfig(ConfigModel):
    """Size of the synthetic benchmark (``model.data.synthetic.make_synthetic``)."""

    n_seen: int = Field(12, ge=2)
    n_val_unseen: int = Field(4, ge=1)
    n_test_unseen: int = Field(4, ge=1)
    videos_per_class: int = Field(30, ge=7)
    audio_dim: int = 32
    visual_dim: int = 48
    embedding_dim: int = 32
    noise: float = 0.3
    temporal_steps: int = Field(0, ge=0)
    seed: int = 0


class DataConfig(ConfigModel):
    """Where the features come from; paths are given per run (``--set data.root=...``), never in the repo."""

    source: Literal["published", "stores", "synthetic"] = "published"
    root: str | None = Field(None, description="published: the avgzsl_benchmark_datasets folder")
    dataset: Literal["UCF", "ActivityNet", "VGGSound"] = "UCF"
    setting: Literal["main", "cls"] = "main"
    temporal: bool = False
    features_dir: str | None = Field(
        None, description="published: folder with audio/ and video/ split folders"
    )
    class_split_root: str | None = Field(
        None, description="published: root of <Dataset>/class-split if not root"
    )
    audio_store: str | None = None
    visual_store: str | None = None
    manifest: str | None = Field(None, description="stores: parquet with video_id, label, split")
    class_split_dir: str | None = Field(None, description="stores: optional AV-GZSL class-split folder")
    embeddings: Literal["w2v", "minilm", "glove"] = "w2v"
    embedding_path: str | None = None
    name_map_csv: str | None = None
    indexing: Literal["corrected", "published"] = "corrected"
    window_tolerance_s: float = Field(
        1.0, gt=0, description="stores, temporal: how far apart audio and visual windows may start or end"
    )
    synthetic: SyntheticConfig = SyntheticConfig()


# Reproduction presets (docs/avca.md): one switch for each way the reference code's behaviour is a defect or
# a quirk. ``published`` runs as the reference code does, so numbers compare with the papers; ``corrected``
# is the same model and hyper-parameters with each of them fixed. A ``train.<section>.*`` switch applies to
# the models that have that config section (AVCA's BatchNorm passes are not TCaF's); the others to every one.
PresetName = Literal["published", "corrected"]
PRESETS: dict[str, dict[str, Any]] = {
    "published": {
        "data.indexing": "published",
        "train.stage2_lr_schedule": "val_hm",
        "train.avca.extra_embedding_pass": True,
        "train.avca.rec_projection_pass": True,
        "train.avca.pos_emb_trainable": False,
        "train.tcaf.extra_embedding_pass": True,
        "train.tcaf.eval_positions": "step_index",
    },
    "corrected": {
        "data.indexing": "corrected",
        "train.stage2_lr_schedule": "replay",
        "train.avca.extra_embedding_pass": False,
        "train.avca.rec_projection_pass": False,
        "train.avca.pos_emb_trainable": True,
        "train.tcaf.extra_embedding_pass": False,
        "train.tcaf.eval_positions": "seconds",
    },
}


def preset_switches(name: str, model: str) -> dict[str, Any]:
    """The switches of preset ``name`` that model ``model`` has (dotted keys of a run config)."""
    from model.registry import get_spec

    if name not in PRESETS:
        raise ConfigError(f"preset {name!r}: expected one of {', '.join(PRESETS)}")
    sections = get_spec(model).config_sections
    return {key: value for key, value in PRESETS[name].items() if _section(key) in (None, *sections)}


def _section(key: str) -> str | None:
    """The ``TrainConfig`` section a switch belongs to (``train.avca.x`` -> ``avca``), None for the others."""
    parts = key.split(".")
    return parts[1] if parts[0] == "train" and len(parts) > 2 else None


def preset_of(train: TrainConfig, indexing: str) -> str:
    """The preset whose every switch these settings match, else ``custom`` (labels runs and reports)."""
    settings = {"data": {"indexing": indexing}, "train": train.to_dict()}
    for name in PRESETS:
        if all(_dotted(settings, k) == v for k, v in preset_switches(name, train.model).items()):
            return name
    return "custom"


def _dotted(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


class RunConfig(ConfigModel):
    """What ``avzsl train`` reads: the data source and the training configuration."""

    data: DataConfig = DataConfig()
    train: TrainConfig = Field(default_factory=TrainConfig)  # built on use: validation reads the registry

    def with_preset(self, name: str) -> RunConfig:
        """This config with the switches of reproduction preset ``name`` (``PRESETS``) its model has set."""
        data = self.to_dict()
        for key, value in preset_switches(name, self.train.model).items():
            set_dotted(data, key, value)
        return RunConfig.from_dict(data, source=f"preset {name}")
