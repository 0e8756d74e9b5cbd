"""AST (Audio Spectrogram Transformer) through transformers: one pooled 768-d row per 10.24 s window.

docs/extractors.md: ``ASTFeatureExtractor`` = Kaldi fbank (25 ms / 10 ms, Hanning, preemphasis 0.97, DC removal,
power spectrum of a 512-point FFT, 128 mel bins 20 Hz-8 kHz, log floored at float eps), padded with zeros in the
log-mel domain or truncated to 1,024 frames, then (x + 4.2677393) / (2 * 4.5689974). Here the same fbank runs
batched on the model's device. Windows: 1,024 frames = 164,080 samples, starting every ``hop_frames`` frames
(default 1,024, i.e. window k starts at 10.24 k s); the last window is zero-padded in the log-mel domain, so
every frame that exists is identical to the one HF computes for that slice. The model sees 12 x 101 patches
+ CLS + distillation = 1,214 tokens; ``pooler_output`` = mean of the two special tokens (the default pooling).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torchaudio.compliance.kaldi import get_mel_banks
from transformers import ASTConfig, ASTModel

from extractors.base import Extractor, Window
from extractors.hf_tables import ast_checkpoint_table
from extractors.registry import register
from extractors.spec import ExtractorSpec, shapes_table
from extractors.weights import check_hf_loading, hf_weights_id, is_random, random_weights_id, resolve_hf_dir
from extractors.windowing import audio_windows
from pipeline.decode.types import AudioClip

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms (kaldi default)
FRAME_SHIFT = 160  # 10 ms
FFT_LENGTH = 512  # round_to_power_of_two
PREEMPHASIS = 0.97
LOW_FREQ = 20.0
MAX_FRAMES = 1024  # ASTFeatureExtractor max_length
NUM_MEL_BINS = 128
NORM_MEAN, NORM_STD = -4.2677393, 4.5689974  # ASTFeatureExtractor defaults (AudioSet statistics)
WINDOW_SAMPLES = FRAME_LENGTH + (MAX_FRAMES - 1) * FRAME_SHIFT  # 164,080
POOLINGS = ("pooler", "cls", "mean")
AUDIOSET_LABELS = 527  # the published checkpoint's classifier (docs/extractors.md config)
DEFAULT_MODEL_ID = "MIT/ast-finetuned-audioset-10-10-0.4593"
WEIGHT_SOURCE = (
    f"a local Hugging Face folder of {DEFAULT_MODEL_ID} (save_pretrained layout: config.json + model.safetensors), "
    "or that model already in the local HF cache"
)


class KaldiFbank(nn.Module):
    """Batched ``torchaudio.compliance.kaldi.fbank`` with AST's arguments: (B, N) -> (B, frames, 128)."""

    def __init__(self, num_mel_bins: int = NUM_MEL_BINS):
        super().__init__()
        banks, _ = get_mel_banks(
            num_mel_bins, FFT_LENGTH, float(SAMPLE_RATE), LOW_FREQ, 0.0, 100.0, -500.0, 1.0
        )
        banks = torch.nn.functional.pad(banks, (0, 1))  # (bins, 257): no weight on the Nyquist bin
        self.register_buffer("banks", banks.T.contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(FRAME_LENGTH, periodic=False), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        frames = wave.unfold(-1, FRAME_LENGTH, FRAME_SHIFT)  # snip_edges=True
        frames = frames - frames.mean(dim=-1, keepdim=True)  # remove_dc_offset
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # replicate-padded shift
        frames = (frames - PREEMPHASIS * previous) * self.window
        power = torch.fft.rfft(frames, n=FFT_LENGTH).abs().pow(2.0)
        mel = power @ self.banks
        return torch.log(torch.clamp_min(mel, torch.finfo(mel.dtype).eps))


def default_spec(
    mode: str,
    hop_frames: int = MAX_FRAMES,
    pooling: str = "pooler",
    config: ASTConfig | None = None,
    weights_files: tuple[str, ...] = (DEFAULT_MODEL_ID,),
) -> ExtractorSpec:
    config = config or ASTConfig(num_labels=AUDIOSET_LABELS)
    return ExtractorSpec(
        name="ast",
        modality="audio",
        sample_rate=SAMPLE_RATE,
        window=MAX_FRAMES * FRAME_SHIFT / SAMPLE_RATE,
        hop=hop_frames * FRAME_SHIFT / SAMPLE_RATE,
        input_size=(MAX_FRAMES, NUM_MEL_BINS),
        output_dim=int(config.hidden_size),
        output_dtype="float32",
        preprocessing=(
            "mono 16 kHz float (not int16-scaled); kaldi fbank 25/10 ms hanning, preemphasis 0.97, DC removal, "
            "power |rfft 512|^2, 128 mel 20-8000 Hz, log; 1024 frames, last window zero-padded in log-mel; "
            f"(x + {-NORM_MEAN}) / (2 * {NORM_STD}); pooling {pooling}"
        ),
        mode=mode,
        weights_files=weights_files,
        weights_source=WEIGHT_SOURCE,
        state_dict_shapes=shapes_table(ast_checkpoint_table(config)),
        provenance="Gong et al. Interspeech 2021; transformers ASTModel (docs/extractors.md)",
        options=(("hop_frames", str(hop_frames)), ("pooling", pooling)),
    )


class ASTExtractor(Extractor):
    def __init__(self, spec: ExtractorSpec, model: ASTModel, device, precision):
        super().__init__(spec, device, precision)
        options = dict(spec.options)
        self.hop_frames = int(options["hop_frames"])
        self.pooling = options["pooling"]
        self.frontend = KaldiFbank(int(model.config.num_mel_bins)).to(self.device)
        self.model = model.eval().to(self.device)

    def windows_from_audio(self, clip: AudioClip) -> Iterator[Window]:
        if clip.sample_rate != SAMPLE_RATE:
            raise ValueError(f"ast needs {SAMPLE_RATE} Hz audio, got {clip.sample_rate} Hz")
        return audio_windows(
            clip,
            window_samples=WINDOW_SAMPLES,
            hop_samples=self.hop_frames * FRAME_SHIFT,
            pad_last=True,
            min_samples=FRAME_LENGTH,
            nominal_window_s=MAX_FRAMES * FRAME_SHIFT / SAMPLE_RATE,
        )

    @torch.inference_mode()
    def prepare(self, windows: Sequence[Window]) -> torch.Tensor:
        """(B, 164080) samples -> (B, 1024, 128) normalised fbank, padded frames zero before normalising."""
        wave = self.batch_to_device([w.data for w in windows]).float()
        fbank = self.frontend(wave)
        frames = torch.tensor(
            [1 + (w.valid - FRAME_LENGTH) // FRAME_SHIFT for w in windows], device=fbank.device
        )
        keep = torch.arange(fbank.shape[1], device=fbank.device)[None, :] < frames[:, None]
        fbank = fbank * keep[:, :, None]
        return (fbank - NORM_MEAN) / (NORM_STD * 2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(input_values=inputs)
        if self.pooling == "pooler":
            return out.pooler_output
        if self.pooling == "cls":
            return out.last_hidden_state[:, 0]
        return out.last_hidden_state[:, 2:].mean(dim=1)


@register("ast", default_spec)
def build_ast(
    *,
    weights,
    device: str = "cpu",
    mode: str = "clean",
    hop_frames: int = MAX_FRAMES,
    pooling: str = "pooler",
    precision: str = "auto",
    seed: int = 0,
) -> ASTExtractor:
    """AST; ``weights`` = local HF folder / cached model id, or ``"random"`` (``ASTConfig()`` = the AudioSet
    checkpoint's architecture); ``hop_frames`` in 10 ms frames (512 = 50 % overlap)."""
    if pooling not in POOLINGS:
        raise ValueError(f"ast: pooling must be one of {POOLINGS}, got {pooling!r}")
    if not 1 <= hop_frames <= MAX_FRAMES:
        raise ValueError(f"ast: hop_frames must be in 1..{MAX_FRAMES}, got {hop_frames}")
    if is_random(weights):
        config = ASTConfig(num_labels=AUDIOSET_LABELS)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ASTModel(config)
        spec = default_spec(mode, hop_frames, pooling, config).with_weights(random_weights_id(seed))
    else:
        folder = resolve_hf_dir(weights, what="ast weights")
        model, info = ASTModel.from_pretrained(folder, local_files_only=True, output_loading_info=True)
        check_hf_loading(info, what="ast weights", folder=folder)
        cfg = model.config
        if (cfg.max_length, cfg.num_mel_bins) != (MAX_FRAMES, NUM_MEL_BINS):
            raise ValueError(
                f"ast: {folder} expects {cfg.max_length}x{cfg.num_mel_bins} inputs; only 1024x128"
            )
        spec = default_spec(mode, hop_frames, pooling, cfg, weights_files=(str(weights),))
        spec = spec.with_weights(hf_weights_id(folder))
    return ASTExtractor(spec, model, device, precision)
