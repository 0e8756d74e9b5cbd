"""C3D: key table, shape chain, clip counts on the samples, and each benchmark-mode quirk (docs/extractors.md, docs/reference-defects.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from extractors.base import Window
from extractors.c3d import C3DNet, expected_state_dict, invert_wrap, preprocess_reference
from extractors.registry import build_extractor
from extractors.weights import WeightsError
from extractors.windowing import FrameWindower, PtsResampler
from pipeline.decode import iter_frames, plan_samples
from pipeline.decode.types import FrameChunk
from tests.extractor_helpers import kaiming_, relative_change, sample_frames, save_zero_checkpoint

MEAN, STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)


@pytest.fixture(scope="module")
def c3d_bench():
    return build_extractor("c3d", weights="random", mode="benchmark")


@pytest.fixture(scope="module")
def c3d_kaiming():
    """Benchmark-mode C3D whose fc7 follows its input: tests that guard preprocessing use this one."""
    model = build_extractor("c3d", weights="random", mode="benchmark")
    kaiming_(model.net, seed=0)
    return model


def test_key_table_parameter_count_and_shape_chain():
    table = expected_state_dict()
    assert len(table) == 22
    assert table["conv1.weight"] == (64, 3, 3, 3, 3) and table["conv3b.weight"] == (256, 256, 3, 3, 3)
    assert table["fc6.weight"] == (4096, 8192) and table["fc8.weight"] == (487, 4096)
    net = C3DNet()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == table
    assert sum(p.numel() for p in net.parameters()) == 79_991_015
    with torch.device("meta"):  # the pool5 output must flatten to 8192 for a 16x112x112 clip
        x = torch.empty(1, 3, 16, 112, 112)
        for conv, pool in [("conv1", "pool1"), ("conv2", "pool2")]:
            x = getattr(net.to("meta"), pool)(getattr(net, conv)(x))
        assert tuple(x.shape) == (1, 128, 8, 28, 28)


@pytest.mark.parametrize(
    ("stem", "clips", "frames"), [("v_GGSY1Qvo990", 29, (451, 452)), ("v_ZNVhz7ctTq0", 22, (350, 350))]
)
def test_clip_counts_on_samples_both_modes(sample_videos, stem, clips, frames):
    for mode, rule, count in (("benchmark", "ffmpeg", frames[0]), ("clean", "pts", frames[1])):
        model = build_extractor("c3d", weights="random", mode=mode)
        assert model.spec.frame_rule == rule
        chunks = list(iter_frames(sample_videos[stem], fps=25.0, frame_rule=rule, chunk_frames=64))
        assert sum(len(c) for c in chunks) == count
        windower = model.frame_windower()
        windows = [w for c in chunks for w in windower.push(c)] + windower.flush()
        assert len(windows) == clips == -(-count // 16), mode
        assert windows[1].start_s == pytest.approx(0.64) and windows[1].end_s == pytest.approx(1.28)
        assert windows[-1].valid == count - 16 * (clips - 1)
        assert tuple(windows[0].data.shape[:1]) == (16,)
    # one native-rate decode resampled by PTS gives the same count as the decoder's own 25 fps sampling
    resampler, windower = PtsResampler(25.0), FrameWindower(16, 16, 25.0)
    native = sample_frames(sample_videos[stem], fps=None)
    pieces = [resampler.push(c) for c in native] + [resampler.flush()]
    resampled = [w for p in pieces if p is not None for w in windower.push(p)] + windower.flush()
    assert len(resampled) == clips


@pytest.mark.parametrize("rule", ["pts", "ffmpeg"])
def test_streaming_resampler_follows_the_plan_of_its_rule(rule):
    rng = np.random.default_rng(3)
    pts = 0.37 + np.concatenate([[0.0], np.cumsum(np.round(rng.uniform(0.004, 0.09, 80), 4))])
    tiny = np.zeros((pts.size, 1, 1, 3), np.uint8)
    resampler, got = PtsResampler(25.0, rule), []
    for begin in range(0, pts.size, 7):  # chunks as a native-rate decode delivers them
        got.append(
            resampler.push(
                FrameChunk(
                    tiny[begin : begin + 7],
                    pts[begin : begin + 7],
                    np.arange(begin, min(begin + 7, pts.size)),
                )
            )
        )
    got.append(resampler.flush())
    index = np.concatenate([c.source_index for c in got if c is not None])
    target = np.concatenate([c.target_s for c in got if c is not None])
    end = pts[-1] + (pts[-1] - pts[-2])  # the last frame lasts as long as the interval before it
    plan = plan_samples(pts, end, fps=25.0, frame_rule=rule)
    assert index.tolist() == plan.indices.tolist() and np.allclose(target, plan.target_s)


@pytest.mark.slow
def test_a_one_frame_shift_moves_fc7_only_with_input_sensitive_weights(sample_videos, c3d_bench, c3d_kaiming):
    path = sample_videos["v_GGSY1Qvo990"]
    ffmpeg = np.concatenate([c.frames for c in iter_frames(path, fps=25.0, frame_rule="ffmpeg", end_s=0.7)])
    pts = np.concatenate([c.frames for c in iter_frames(path, fps=25.0, end_s=0.7)])
    clip, shifted, other_rule = (
        Window(torch.from_numpy(f[:16].copy()), 0.0, 0.64, 16) for f in (ffmpeg, ffmpeg[1:], pts)
    )
    out = c3d_kaiming.embed([clip, shifted, other_rule, clip])
    assert torch.allclose(out[0], out[3], atol=1e-5)  # the same input gives the same output ...
    assert relative_change(out[0], out[1]) > 0.02  # ... one frame later moves fc7 by several percent
    assert relative_change(out[0], out[2]) > 0.02  # and so does the other frame rule (7 of 16 frames differ)
    default = c3d_bench.embed([clip, shifted])  # PyTorch's default init: fc7 hardly sees its input
    assert relative_change(default[0], default[1]) < 0.005


def test_invert_wrap_equals_to_pil_image_on_float_tensors():
    values = torch.arange(256, dtype=torch.uint8).reshape(16, 16)
    image = torch.stack([values, values.T, values.flip(0)]).float()  # CHW float 0..255 as the scripts had it
    reference = np.asarray(T.ToPILImage()(image))  # torchvision's own mul(255).byte() wrap
    ours = invert_wrap(image.permute(1, 2, 0).to(torch.uint8)).numpy()
    assert np.array_equal(ours, reference)
    assert invert_wrap(torch.tensor([0, 10, 200], dtype=torch.uint8)).tolist() == [0, 246, 56]


def test_neg_is_the_wrap_inversion_on_uint8():
    values = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(values.neg(), invert_wrap(values))


@pytest.mark.parametrize("mode", ["benchmark", "clean"])
@pytest.mark.parametrize(("height", "width"), [(240, 320), (72, 96), (131, 97)])  # down, up, mixed
def test_prepare_equals_the_step_by_step_chain(mode, height, width):
    model = build_extractor("c3d", weights="random", mode=mode)
    frames = torch.randint(
        0, 256, (3, 16, height, width, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    windows = [Window(frames[i], 0.0, 0.64, valid) for i, valid in enumerate((16, 5, 1))]
    reference = preprocess_reference(
        frames, [16, 5, 1], bgr=model.bgr, invert=model.invert, zero_pad=mode == "benchmark"
    )
    ours = model.prepare(windows)
    assert ours.shape == reference.shape == (3, 3, 16, 112, 112)
    assert (ours - reference).abs().max() <= 1e-5  # the resized uint8 frames are the same integers


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_prepare_on_the_gpu_equals_the_cpu_path():
    frames = torch.randint(
        0, 256, (2, 16, 240, 320, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    windows = [Window(frames[0], 0.0, 0.64, 16), Window(frames[1], 0.64, 1.28, 7)]
    for mode in ("benchmark", "clean"):
        cpu = build_extractor("c3d", weights="random", mode=mode).prepare(windows)
        gpu = build_extractor("c3d", weights="random", mode=mode, device="cuda").prepare(windows)
        assert (gpu.cpu() - cpu).abs().max() <= 1e-5


def _script_reference(frames_rgb: np.ndarray) -> torch.Tensor:
    """The AV-GZSL UCF/VGGSound per-frame transform on BGR float frames (docs/extractors.md step 3)."""
    transform = T.Compose(
        [T.ToPILImage(), T.Resize((128, 171)), T.CenterCrop(112), T.ToTensor(), T.Normalize(MEAN, STD)]
    )
    bgr = frames_rgb[..., ::-1].astype(np.float32)
    return torch.stack([transform(torch.from_numpy(f.copy()).permute(2, 0, 1)) for f in bgr], dim=1)


def test_benchmark_preprocessing_matches_the_published_script(c3d_bench):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (16, 72, 96, 3), dtype=np.uint8)
    frames[:, :36] = rng.integers(60, 90, (16, 36, 96, 3), dtype=np.uint8)  # smooth region + noise region
    ours = c3d_bench.prepare([Window(torch.from_numpy(frames), 0.0, 0.64, 16)])[0]
    reference = _script_reference(frames)
    one_step = 1.0 / 255 / min(STD)  # one uint8 level after normalisation
    diff = (ours - reference).abs()
    assert diff.max() <= one_step + 1e-5  # PIL's fixed-point weights: at most one uint8 level apart ...
    assert (diff > 1e-4).float().mean() <= 0.02  # ... on under 2 % of the values
    # the quirks themselves are exact: BGR + inversion make the result far from the clean RGB path
    clean = build_extractor("c3d", weights="random").prepare(
        [Window(torch.from_numpy(frames), 0.0, 0.64, 16)]
    )[0]
    assert (clean - reference).abs().mean() > 50 * one_step


def test_last_clip_padding_per_mode(c3d_bench):
    frames = torch.randint(0, 256, (5, 40, 50, 3), dtype=torch.uint8)
    windower = FrameWindower(16, 16, 25.0)
    chunk = FrameChunk(frames.numpy(), np.arange(5) / 25.0, np.arange(5))
    (window,) = windower.push(chunk) + windower.flush()
    assert window.valid == 5 and window.end_s == pytest.approx(0.2)
    bench = c3d_bench.prepare([window])[0]
    assert torch.count_nonzero(bench[:, 5:]) == 0  # zeros in normalised space (AV-GZSL step 4)
    assert torch.count_nonzero(bench[:, :5]) > 0
    clean = build_extractor("c3d", weights="random").prepare([window])[0]
    assert torch.equal(clean[:, 15], clean[:, 4])  # clean mode repeats the last real frame


@pytest.mark.slow
def test_forward_shape_and_row_order_across_frame_sizes(c3d_bench):
    a = Window(torch.randint(0, 256, (16, 60, 80, 3), dtype=torch.uint8), 0.0, 0.64, 16)
    b = Window(torch.randint(0, 256, (16, 90, 70, 3), dtype=torch.uint8), 0.64, 1.28, 16)
    out = c3d_bench.embed([a, b, a])  # two frame sizes -> two preprocessing groups, one forward
    assert out.shape == (3, 4096) and out.dtype == torch.float32 and (out >= 0).all()  # fc7 after ReLU
    assert torch.allclose(out[0], out[2], atol=1e-5) and not torch.allclose(out[0], out[1])
    assert dict(build_extractor("c3d", weights="random", layer="fc6").spec.options)["layer"] == "fc6"


def test_strict_loading(tmp_path):
    table = expected_state_dict()
    save_zero_checkpoint(table, tmp_path / "c3d.pickle")
    model = build_extractor("c3d", weights=tmp_path)
    assert not model.spec.random_weights and model.spec.weights_id.startswith("sha256:c3d.pickle=")
    assert torch.count_nonzero(model.net.fc7.weight) == 0  # the checkpoint's values were loaded
    random_model = build_extractor("c3d", weights="random")
    assert random_model.spec.fingerprint() != model.spec.fingerprint()
    with pytest.raises(WeightsError, match=r"c3d\.pickle.*imagelab"):
        build_extractor("c3d", weights=tmp_path / "missing.pickle")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="none of c3d.pickle found"):
        build_extractor("c3d", weights=empty)
    bad = save_zero_checkpoint(dict(table, **{"fc8.weight": (400, 4096)}), tmp_path / "bad.pickle")
    with pytest.raises(
        WeightsError, match=r"fc8\.weight: checkpoint \(400, 4096\) vs expected \(487, 4096\)"
    ):
        build_extractor("c3d", weights=bad)
    (tmp_path / "junk.pickle").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        build_extractor("c3d", weights=tmp_path / "junk.pickle")


def test_windows_inside_one_chunk_are_views_and_others_copies():
    frames = np.arange(44 * 2 * 2 * 3, dtype=np.uint8).reshape(44, 2, 2, 3)
    chunks = [
        FrameChunk(frames[a:b], np.arange(a, b) / 25.0, np.arange(a, b)) for a, b in ((0, 24), (24, 44))
    ]
    windower = FrameWindower(16, 8, 25.0)
    windows = [w for c in chunks for w in windower.push(c)] + windower.flush()
    assert [w.valid for w in windows] == [16, 16, 16, 16, 12]  # from frames 0, 8, 16, 24 and 32 (the tail)
    for window, start in zip(windows, (0, 8, 16, 24, 32), strict=True):
        assert np.array_equal(window.data.numpy()[: window.valid], frames[start : start + window.valid])
    views = [np.shares_memory(w.data.numpy(), frames) for w in windows]
    assert views == [True, True, False, True, False]  # across two chunks, or padded: stacked copies
