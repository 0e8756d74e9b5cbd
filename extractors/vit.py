"""ViT frame embeddings through transformers: one row per sampled frame.

docs/extractors.md: ``ViTImageProcessor`` resizes to 224x224 (bilinear, no crop), rescales by 1/255 and normalises
with mean = std = 0.5; ``pooler_output`` is tanh(dense(CLS)), a head not trained for retrieval, so pooling is
an option: ``cls`` (CLS token after the final LayerNorm, default), ``mean`` (mean of patch tokens after the
final LayerNorm) or ``pooler``. Weights: a local model folder (``save_pretrained`` layout) or a model id in
the local Hugging Face cache, loaded with ``local_files_only=True``; ``"random"`` builds ``ViTConfig()``
(ViT-B/16, 224) with a seeded random init. There is no published AV-GZSL ViT recipe, so both modes are equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from transformers import AutoImageProcessor, ViTConfig, ViTImageProcessor, ViTModel

from extractors.base import Extractor, Window
from extractors.hf_tables import vit_checkpoint_table
from extractors.image_preprocess import ImagePreprocess
from extractors.registry import register
from extractors.spec import ExtractorSpec, shapes_table
from extractors.weights import check_hf_loading, hf_weights_id, is_random, random_weights_id, resolve_hf_dir
from extractors.windowing import FrameWindower, iter_frame_windows
from pipeline.decode.types import FrameChunk

POOLINGS = ("cls", "mean", "pooler")
DEFAULT_FPS = 1.0
WEIGHT_SOURCE = (
    "a local Hugging Face folder of a ViT model (e.g. google/vit-base-patch16-224-in21k saved with "
    "save_pretrained, or already in the local HF cache)"
)


def pool_tokens(
    hidden: torch.Tensor, pooler_output: torch.Tensor | None, pooling: str, prefix: int
) -> torch.Tensor:
    """(B, tokens, D) -> (B, D): CLS token, mean of the tokens after ``prefix`` special ones, or the pooler."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        return hidden[:, prefix:].mean(dim=1)
    if pooler_output is None:
        raise ValueError("pooling 'pooler' needs a model with a pooling layer")
    return pooler_output


def default_spec(
    mode: str,
    pooling: str = "cls",
    fps: float = DEFAULT_FPS,
    config: ViTConfig | None = None,
    preprocess: ImagePreprocess | None = None,
    weights_files: tuple[str, ...] = ("config.json", "model.safetensors", "preprocessor_config.json"),
) -> ExtractorSpec:
    config = config or ViTConfig()
    preprocess = preprocess or ImagePreprocess.from_processor(ViTImageProcessor())
    h, w = preprocess.output_size()
    return ExtractorSpec(
        name="vit",
        modality="visual",
        sample_rate=fps,
        window=1,
        hop=1,
        input_size=(3, h, w),
        output_dim=int(config.hidden_size),
        output_dtype="float32",
        preprocessing=f"{fps:g} fps by PTS; RGB; {preprocess.summary()}; pooling {pooling}",
        mode=mode,
        weights_files=weights_files,
        weights_source=WEIGHT_SOURCE,
        state_dict_shapes=shapes_table(vit_checkpoint_table(config)),
        provenance="Dosovitskiy et al. ICLR 2021; transformers ViTModel (docs/extractors.md)",
        options=(("pooling", pooling), ("fps", f"{fps:g}"), ("image_size", str(config.image_size))),
    )


class ViTExtractor(Extractor):
    def __init__(self, spec: ExtractorSpec, model: ViTModel, preprocess: ImagePreprocess, device, precision):
        super().__init__(spec, device, precision)
        self.model = model.eval().to(self.device)
        self.preprocess = preprocess
        self.pooling = dict(spec.options)["pooling"]

    def frame_windower(self) -> FrameWindower:
        return FrameWindower(1, 1, self.spec.sample_rate)

    def windows_from_frames(self, chunks: Iterable[FrameChunk]) -> Iterator[Window]:
        return iter_frame_windows(self.frame_windower(), chunks)

    @torch.inference_mode()
    def prepare(self, windows: Sequence[Window]) -> torch.Tensor:
        frames = self.batch_to_device([w.data for w in windows], stack=False)  # (B, H, W, 3) uint8
        return self.preprocess(frames)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=inputs)
        return pool_tokens(out.last_hidden_state, out.pooler_output, self.pooling, prefix=1)


@register("vit", default_spec)
def build_vit(
    *,
    weights,
    device: str = "cpu",
    mode: str = "clean",
    pooling: str = "cls",
    fps: float = DEFAULT_FPS,
    precision: str = "auto",
    seed: int = 0,
) -> ViTExtractor:
    """ViT frame embeddings; ``weights`` = local HF folder / cached model id, or ``"random"`` (ViT-B/16)."""
    if pooling not in POOLINGS:
        raise ValueError(f"vit: pooling must be one of {POOLINGS}, got {pooling!r}")
    if fps <= 0:
        raise ValueError(f"vit: fps must be positive, got {fps}")
    pooler = pooling == "pooler"
    if is_random(weights):
        config = ViTConfig()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ViTModel(config, add_pooling_layer=pooler)
        preprocess = ImagePreprocess.from_processor(ViTImageProcessor())
        spec = default_spec(mode, pooling, fps, config, preprocess).with_weights(random_weights_id(seed))
    else:
        folder = resolve_hf_dir(weights, what="vit weights")
        model, info = ViTModel.from_pretrained(
            folder, local_files_only=True, add_pooling_layer=pooler, output_loading_info=True
        )
        check_hf_loading(
            info, what="vit weights", folder=folder, allow_missing=() if pooler else ("pooler.",)
        )
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        preprocess = ImagePreprocess.from_processor(processor)
        spec = default_spec(mode, pooling, fps, model.config, preprocess, weights_files=(str(weights),))
        spec = spec.with_weights(hf_weights_id(folder))
    return ViTExtractor(spec, model, preprocess, device, precision)
