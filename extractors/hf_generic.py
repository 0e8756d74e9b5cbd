"""Any transformers image or audio model from a local folder (or the local HF cache) as an extractor.

The model's own processor decides the preprocessing: image processors are read into :class:`ImagePreprocess`
and applied batched on the device (one row per sampled frame); audio feature extractors run as published on
the CPU (their numpy code is the reference; a model-specific device port would drift), on fixed windows of
``window_s`` seconds every ``hop_s``, the last one zero-padded. Rows are ``pooler_output`` when the model has
one (or ``get_image_features`` for CLIP-like models), else the mean of ``last_hidden_state`` over tokens or
spatial positions; ``pooling`` overrides. ``weights="random"`` needs ``config=<folder>`` and is labelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoImageProcessor, AutoModel

from extractors.base import Extractor, Window
from extractors.image_preprocess import ImagePreprocess
from extractors.registry import register
from extractors.spec import ExtractorSpec
from extractors.weights import (
    WeightsError,
    check_hf_loading,
    hf_weights_id,
    is_random,
    random_weights_id,
    resolve_hf_dir,
)
from extractors.windowing import FrameWindower, audio_windows, iter_frame_windows
from pipeline.decode.types import AudioClip, FrameChunk

POOLINGS = ("auto", "pooler", "cls", "mean")


def default_spec(mode: str) -> ExtractorSpec:
    """Placeholder spec for listings; the real one depends on the model folder given at build time."""
    return ExtractorSpec(
        name="hf",
        modality="visual",
        sample_rate=1.0,
        window=1,
        hop=1,
        input_size=(),
        output_dim=0,
        output_dtype="float32",
        preprocessing="the model's own image processor (on device) or feature extractor (CPU)",
        mode=mode,
        weights_files=("<local model folder or cached model id>",),
        weights_source="any transformers image/audio model saved with save_pretrained (local only)",
        state_dict_shapes=(),
        provenance="transformers AutoModel + AutoImageProcessor / AutoFeatureExtractor",
        notes=("modality, rate, sizes and output dimension are read from the model folder",),
    )


def pool_output(out, pooling: str) -> torch.Tensor:
    """A model output -> (B, D), following ``pooling``."""
    pooled = getattr(out, "pooler_output", None) if not isinstance(out, torch.Tensor) else out
    if pooling in ("auto", "pooler") and pooled is not None:
        return pooled.flatten(1) if pooled.dim() > 2 else pooled
    if pooling == "pooler":
        raise ValueError("pooling 'pooler' but the model output has no pooler_output")
    hidden = out.last_hidden_state
    if hidden.dim() == 4:  # CNN feature map (B, C, H, W)
        return hidden.mean(dim=(2, 3))
    return hidden[:, 0] if pooling == "cls" else hidden.mean(dim=1)


class HFImageExtractor(Extractor):
    def __init__(self, spec, model, preprocess: ImagePreprocess, pooling: str, device, precision):
        super().__init__(spec, device, precision)
        self.model = model.eval().to(self.device)
        self.preprocess = preprocess
        self.pooling = pooling

    def frame_windower(self) -> FrameWindower:
        return FrameWindower(1, 1, self.spec.sample_rate)

    def windows_from_frames(self, chunks: Iterable[FrameChunk]) -> Iterator[Window]:
        return iter_frame_windows(self.frame_windower(), chunks)

    @torch.inference_mode()
    def prepare(self, windows: Sequence[Window]) -> torch.Tensor:
        return self.preprocess(self.batch_to_device([w.data for w in windows], stack=False))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "get_image_features"):
            return pool_output(self.model.get_image_features(pixel_values=inputs), "pooler")
        return pool_output(self.model(pixel_values=inputs), self.pooling)


class HFAudioExtractor(Extractor):
    def __init__(self, spec, model, feature_extractor, pooling: str, device, precision):
        super().__init__(spec, device, precision)
        self.model = model.eval().to(self.device)
        self.feature_extractor = feature_extractor
        self.pooling = pooling
        self.rate = int(spec.sample_rate)
        self.input_name = feature_extractor.model_input_names[0]

    def windows_from_audio(self, clip: AudioClip) -> Iterator[Window]:
        if clip.sample_rate != self.rate:
            raise ValueError(f"{self.spec.name} needs {self.rate} Hz audio, got {clip.sample_rate} Hz")
        return audio_windows(
            clip,
            window_samples=int(round(self.spec.window * self.rate)),
            hop_samples=int(round(self.spec.hop * self.rate)),
            pad_last=True,
            min_samples=int(0.1 * self.rate),
            nominal_window_s=self.spec.window,
        )

    @torch.inference_mode()
    def prepare(self, windows: Sequence[Window]) -> torch.Tensor:
        waves = [w.data.numpy().astype(np.float32) for w in windows]
        features = self.feature_extractor(waves, sampling_rate=self.rate, return_tensors="pt")
        return self.to_device(features[self.input_name])

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "get_audio_features"):
            return pool_output(self.model.get_audio_features(**{self.input_name: inputs}), "pooler")
        return pool_output(self.model(**{self.input_name: inputs}), self.pooling)


def _processor(folder: Path):
    """(kind, processor): the image processor if the folder has one, else the audio feature extractor."""
    try:
        return "visual", AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError):
        pass
    try:
        return "audio", AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise WeightsError(
            f"hf: {folder} has no image processor or feature extractor config (preprocessor_config.json); "
            "save the model's processor with save_pretrained next to the model"
        ) from err


@register("hf", default_spec)
def build_hf(
    *,
    weights,
    device: str = "cpu",
    mode: str = "clean",
    config: str | Path | None = None,
    pooling: str = "auto",
    fps: float = 1.0,
    window_s: float = 10.0,
    hop_s: float | None = None,
    precision: str = "auto",
    seed: int = 0,
) -> Extractor:
    """Generic transformers extractor: ``weights`` = model folder / cached id, or ``"random"`` + ``config``."""
    if pooling not in POOLINGS:
        raise ValueError(f"hf: pooling must be one of {POOLINGS}, got {pooling!r}")
    if is_random(weights):
        if config is None:
            raise ValueError(
                "hf: weights='random' needs config=<model folder> for the architecture and processor"
            )
        folder = resolve_hf_dir(config, what="hf config")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModel.from_config(AutoConfig.from_pretrained(folder, local_files_only=True))
        weights_identity = random_weights_id(seed)
    else:
        folder = resolve_hf_dir(weights, what="hf weights")
        model, info = AutoModel.from_pretrained(folder, local_files_only=True, output_loading_info=True)
        check_hf_loading(info, what="hf weights", folder=folder, allow_missing=("pooler.",))
        weights_identity = hf_weights_id(folder)
    kind, processor = _processor(folder)
    model_type = getattr(model.config, "model_type", "model")
    dim = _output_dim(model.config)
    common = dict(
        mode=mode,
        output_dtype="float32",
        weights_files=(str(weights if not is_random(weights) else config),),
        weights_source="local transformers model folder",
        state_dict_shapes=tuple((k, tuple(v.shape)) for k, v in model.state_dict().items()),
        provenance=f"transformers {type(model).__name__} ({model_type})",
        weights_id=weights_identity,
    )
    if kind == "visual":
        preprocess = ImagePreprocess.from_processor(processor)
        spec = ExtractorSpec(
            name="hf",
            modality="visual",
            sample_rate=fps,
            window=1,
            hop=1,
            input_size=(3, *preprocess.output_size()),
            output_dim=dim,
            preprocessing=f"{fps:g} fps by PTS; RGB; {preprocess.summary()}; pooling {pooling}",
            options=(("pooling", pooling), ("fps", f"{fps:g}"), ("model", model_type)),
            **common,
        )
        return HFImageExtractor(spec, model, preprocess, pooling, device, precision)
    rate = int(processor.sampling_rate)
    hop = hop_s or window_s
    spec = ExtractorSpec(
        name="hf",
        modality="audio",
        sample_rate=rate,
        window=window_s,
        hop=hop,
        input_size=(int(round(window_s * rate)),),
        output_dim=dim,
        preprocessing=f"mono {rate} Hz; {type(processor).__name__} on CPU; last window zero-padded; pooling {pooling}",
        options=(
            ("pooling", pooling),
            ("window_s", f"{window_s:g}"),
            ("hop_s", f"{hop:g}"),
            ("model", model_type),
        ),
        **common,
    )
    return HFAudioExtractor(spec, model, processor, pooling, device, precision)


def _output_dim(config) -> int:
    for name in ("projection_dim", "hidden_size", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    raise ValueError(f"hf: cannot tell the output dimension of {type(config).__name__}")
