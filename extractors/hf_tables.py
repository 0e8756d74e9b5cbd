"""Key -> shape tables of the published ViT and AST checkpoints, as their files name them.

transformers 5 renames modules in memory (e.g. ``layers.0.attention.q_proj``) and converts names while
loading and saving, so the in-memory state_dict is not the checkpoint's table. These tables follow the names
in the published files (docs/extractors.md key names; ViT uses the same encoder layout) and are what ``spec``
records; tests check them against what ``save_pretrained`` writes.
"""

from __future__ import annotations

from transformers import ASTConfig, ViTConfig


def _encoder(prefix: str, hidden: int, inner: int, layers: int) -> dict[str, tuple[int, ...]]:
    table: dict[str, tuple[int, ...]] = {}
    for i in range(layers):
        base = f"{prefix}encoder.layer.{i}."
        for name in (
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
            "attention.output.dense",
        ):
            table[f"{base}{name}.weight"] = (hidden, hidden)
            table[f"{base}{name}.bias"] = (hidden,)
        table[f"{base}intermediate.dense.weight"] = (inner, hidden)
        table[f"{base}intermediate.dense.bias"] = (inner,)
        table[f"{base}output.dense.weight"] = (hidden, inner)
        table[f"{base}output.dense.bias"] = (hidden,)
        for norm in ("layernorm_before", "layernorm_after"):
            table[f"{base}{norm}.weight"] = (hidden,)
            table[f"{base}{norm}.bias"] = (hidden,)
    table[f"{prefix}layernorm.weight"] = (hidden,)
    table[f"{prefix}layernorm.bias"] = (hidden,)
    return table


def vit_checkpoint_table(config: ViTConfig, pooler: bool = True) -> dict[str, tuple[int, ...]]:
    """``ViTModel`` files (e.g. google/vit-base-patch16-224-in21k): embeddings, encoder, final norm, pooler."""
    h, p = config.hidden_size, config.patch_size
    tokens = (config.image_size // p) ** 2 + 1
    table = {
        "embeddings.cls_token": (1, 1, h),
        "embeddings.position_embeddings": (1, tokens, h),
        "embeddings.patch_embeddings.projection.weight": (h, config.num_channels, p, p),
        "embeddings.patch_embeddings.projection.bias": (h,),
    }
    table.update(_encoder("", h, config.intermediate_size, config.num_hidden_layers))
    if pooler:
        table["pooler.dense.weight"] = (h, h)
        table["pooler.dense.bias"] = (h,)
    return table


def ast_patches(config: ASTConfig) -> tuple[int, int]:
    """(frequency, time) patch counts: 12 x 101 for 128 x 1024 inputs with stride 10 (docs/extractors.md)."""
    f = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    t = (config.max_length - config.patch_size) // config.time_stride + 1
    return f, t


def ast_checkpoint_table(config: ASTConfig) -> dict[str, tuple[int, ...]]:
    """``ASTForAudioClassification`` files (MIT/ast-finetuned-audioset-10-10-0.4593), docs/extractors.md names."""
    h, p = config.hidden_size, config.patch_size
    f, t = ast_patches(config)
    prefix = "audio_spectrogram_transformer."
    table = {
        f"{prefix}embeddings.cls_token": (1, 1, h),
        f"{prefix}embeddings.distillation_token": (1, 1, h),
        f"{prefix}embeddings.position_embeddings": (1, f * t + 2, h),
        f"{prefix}embeddings.patch_embeddings.projection.weight": (h, 1, p, p),
        f"{prefix}embeddings.patch_embeddings.projection.bias": (h,),
    }
    table.update(_encoder(prefix, h, config.intermediate_size, config.num_hidden_layers))
    table.update(
        {
            "classifier.layernorm.weight": (h,),
            "classifier.layernorm.bias": (h,),
            "classifier.dense.weight": (config.num_labels, h),
            "classifier.dense.bias": (config.num_labels,),
        }
    )
    return table
