"""Each speed path of audio decoding against its plain version: resampy, swresample's s16 conversion,
PyAV's ``to_ndarray`` and frame-by-frame resampling."""

from __future__ import annotations

from math import gcd

import av
import numpy as np
import pytest
import resampy
import torch

from extractors.audio_resample import apply_on_device, resample_clip
from pipeline.decode import read_audio
from pipeline.decode.audio import float_to_s16
from pipeline.decode.audio_blocks import FrameBlock, frame_planes
from pipeline.decode.resample import phase_table, resample_like_resampy
from tests.test_audio_reference import make_stereo_clip


@pytest.fixture(scope="module")
def stereo_clip(tmp_path_factory):
    return make_stereo_clip(tmp_path_factory.mktemp("stereo") / "stereo.mp4")


RATES = (44100, 48000, 22050, 32000, 11025, 8000, 96000, 24000)


def short_outputs(sr_orig: int, sr_new: int, n: int) -> int:
    """Outputs whose input sample resampy's float time puts one before the exact one."""
    p, q = sr_new // gcd(sr_new, sr_orig), sr_orig // gcd(sr_new, sr_orig)
    t = np.arange(0, int(n * float(sr_new) / float(sr_orig)), p)
    return int(np.sum((t * (1.0 / (float(sr_new) / sr_orig))).astype(np.int64) < t // p * q))


@pytest.mark.parametrize("sr_orig", [*RATES, 16080, 4350])
def test_polyphase_resampling_equals_resampy(sr_orig):
    rng = np.random.default_rng(sr_orig)
    x = rng.standard_normal(int(2.7 * sr_orig) + 7)
    ours, reference = resample_like_resampy(x, sr_orig, 16000), resampy.resample(x, sr_orig, 16000)
    assert phase_table(sr_orig, 16000) is not None and ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-9
    if sr_orig in (16080, 4350):  # rates where resampy's float time truncates short on some outputs
        assert short_outputs(sr_orig, 16000, x.size) > 50


def test_short_signals_and_rates_without_a_small_table_go_by_resampy_itself():
    x = np.random.default_rng(0).standard_normal(5)
    assert np.allclose(resample_like_resampy(x, 48000, 16000), resampy.resample(x, 48000, 16000), atol=1e-12)
    with pytest.raises(ValueError, match="too few"):
        resample_like_resampy(x[:2], 48000, 16000)
    assert phase_table(44101, 16000) is None  # 16,000 phases: resampy's own loop
    y = np.random.default_rng(1).standard_normal(44101)
    assert np.array_equal(resample_like_resampy(y, 44101, 16000), resampy.resample(y, 44101, 16000))


def test_float_to_s16_is_swresamples_conversion():
    steps = (np.arange(-70000, 70000, 0.5) / 32768.0).astype(np.float32)  # every half step, past both ends
    noise = np.random.default_rng(0).uniform(-1.2, 1.2, steps.size).astype(np.float32)
    planar = np.stack([steps, noise])
    frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
    frame.sample_rate = 48000
    reference = av.AudioResampler(format="s16p", layout="stereo", rate=48000).resample(frame)
    assert np.array_equal(float_to_s16(planar), np.concatenate([f.to_ndarray() for f in reference], axis=1))
    assert float_to_s16(np.array([np.nan, 0.5 / 32768, 1.5 / 32768], np.float32)).tolist() == [-32768, 0, 2]


@pytest.mark.parametrize(
    ("fmt", "layout"), [("fltp", "stereo"), ("flt", "stereo"), ("s16", "mono"), ("dblp", "5.1")]
)
def test_frame_planes_are_to_ndarray_without_a_copy(fmt, layout):
    frame = av.AudioFrame(format=fmt, layout=layout, samples=1000)
    for plane in frame.planes:  # fill every byte: nothing may come from the planes' padding
        plane.update(np.random.default_rng(0).integers(0, 256, plane.buffer_size, dtype=np.uint8).tobytes())
    planes = frame_planes(frame)
    assert np.vstack(planes).tobytes() == frame.to_ndarray().tobytes()
    block = FrameBlock()
    block.add(frame)
    block.add(frame)
    assert block.take().array.tobytes() == np.concatenate([frame.to_ndarray()] * 2, axis=1).tobytes()


def frame_by_frame_swresample(path, rate: int = 16000) -> np.ndarray:
    """The plain clean-mode path: every decoded frame through PyAV's resampler as it comes."""
    resampler, out = av.AudioResampler(format="flt", layout="mono", rate=rate), []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            out += [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
    out += [o.to_ndarray().reshape(-1) for o in resampler.resample(None)]
    return np.concatenate(out)


def frame_by_frame_int16_resampy(path, rate: int = 16000) -> np.ndarray:
    """The plain benchmark-mode path: swresample's s16 per frame, channel mean of / 32768.0, resampy."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        native = stream.codec_context.sample_rate
        to_s16 = av.AudioResampler(format="s16p", layout=stream.layout, rate=native)
        pcm = [o.to_ndarray() for frame in container.decode(stream) for o in to_s16.resample(frame)]
    mono = np.concatenate([np.mean(part.T / 32768.0, axis=1) for part in pcm])
    return resampy.resample(mono, native, rate).astype(np.float32)


@pytest.mark.parametrize("name", ["v_GGSY1Qvo990", "v_ZNVhz7ctTq0", "stereo"])
def test_block_decoding_gives_the_frame_by_frame_output(sample_videos, stereo_clip, name):
    video = stereo_clip if name == "stereo" else sample_videos[name]
    assert np.array_equal(read_audio(video).samples, frame_by_frame_swresample(video))
    ours = read_audio(video, audio_path="int16-resampy").samples
    reference = frame_by_frame_int16_resampy(video)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-7  # float32 results of float64 sums taken in another order


@pytest.mark.parametrize("sr_orig", [44100, 48000, 16080, 4350])
def test_the_device_resampler_on_cpu_tensors_equals_the_cpu_path(sr_orig):
    x = np.random.default_rng(sr_orig).standard_normal(int(1.9 * sr_orig) + 3)
    table = phase_table(sr_orig, 16000)
    ours = apply_on_device(table, torch.from_numpy(x)).numpy()
    assert np.abs(ours - table.apply(x)).max() <= 1e-12


def test_native_rate_audio_resampled_by_the_model_equals_the_decoders(sample_videos):
    path = sample_videos["v_GGSY1Qvo990"]
    native = read_audio(path, audio_path="int16-resampy", sample_rate=None)
    assert native.sample_rate == 44100 and native.samples.dtype == np.float64
    ours = resample_clip(native, 16000, torch.device("cpu"))
    expected = read_audio(path, audio_path="int16-resampy")
    assert ours.samples.dtype == np.float32 and ours.samples.shape == expected.samples.shape
    assert np.abs(ours.samples - expected.samples).max() <= 1e-7
    with pytest.raises(ValueError, match="only the int16-resampy path"):
        read_audio(path, sample_rate=None)


def test_benchmark_audio_for_gpu_models_is_resampled_on_their_gpu():
    from extractors.registry import build_extractor
    from extractors.runner import _Plan

    bench, clean = (build_extractor("vggish", weights="random", mode=m) for m in ("benchmark", "clean"))
    assert _Plan.of([bench]).resample_on is None  # CPU models: the decode child resamples
    bench.device = clean.device = torch.device("cuda")  # only read by the plan: no GPU needed
    assert _Plan.of([bench]).resample_on == torch.device("cuda")
    assert _Plan.of([clean]).resample_on is None  # swresample runs where the audio is decoded


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_gpu_resampler_equals_the_cpu_one():
    x = np.random.default_rng(0).standard_normal(3 * 44100)
    table = phase_table(44100, 16000)
    assert (
        np.abs(apply_on_device(table, torch.from_numpy(x).cuda()).cpu().numpy() - table.apply(x)).max()
        <= 1e-10
    )
