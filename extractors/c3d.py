"""C3D (Sports-1M layout) clip embeddings: fc7 (default) or fc6 after ReLU, 4096-d per 16-frame clip.

Architecture, key table and the AV-GZSL preprocessing follow docs/extractors.md; the benchmark-mode quirks
(BGR input, the colour wrap-inversion of ``ToPILImage`` on float tensors) follow docs/reference-defects.md.

Modes:
- ``benchmark``: 25 fps chosen like FFmpeg's ``fps`` filter (the published videos were converted to 25 fps
  with FFmpeg; docs/benchmark-mode.md), non-overlapping 16-frame clips from 0, last clip zero-padded *in
  normalised space*, BGR channel order, wrap-inversion ``(256 - v) mod 256`` computed in integer arithmetic
  (UCF / VGGSound scripts; pass ``invert=False`` for the ActivityNet script, which is not inverted), resize
  to 128x171 on uint8 (the published PIL resize to within one level on under 0.5 % of values;
  extractors/resize.py), centre crop 112, Kinetics mean/std.
- ``clean``: 25 fps by PTS (the frame displayed at each k/25 s), same geometry and statistics, RGB, no
  inversion, the same uint8 resize, the last clip padded by repeating its last frame; ``hop`` may be set for
  overlapping clips.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from extractors.base import Extractor, Window
from extractors.registry import register
from extractors.resize import resize_u8
from extractors.spec import ExtractorSpec, shapes_table
from extractors.weights import is_random, load_strict, random_weights_id, uninitialised, weights_id
from extractors.windowing import FrameWindower, iter_frame_windows
from pipeline.decode.types import FrameChunk

FPS = 25.0  # docs/extractors.md AV-GZSL step 1 (videos converted to 25 fps)
CLIP_FRAMES = 16
RESIZE_HW = (128, 171)  # docs/extractors.md step 3: Resize((128, 171))
CROP = 112
MEAN = (
    0.43216,
    0.394666,
    0.37645,
)  # docs/extractors.md step 3 (Kinetics statistics, applied to BGR as published)
STD = (0.22803, 0.22145, 0.216989)
WEIGHT_NAMES = ("c3d.pickle",)
WEIGHT_SOURCE = "imagelab.ing.unimore.it/files/c3d_pytorch/c3d.pickle (DavideA/c3d-pytorch README)"

_CONVS = {  # name -> (in, out); every conv is 3x3x3, padding 1 (docs/extractors.md table)
    "conv1": (3, 64),
    "conv2": (64, 128),
    "conv3a": (128, 256),
    "conv3b": (256, 256),
    "conv4a": (256, 512),
    "conv4b": (512, 512),
    "conv5a": (512, 512),
    "conv5b": (512, 512),
}
_FCS = {"fc6": (8192, 4096), "fc7": (4096, 4096), "fc8": (4096, 487)}


def expected_state_dict() -> dict[str, tuple[int, ...]]:
    """The 22-tensor table of ``c3d.pickle`` (docs/extractors.md)."""
    table: dict[str, tuple[int, ...]] = {}
    for name, (cin, cout) in _CONVS.items():
        table[f"{name}.weight"] = (cout, cin, 3, 3, 3)
        table[f"{name}.bias"] = (cout,)
    for name, (fin, fout) in _FCS.items():
        table[f"{name}.weight"] = (fout, fin)
        table[f"{name}.bias"] = (fout,)
    return table


class C3DNet(nn.Module):
    """The Sports-1M C3D network with the original module names, truncated after ``layer`` (fc6 or fc7)."""

    def __init__(self, layer: str = "fc7"):
        super().__init__()
        for name, (cin, cout) in _CONVS.items():
            setattr(self, name, nn.Conv3d(cin, cout, kernel_size=3, padding=1))
        self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.pool2 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.pool4 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.pool5 = nn.MaxPool3d(kernel_size=2, stride=2, padding=(0, 1, 1))
        for name, (fin, fout) in _FCS.items():
            setattr(self, name, nn.Linear(fin, fout))
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 16, 112, 112) -> (B, 4096): fc6 or fc7 after ReLU (dropout is inactive at inference)."""
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        x = self.pool3(F.relu(self.conv3b(F.relu(self.conv3a(x)))))
        x = self.pool4(F.relu(self.conv4b(F.relu(self.conv4a(x)))))
        x = self.pool5(F.relu(self.conv5b(F.relu(self.conv5a(x)))))
        x = F.relu(self.fc6(x.flatten(1)))
        if self.layer == "fc6":
            return x
        return F.relu(self.fc7(x))


