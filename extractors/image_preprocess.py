"""Hugging Face image-processor settings applied batched on the model's device.

transformers 5 image processors are torchvision-backed by default (docs/extractors.md: fast vs slow processors);
this does the same operations (uint8 antialiased resize, optional centre crop, rescale, normalise) on a
whole batch already on the model's device, instead of per image on the CPU. Values follow the processor's own
config. The resize is :func:`extractors.resize.resize_u8`: on the CPU what torchvision computes there, and
the same integers on a GPU (where torchvision would resize in float and round).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from extractors.resize import resize_u8

_RESAMPLE = {0: InterpolationMode.NEAREST, 2: InterpolationMode.BILINEAR, 3: InterpolationMode.BICUBIC}


@dataclass(frozen=True)
class ImagePreprocess:
    size: tuple[int, int] | int  # (height, width), or the shortest edge (aspect kept)
    resample: int  # PIL code: 2 bilinear, 3 bicubic
    crop: tuple[int, int] | None
    rescale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_processor(cls, processor) -> ImagePreprocess:
        """Read a transformers image processor's settings; refuse ones this cannot reproduce."""
        size = dict(getattr(processor, "size", None) or {})
        if getattr(processor, "do_resize", True) is False:
            raise ValueError("image processors without resizing are not supported (frames vary in size)")
        if "height" in size and "width" in size:
            resize: tuple[int, int] | int = (int(size["height"]), int(size["width"]))
        elif "shortest_edge" in size:
            resize = int(size["shortest_edge"])
        else:
            raise ValueError(
                f"unsupported image processor size {size}; expected height/width or shortest_edge"
            )
        crop = None
        if getattr(processor, "do_center_crop", False):
            crop_size = dict(processor.crop_size)
            crop = (int(crop_size["height"]), int(crop_size["width"]))
        resample = int(getattr(processor, "resample", 2) or 2)
        if resample not in _RESAMPLE:
            raise ValueError(f"unsupported resample mode {resample} in the image processor")
        do_norm = getattr(processor, "do_normalize", True)
        mean = tuple(processor.image_mean) if do_norm else (0.0, 0.0, 0.0)
        std = tuple(processor.image_std) if do_norm else (1.0, 1.0, 1.0)
        rescale = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
        return cls(resize, resample, crop, rescale, mean, std)

    def output_size(self) -> tuple[int, int]:
        if self.crop is not None:
            return self.crop
        if isinstance(self.size, tuple):
            return self.size
        return (self.size, self.size)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) after the resize; a shortest edge keeps the aspect ratio, as torchvision's resize does."""
        if isinstance(self.size, tuple):
            return self.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def summary(self) -> str:
        crop = f", centre crop {self.crop[0]}x{self.crop[1]}" if self.crop else ""
        size = (
            f"{self.size[0]}x{self.size[1]}" if isinstance(self.size, tuple) else f"shortest edge {self.size}"
        )
        return (
            f"resize {size} {_RESAMPLE[self.resample].value} antialias (uint8){crop}, x{self.rescale:.6g}, "
            f"mean {tuple(round(m, 6) for m in self.mean)}, std {tuple(round(s, 6) for s in self.std)}"
        )

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 on any device -> (B, 3, h, w) float32 normalised."""
        x = frames.permute(0, 3, 1, 2)
        size = self.resized_size(x.shape[-2], x.shape[-1])
        if self.resample == 0:  # nearest: an index lookup, the same on every device
            x = TF.resize(x, list(size), interpolation=InterpolationMode.NEAREST)
        else:
            x = resize_u8(x, size, _RESAMPLE[self.resample].value)
        if self.crop is not None:
            x = TF.center_crop(x, list(self.crop))
        x = x.float() * self.rescale
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()
