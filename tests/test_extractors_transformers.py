"""AST, ViT and the generic transformers extractor: preprocessing parity with transformers, shapes, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

from extractors.ast import KaldiFbank
from extractors.base import Window
from extractors.hf_tables import ast_checkpoint_table, vit_checkpoint_table
from extractors.registry import build_extractor
from extractors.weights import WeightsError
from pipeline.decode.types import AudioClip
from tests.extractor_helpers import sample_audio

TINY_VIT = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32
)


@pytest.fixture(scope="module")
def ast_random():
    return build_extractor("ast", weights="random")


@pytest.mark.parametrize(("stem", "windows"), [("v_GGSY1Qvo990", 2), ("v_ZNVhz7ctTq0", 2)])
def test_ast_input_features_match_transformers_on_real_audio(sample_videos, ast_random, stem, windows):
    clip = AudioClip(sample_audio(str(sample_videos[stem])), 16000)
    made = list(ast_random.windows_from_audio(clip))
    assert len(made) == windows  # 1,814 and 1,403 frames -> 2 windows of 1,024 (docs/extractors.md)
    assert made[1].start_s == pytest.approx(10.24) and made[1].valid < made[0].valid == 164_080
    ours = ast_random.prepare(made)
    assert ours.shape == (windows, 1024, 128)
    reference = ASTFeatureExtractor()
    for window, row in zip(made, ours, strict=True):
        expected = reference(window.data[: window.valid].numpy(), sampling_rate=16000, return_tensors="pt")
        assert (row - expected["input_values"][0]).abs().max() <= 1e-4


def test_ast_fbank_batched_equals_torchaudio_kaldi():
    from torchaudio.compliance.kaldi import fbank

    wave = torch.from_numpy(np.random.default_rng(0).normal(0, 0.2, 16000).astype(np.float32))
    ours = KaldiFbank()(torch.stack([wave, wave * 0.5]))
    for i, w in enumerate((wave, wave * 0.5)):
        ref = fbank(w[None], sample_frequency=16000, window_type="hanning", num_mel_bins=128)
        assert (ours[i] - ref).abs().max() <= 1e-4


@pytest.mark.slow
def test_ast_full_window_tokens_and_pooled_output(ast_random):
    inputs = ast_random.prepare([Window(torch.zeros(164_080), 0.0, 10.24, 164_080)])
    with torch.inference_mode():
        out = ast_random.model(input_values=inputs)
    assert tuple(out.last_hidden_state.shape) == (1, 1214, 768)  # 12 x 101 patches + CLS + distillation
    expected = (out.last_hidden_state[:, 0] + out.last_hidden_state[:, 1]) / 2
    assert out.pooler_output.shape == (1, 768) and torch.allclose(out.pooler_output, expected, atol=1e-5)


def test_checkpoint_tables_match_published_names_and_saved_files(tmp_path):
    table = ast_checkpoint_table(ASTConfig(num_labels=527))  # the AudioSet checkpoint's architecture
    assert len(table) == 5 + 12 * 16 + 2 + 4
    assert table["audio_spectrogram_transformer.embeddings.position_embeddings"] == (1, 1214, 768)
    assert table["audio_spectrogram_transformer.encoder.layer.11.attention.attention.query.weight"] == (
        768,
        768,
    )
    assert table["classifier.dense.weight"] == (527, 768)
    assert vit_checkpoint_table(ViTConfig())["embeddings.position_embeddings"] == (1, 197, 768)
    # what transformers writes for these architectures has exactly these names and shapes
    tiny_ast = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    ASTForAudioClassification(tiny_ast).save_pretrained(tmp_path / "ast")
    saved = {k: tuple(v.shape) for k, v in load_file(tmp_path / "ast" / "model.safetensors").items()}
    assert saved == ast_checkpoint_table(tiny_ast)
    tiny_vit = ViTConfig(**TINY_VIT)
    ViTModel(tiny_vit).save_pretrained(tmp_path / "vit")
    saved = {k: tuple(v.shape) for k, v in load_file(tmp_path / "vit" / "model.safetensors").items()}
    assert saved == vit_checkpoint_table(tiny_vit)
    assert build_extractor("ast", weights=tmp_path / "ast").spec.weights_id.startswith("sha256:")


def test_vit_preprocessing_matches_image_processors():
    vit = build_extractor("vit", weights="random")
    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    frame[:100] = 40
    ours = vit.prepare([Window(torch.from_numpy(frame)[None], 0.0, 1.0, 1)])
    fast = ViTImageProcessor()(images=[frame], return_tensors="pt")["pixel_values"]
    assert (ours - fast).abs().max() <= 1e-5  # the torchvision-backed processor (transformers 5 default)
    pil = ViTImageProcessorPil()(images=[frame], return_tensors="pt")["pixel_values"]
    diff = (ours - pil).abs()
    assert diff.max() <= 2 / 255 / 0.5 + 1e-6 and diff.mean() <= 1e-3  # PIL: within one uint8 level


def _save_tiny_vit(folder, pooler=False):
    config = ViTConfig(**TINY_VIT)
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=pooler).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_vit_loads_a_local_folder_and_pools(tmp_path):
    folder = _save_tiny_vit(tmp_path / "vit")
    frames = [Window(torch.randint(0, 256, (1, 48, 64, 3), dtype=torch.uint8), 0.0, 1.0, 1) for _ in range(3)]
    cls = build_extractor("vit", weights=folder)
    mean = build_extractor("vit", weights=folder, pooling="mean")
    assert not cls.spec.random_weights and cls.spec.output_dim == 32 and cls.spec.input_size == (3, 32, 32)
    inputs = cls.prepare(frames)
    with torch.inference_mode():
        hidden = cls.model(pixel_values=inputs).last_hidden_state
    assert torch.allclose(cls.embed(frames), hidden[:, 0], atol=1e-5)
    assert torch.allclose(mean.embed(frames), hidden[:, 1:].mean(1), atol=1e-5)
    assert cls.spec.fingerprint() != mean.spec.fingerprint()
    state = load_file(folder / "model.safetensors")
    del state["embeddings.cls_token"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="cls_token"):
        build_extractor("vit", weights=folder)
    with pytest.raises(WeightsError, match="neither a local model folder nor a model in the local"):
        build_extractor("vit", weights="no-such-org/no-such-model")


def test_generic_extractor_image_and_audio_models(tmp_path):
    image_folder = _save_tiny_vit(tmp_path / "vit", pooler=True)
    image = build_extractor("hf", weights=image_folder, fps=2.0)
    assert image.spec.modality == "visual" and image.spec.sample_rate == 2.0 and image.spec.output_dim == 32
    out = image.embed([Window(torch.randint(0, 256, (1, 20, 30, 3), dtype=torch.uint8), 0.0, 0.5, 1)])
    assert out.shape == (1, 32)

    audio_folder = tmp_path / "w2v"
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    Wav2Vec2Model(config).save_pretrained(audio_folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(audio_folder)
    audio = build_extractor("hf", weights=audio_folder, window_s=1.0)
    assert audio.spec.modality == "audio" and audio.spec.sample_rate == 16000
    windows = list(audio.windows_from_audio(AudioClip(np.zeros(24000, np.float32), 16000)))
    assert [w.valid for w in windows] == [16000, 8000]
    assert audio.embed(windows).shape == (2, 32)
    random = build_extractor("hf", weights="random", config=audio_folder)
    assert random.spec.random_weights and "RANDOM" in random.spec.label()
    with pytest.raises(ValueError, match="needs config"):
        build_extractor("hf", weights="random")


@pytest.mark.slow
def test_autocast_bf16_on_cpu_agrees_with_float32():
    """Stated tolerance: bf16 keeps 8 mantissa bits, so rows agree to cosine >= 0.99 and 5 % relative L2."""
    fp32 = build_extractor("vggish", weights="random", variant="tf")
    bf16 = build_extractor("vggish", weights="random", variant="tf", precision="bf16")
    wave = torch.from_numpy(np.random.default_rng(3).normal(0, 0.1, (1, 15600)).astype(np.float32))
    windows = [Window(w, 0.0, 0.96, 15600) for w in wave]
    a, b = fp32.embed(windows), bf16.embed(windows)
    assert b.dtype == torch.float32 and bf16.autocast_dtype() == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(a, b).min() >= 0.99
    assert ((a - b).norm(dim=1) / a.norm(dim=1)).max() <= 0.05
    assert not torch.equal(a, b)  # autocast really ran in bf16