def invert_wrap(frames_u8: torch.Tensor) -> torch.Tensor:
    """The ``ToPILImage``-on-float colour wrap, (256 - v) mod 256, in integer arithmetic (docs/reference-defects.md)."""
    return ((256 - frames_u8.to(torch.int16)) % 256).to(torch.uint8)


CROP_BOX = (
    int(round((RESIZE_HW[0] - CROP) / 2.0)),  # torchvision CenterCrop offsets
    int(round((RESIZE_HW[1] - CROP) / 2.0)),
    CROP,
    CROP,
)


def preprocess_reference(
    frames: torch.Tensor, valid: Sequence[int], *, bgr: bool, invert: bool, zero_pad: bool
) -> torch.Tensor:
    """The AV-GZSL transform chain step by step: (B, T, H, W, 3) uint8 RGB -> (B, 3, T, 112, 112) float.

    Channel order, wrap-inversion, resize to 128x171 (uint8, :func:`extractors.resize.resize_u8`, tested
    against its own plain definition), centre crop 112, /255, Kinetics mean/std, frames past ``valid`` zeroed
    in normalised space.
    """
    x = frames.flip(-1) if bgr else frames
    if invert:
        x = invert_wrap(x)
    b, t, h, w, _ = x.shape
    x = resize_u8(x.reshape(b * t, h, w, 3).permute(0, 3, 1, 2), RESIZE_HW)
    top, left = CROP_BOX[:2]
    x = x[:, :, top : top + CROP, left : left + CROP].float()
    x = x.reshape(b, t, 3, CROP, CROP).permute(0, 2, 1, 3, 4)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1, 1)
    x = (x / 255.0 - mean) / std
    if zero_pad:
        keep = torch.arange(t, device=x.device)[None, :] < torch.tensor(list(valid), device=x.device)[:, None]
        x = x * keep[:, None, :, None, None]
    return x.contiguous()


def default_spec(
    mode: str, layer: str = "fc7", hop: int = CLIP_FRAMES, invert: bool | None = None, bgr: bool | None = None
) -> ExtractorSpec:
    bench = mode == "benchmark"
    invert = bench if invert is None else invert
    bgr = bench if bgr is None else bgr
    order = "BGR" if bgr else "RGB"
    tail = "last clip zeros in normalised space" if bench else "last clip edge-repeated"
    frame_rule = "ffmpeg" if bench else "pts"
    choice = "FFmpeg fps-filter frame choice" if bench else "by PTS"
    return ExtractorSpec(
        name="c3d",
        modality="visual",
        sample_rate=FPS,
        window=CLIP_FRAMES,
        hop=hop,
        input_size=(3, CLIP_FRAMES, CROP, CROP),
        output_dim=4096,
        output_dtype="float32",
        preprocessing=(
            f"{FPS:g} fps, {choice}; {order}{'; wrap-inverted (256-v) mod 256' if invert else ''}; "
            f"resize {RESIZE_HW[0]}x{RESIZE_HW[1]} uint8 bilinear antialias (16-bit fixed point); "
            f"centre crop {CROP}; /255; "
            f"Kinetics mean/std; {tail}; {layer} after ReLU"
        ),
        mode=mode,
        weights_files=WEIGHT_NAMES,
        weights_source=WEIGHT_SOURCE,
        state_dict_shapes=shapes_table(expected_state_dict()),
        provenance="Tran et al. ICCV 2015; DavideA/c3d-pytorch; AV-GZSL scripts (docs/extractors.md, docs/reference-defects.md)",
        options=(("layer", layer), ("hop", str(hop)), ("invert", str(invert)), ("bgr", str(bgr))),
        frame_rule=frame_rule,
    )


