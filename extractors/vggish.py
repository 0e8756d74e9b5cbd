"""VGGish (AudioSet) embeddings: 0.96 s log-mel examples -> 128-d, with the PCA + uint8 benchmark variant.

Constants, the log-mel pipeline, the network and its key table follow docs/extractors.md (torchvggish); the
variants follow docs/reference-defects.md:
- ``tf``: pre-ReLU raw float embedding (what the TF model defines; the default in ``clean`` mode);
- ``vf``: post-ReLU raw float (torch ports, video_features);
- ``avgzsl``: post-ReLU -> AudioSet PCA -> clip [-2, 2] -> uint8 by truncation (the published AV-GZSL
  cls audio features; the default in ``benchmark`` mode).
In ``benchmark`` mode the waveform comes by the published path (16-bit PCM at the native rate, / 32768,
channel mean, resampy to 16 kHz; docs/benchmark-mode.md), in ``clean`` mode by one float resample.
The log-mel front-end runs batched on the model's device (periodic Hann 400, hop 160, |rfft 512|, HTK mel
64 bands 125-7500 Hz, log(x + 0.01)); examples are never padded, so < 0.975 s of audio gives no row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from extractors.base import Extractor, Window
from extractors.registry import register
from extractors.spec import ExtractorSpec, shapes_table
from extractors.weights import (
    WeightsError,
    check_state_dict,
    file_digest,
    is_random,
    load_checkpoint,
    random_weights_id,
    resolve_file,
    uninitialised,
)
from extractors.windowing import audio_windows
from pipeline.decode.types import AudioClip

SAMPLE_RATE = 16000  # docs/extractors.md constants
STFT_WINDOW = 400  # 0.025 s
STFT_HOP = 160  # 0.010 s
FFT_LENGTH = 512  # 2 ** ceil(log2(400))
MEL_BANDS = 64
MEL_MIN_HZ, MEL_MAX_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s
EXAMPLE_SECONDS = 0.96
EXAMPLE_SAMPLES = STFT_WINDOW + (EXAMPLE_FRAMES - 1) * STFT_HOP  # 15,600 samples = 0.975 s
EMBEDDING = 128
QUANT_MIN, QUANT_MAX = -2.0, 2.0
VARIANTS = ("tf", "vf", "avgzsl")
WEIGHT_NAMES = ("vggish-10086976.pth", "vggish.pth")
PCA_NAMES = ("vggish_pca_params.npz", "vggish_pca_params-970ea276.pth", "vggish_pca_params.pth")
WEIGHT_SOURCE = "github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth (torchvggish)"
PCA_SOURCE = (
    "video_features models/vggish/checkpoints/vggish_pca_params.npz, or torchvggish "
    "releases/download/v0.1/vggish_pca_params-970ea276.pth"
)

_CONVS = ((0, 1, 64), (3, 64, 128), (6, 128, 256), (8, 256, 256), (11, 256, 512), (13, 512, 512))
_FCS = ((0, 12288, 4096), (2, 4096, 4096), (4, 4096, EMBEDDING))


def expected_state_dict() -> dict[str, tuple[int, ...]]:
    """The 18-tensor table of ``vggish-10086976.pth`` (docs/extractors.md)."""
    table: dict[str, tuple[int, ...]] = {}
    for index, cin, cout in _CONVS:
        table[f"features.{index}.weight"] = (cout, cin, 3, 3)
        table[f"features.{index}.bias"] = (cout,)
    for index, fin, fout in _FCS:
        table[f"embeddings.{index}.weight"] = (fout, fin)
        table[f"embeddings.{index}.bias"] = (fout,)
    return table


def hertz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def mel_matrix(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(257, 64) HTK triangular weights built in the mel domain, DC row zeroed (docs/extractors.md step 4)."""
    bins_mel = hertz_to_mel(torch.linspace(0.0, SAMPLE_RATE / 2, FFT_LENGTH // 2 + 1, dtype=torch.float64))
    lo, hi = hertz_to_mel(torch.tensor([MEL_MIN_HZ, MEL_MAX_HZ], dtype=torch.float64))
    edges = torch.linspace(float(lo), float(hi), MEL_BANDS + 2, dtype=torch.float64)
    lower = (bins_mel[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])[None, :]
    upper = (edges[None, 2:] - bins_mel[:, None]) / (edges[2:] - edges[1:-1])[None, :]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    weights[0, :] = 0.0
    return weights.to(dtype)


class LogMel(nn.Module):
    """Batched VGGish front-end: (B, N) float waveforms at 16 kHz -> (B, frames, 64) log-mel."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(STFT_WINDOW, periodic=True), persistent=False)
        self.register_buffer("mel", mel_matrix(torch.float32), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        frames = wave.unfold(-1, STFT_WINDOW, STFT_HOP) * self.window  # no padding (snip edges)
        magnitude = torch.fft.rfft(frames, n=FFT_LENGTH).abs()
        return torch.log(magnitude @ self.mel + LOG_OFFSET)


class VGGishNet(nn.Module):
    """torchvggish's network with its key names; ``final_relu=False`` gives the TF (pre-ReLU) embedding."""

    def __init__(self, final_relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        for index, cin, cout in _CONVS:
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            if index in (0, 3, 8, 13):
                layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        fcs: list[nn.Module] = []
        for _, fin, fout in _FCS:
            fcs += [nn.Linear(fin, fout), nn.ReLU(inplace=True)]
        self.embeddings = nn.Sequential(*(fcs if final_relu else fcs[:-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 96, 64) -> (B, 128); flattened in TF NHWC order like torchvggish."""
        x = self.features(x)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return self.embeddings(x)


def quantize(embeddings: np.ndarray, eigen_vectors: np.ndarray, means: np.ndarray) -> np.ndarray:
    """AudioSet post-processing: PCA, clip to [-2, 2], scale to 0..255, uint8 by truncation (docs/reference-defects.md)."""
    pca = (embeddings.astype(np.float64) - means.reshape(1, -1)) @ eigen_vectors.T
    clipped = np.clip(pca, QUANT_MIN, QUANT_MAX)
    return ((clipped - QUANT_MIN) * (255.0 / (QUANT_MAX - QUANT_MIN))).astype(np.uint8)


def load_pca(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """PCA params from the ``.npz`` (preferred) or torchvggish's ``.pth`` of numpy arrays."""
    if path.suffix == ".npz":
        with np.load(path) as data:
            params = {key: np.asarray(data[key]) for key in data.files}
    else:
        reconstruct = np._core.multiarray._reconstruct
        allowed = [
            reconstruct,
            (reconstruct, "numpy.core.multiarray._reconstruct"),
            np.ndarray,
            np.dtype,
            np.dtypes.Float64DType,
            np.dtypes.Float32DType,
        ]
        try:
            with torch.serialization.safe_globals(allowed):
                raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # format problems -> one message with the fix
            raise WeightsError(
                f"vggish PCA: cannot read {path} ({type(err).__name__}); convert it once to .npz with the keys "
                f"pca_eigen_vectors and pca_means, or get the .npz from {PCA_SOURCE}"
            ) from err
        params = {key: np.asarray(value) for key, value in dict(raw).items()}
    try:
        vectors = params["pca_eigen_vectors"].astype(np.float64)
        means = params["pca_means"].astype(np.float64).reshape(-1)
    except KeyError as err:
        raise WeightsError(
            f"vggish PCA: {path} lacks key {err}; expected pca_eigen_vectors, pca_means"
        ) from err
    if vectors.shape != (EMBEDDING, EMBEDDING) or means.shape != (EMBEDDING,):
        raise WeightsError(
            f"vggish PCA: {path} has shapes {vectors.shape}, {means.shape}; expected (128, 128) and (128,)"
        )
    return vectors, means


def default_spec(mode: str, variant: str | None = None, hop_s: float = EXAMPLE_SECONDS) -> ExtractorSpec:
    variant = variant or ("avgzsl" if mode == "benchmark" else "tf")
    post = {
        "tf": "pre-ReLU float",
        "vf": "post-ReLU float",
        "avgzsl": "post-ReLU, AudioSet PCA, clip [-2, 2], uint8 truncation",
    }[variant]
    bench = mode == "benchmark"
    waveform = "int16 PCM at the native rate / 32768, channel mean, resampy" if bench else "mono float"
    return ExtractorSpec(
        name="vggish",
        modality="audio",
        sample_rate=SAMPLE_RATE,
        window=EXAMPLE_SECONDS,
        hop=hop_s,
        input_size=(EXAMPLE_FRAMES, MEL_BANDS),
        output_dim=EMBEDDING,
        output_dtype="uint8" if variant == "avgzsl" else "float32",
        preprocessing=(
            f"{waveform} to 16 kHz; periodic Hann 400 / hop 160, |rfft 512|, HTK mel 64 x 125-7500 Hz, "
            f"log(x + 0.01); 96-frame examples, no padding; {post}"
        ),
        mode=mode,
        weights_files=WEIGHT_NAMES + (PCA_NAMES if variant == "avgzsl" else ()),
        weights_source=WEIGHT_SOURCE + ("; PCA: " + PCA_SOURCE if variant == "avgzsl" else ""),
        state_dict_shapes=shapes_table(expected_state_dict()),
        provenance="Hershey et al. ICASSP 2017; harritaylor/torchvggish (docs/extractors.md, docs/reference-defects.md)",
        options=(("variant", variant), ("hop_s", f"{hop_s:g}")),
        audio_path="int16-resampy" if bench else "swresample",
    )


class VGGishExtractor(Extractor):
    def __init__(self, spec: ExtractorSpec, net: VGGishNet, pca, device: str, precision: str):
        super().__init__(spec, device, precision)
        self.variant = dict(spec.options)["variant"]
        self.hop_samples = int(round(spec.hop * SAMPLE_RATE))
        self.frontend = LogMel().to(self.device)
        self.net = net.eval().to(self.device)
        if self.device.type == "cuda":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.pca = pca

    def windows_from_audio(self, clip: AudioClip) -> Iterator[Window]:
        if clip.sample_rate != SAMPLE_RATE:
            raise ValueError(f"vggish needs {SAMPLE_RATE} Hz audio, got {clip.sample_rate} Hz")
        return audio_windows(
            clip,
            window_samples=EXAMPLE_SAMPLES,
            hop_samples=self.hop_samples,
            pad_last=False,
            min_samples=EXAMPLE_SAMPLES,
            nominal_window_s=EXAMPLE_SECONDS,
        )

    @torch.inference_mode()
    def prepare(self, windows: Sequence[Window]) -> torch.Tensor:
        """(B, 15600) samples -> (B, 1, 96, 64) log-mel on the device (float32, never autocast)."""
        wave = self.batch_to_device([w.data for w in windows]).float()
        return self.frontend(wave).unsqueeze(1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return self.net(inputs)

    def finalize(self, features: np.ndarray) -> np.ndarray:
        if self.variant == "avgzsl":
            return quantize(features, *self.pca)
        return np.ascontiguousarray(features, dtype=np.float32)


def _load_vggish(weights) -> tuple[dict, Path]:
    path = resolve_file(weights, WEIGHT_NAMES, what="vggish weights", source=WEIGHT_SOURCE)
    state = load_checkpoint(path, what="vggish weights")
    if any(key.startswith("fc.") for key in state):  # tcvrick port names (docs/extractors.md)
        state = {("embeddings." + k[3:] if k.startswith("fc.") else k): v for k, v in state.items()}
    check_state_dict(state, expected_state_dict(), what="vggish weights", path=path)
    return state, path


@register("vggish", default_spec)
def build_vggish(
    *,
    weights,
    device: str = "cpu",
    mode: str = "clean",
    variant: str | None = None,
    hop_s: float = EXAMPLE_SECONDS,
    pca_params: str | Path | None = None,
    precision: str = "auto",
    seed: int = 0,
) -> VGGishExtractor:
    """VGGish; ``weights`` = ``vggish-10086976.pth`` (or its folder) or ``"random"``.

    ``variant`` tf|vf|avgzsl (default per mode); ``pca_params`` defaults to a PCA file beside the weights;
    ``hop_s`` is a multiple of 0.01 s (e.g. 0.32 to align with 16-frame 25 fps C3D clips, docs/extractors.md).
    """
    variant = variant or ("avgzsl" if mode == "benchmark" else "tf")
    if variant not in VARIANTS:
        raise ValueError(f"vggish: variant must be one of {VARIANTS}, got {variant!r}")
    if hop_s <= 0 or not math.isclose(hop_s * 100, round(hop_s * 100), abs_tol=1e-6):
        raise ValueError(f"vggish: hop_s must be a positive multiple of 0.01 s, got {hop_s}")
    if mode == "benchmark" and not math.isclose(hop_s, EXAMPLE_SECONDS):
        raise ValueError("vggish: benchmark mode uses the published 0.96 s hop; use clean mode to change it")
    spec = default_spec(mode, variant, hop_s)
    pca = None
    if is_random(weights):
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = VGGishNet(final_relu=variant != "tf")
        if variant == "avgzsl":
            q, _ = torch.linalg.qr(
                torch.randn(EMBEDDING, EMBEDDING, generator=generator, dtype=torch.float64)
            )
            pca = (q.numpy(), np.zeros(EMBEDDING))
        spec = spec.with_weights(random_weights_id(seed))
    else:
        state, path = _load_vggish(weights)
        net = uninitialised(VGGishNet, final_relu=variant != "tf")
        net.load_state_dict(state, strict=True)
        ids = [f"{path.name}={file_digest(path)}"]
        if variant == "avgzsl":
            pca_path = resolve_file(
                pca_params if pca_params is not None else path.parent,
                PCA_NAMES,
                what="vggish PCA params (variant avgzsl)",
                source=PCA_SOURCE,
            )
            pca = load_pca(pca_path)
            ids.append(f"{pca_path.name}={file_digest(pca_path)}")
        spec = spec.with_weights("sha256:" + ",".join(ids))
    return VGGishExtractor(spec, net, pca, device, precision)
