"""uint8 antialiased resizing: the plain definition equals PyTorch's CPU kernel bit for bit, crops included,
and the image processors' resize keeps torchvision's values on the CPU."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

from extractors.image_preprocess import ImagePreprocess
from extractors.resize import resize_reference, resize_u8


def _images(height: int, width: int, seed: int) -> torch.Tensor:
    """Noise over the bottom half, a smooth band on top: both rounding regimes of the fixed-point sums."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8, generator=generator)
    x[:, :, : height // 2] = torch.randint(
        60, 90, (2, 3, height // 2, width), dtype=torch.uint8, generator=generator
    )
    return x


SIZES = [(240, 320, 128, 171), (72, 96, 128, 171), (360, 480, 224, 224), (17, 300, 9, 13), (50, 50, 50, 80)]
rng = random.Random(0)
SIZES += [tuple(rng.randint(2, 300) for _ in range(4)) for _ in range(12)]


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize(("height", "width", "out_h", "out_w"), SIZES)
def test_the_definition_is_pytorchs_uint8_kernel(mode, height, width, out_h, out_w):
    x = _images(height, width, seed=height * width)
    reference = resize_reference(x, (out_h, out_w), mode)
    for layout in (torch.contiguous_format, torch.channels_last):
        kernel = F.interpolate(
            x.contiguous(memory_format=layout), size=(out_h, out_w), mode=mode, antialias=True
        )
        assert torch.equal(reference, kernel)


def test_a_crop_computes_exactly_those_pixels():
    x = _images(240, 320, seed=1)
    full = resize_reference(x, (128, 171))
    box = (8, 30, 112, 112)
    crop = full[:, :, 8:120, 30:142]
    assert torch.equal(resize_reference(x, (128, 171), crop=box), crop)
    assert torch.equal(resize_u8(x, (128, 171), crop=box), crop)
    assert torch.equal(
        resize_reference(x, (240, 171), crop=box), resize_reference(x, (240, 171))[:, :, 8:120, 30:142]
    )


def test_one_level_from_pillow_on_about_one_percent():
    x = _images(240, 320, seed=2)
    ours = resize_u8(x, (128, 171))
    pil = torch.stack([_pil_resize(img, (171, 128)) for img in x])
    diff = (ours.int() - pil.int()).abs()
    assert diff.max() == 1 and 0.001 < (diff > 0).float().mean() < 0.02


def _pil_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    resized = Image.fromarray(image.permute(1, 2, 0).numpy()).resize(size, Image.BILINEAR)
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        resize_u8(torch.zeros(1, 3, 4, 4), (2, 2))
    with pytest.raises(ValueError, match="resize mode 'area'"):
        resize_u8(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), (2, 2), mode="area")


@pytest.mark.parametrize(
    ("size", "crop"),
    [((224, 224), None), (256, (224, 224)), (160, None)],  # fixed, shortest edge + crop
)
def test_image_processor_resize_keeps_torchvisions_values(size, crop):
    pre = ImagePreprocess(size, 2, crop, 1 / 255, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    for height, width in ((240, 320), (320, 240)):
        frames = _images(height, width, seed=3).permute(0, 2, 3, 1)
        x = TF.resize(
            frames.permute(0, 3, 1, 2), list(size) if isinstance(size, tuple) else [size], antialias=True
        )
        if crop is not None:
            x = TF.center_crop(x, list(crop))
        expected = (x.float() / 255 - 0.5) / 0.5
        assert torch.allclose(pre(frames), expected, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_gpu_gives_the_cpu_integers():
    x = _images(240, 320, seed=4)
    for mode in ("bilinear", "bicubic"):
        cpu = resize_u8(x, (128, 171), mode, crop=(8, 30, 112, 112))
        assert torch.equal(resize_u8(x.cuda(), (128, 171), mode, crop=(8, 30, 112, 112)).cpu(), cpu)