class C3DExtractor(Extractor):
    def __init__(self, spec: ExtractorSpec, net: C3DNet, device: str, precision: str):
        super().__init__(spec, device, precision)
        options = dict(spec.options)
        self.invert = options["invert"] == "True"
        self.bgr = options["bgr"] == "True"
        self.net = net.eval().to(self.device)
        if self.device.type == "cuda":
            self.net = self.net.to(memory_format=torch.channels_last_3d)
        std = torch.tensor(STD)
        self.register_buffer("scale", (1.0 / (255.0 * std)).to(self.device), persistent=False)
        self.register_buffer("shift", (-torch.tensor(MEAN) / std).to(self.device), persistent=False)

    def frame_windower(self) -> FrameWindower:
        return FrameWindower(CLIP_FRAMES, int(self.spec.hop), self.spec.sample_rate)

    def windows_from_frames(self, chunks: Iterable[FrameChunk]) -> Iterator[Window]:
        return iter_frame_windows(self.frame_windower(), chunks)

    @torch.inference_mode()
    def prepare(self, windows: Sequence[Window]) -> torch.Tensor:
        """(B, 16, H, W, 3) uint8 RGB -> (B, 3, 16, 112, 112) float on the device: the steps of
        :func:`preprocess_reference` reordered to touch full-size frames once (equal within float rounding,
        tests/test_extractors_c3d.py).

        On uint8, ``neg`` is the wrap-inversion; resize and crop run on uint8 and only the 112x112 crop goes
        on, read once in BGR or RGB order by one fused normalisation. 79 % of C3D's pipeline CPU time went to
        the step by step chain (issue 19); this takes 0.15 CPU-ms per 320x240 frame instead of 2.
        """
        x = self.batch_to_device([w.data for w in windows])
        if self.invert:
            x.neg_()  # (256 - v) mod 256 == -v in uint8 arithmetic; x is this call's own copy
        b, t, h, w, _ = x.shape
        x = resize_u8(x.view(b * t, h, w, 3).permute(0, 3, 1, 2), RESIZE_HW, crop=CROP_BOX)
        x = x.reshape(b, t, 3, CROP, CROP)
        out = torch.empty((b, 3, t, CROP, CROP), device=x.device)
        for channel, source in enumerate((2, 1, 0) if self.bgr else (0, 1, 2)):
            # (x / 255 - mean) / std as x * scale + shift, read from uint8 and written once
            torch.addcmul(self.shift[channel], x[:, :, source], self.scale[channel], out=out[:, channel])
        if self.spec.mode == "benchmark":
            for row, window in enumerate(windows):
                out[row, :, window.valid :] = 0.0
        if self.device.type == "cuda":
            return out.contiguous(memory_format=torch.channels_last_3d)
        return out

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)


@register("c3d", default_spec)
def build_c3d(
    *,
    weights,
    device: str = "cpu",
    mode: str = "clean",
    layer: str = "fc7",
    hop: int | None = None,
    invert: bool | None = None,
    bgr: bool | None = None,
    precision: str = "auto",
    seed: int = 0,
) -> C3DExtractor:
    """C3D; ``weights`` = ``c3d.pickle`` (or its folder) or ``"random"``; ``layer`` fc6|fc7."""
    if layer not in ("fc6", "fc7"):
        raise ValueError(f"c3d: layer must be 'fc6' or 'fc7', got {layer!r}")
    if mode == "benchmark" and hop not in (None, CLIP_FRAMES):
        raise ValueError("c3d: benchmark mode uses non-overlapping 16-frame clips; hop cannot be changed")
    spec = default_spec(mode, layer=layer, hop=hop or CLIP_FRAMES, invert=invert, bgr=bgr)
    if is_random(weights):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = C3DNet(layer)
        spec = spec.with_weights(random_weights_id(seed))
    else:
        state, path = load_strict(
            weights, WEIGHT_NAMES, expected_state_dict(), what="c3d weights", source=WEIGHT_SOURCE
        )
        net = uninitialised(C3DNet, layer)
        net.load_state_dict(state, strict=True)
        spec = spec.with_weights(weights_id([path]))
    return C3DExtractor(spec, net, device, precision)
