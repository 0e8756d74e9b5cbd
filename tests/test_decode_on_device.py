"""Frames decoded by torchcodec (NVDEC on a GPU): the frames the CPU path chooses, pixels within a tolerance,
typed failures, and the runner's wiring. Without torchcodec these skip; without a GPU the checks run on
torchcodec's CPU decoder, which gives PyAV's pixels exactly."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import extractors.runner as runner
from extractors.registry import build_extractor
from extractors.runner import VideoJob, extract_videos
from pipeline.decode import Outcome, iter_frames
from pipeline.decode.on_device import check_device_decoding, open_on_device
from pipeline.synth.faults import make_fault_corpus
from tests.test_extractors_runner import FakeVisual

try:
    check_device_decoding("cpu")
    TORCHCODEC = None
except RuntimeError as err:
    TORCHCODEC = str(err)
needs_torchcodec = pytest.mark.skipif(
    TORCHCODEC is not None, reason=f"torchcodec unusable here: {TORCHCODEC}"
)
needs_gpu = pytest.mark.skipif(
    TORCHCODEC is not None or not torch.cuda.is_available(), reason="needs torchcodec and a CUDA GPU (NVDEC)"
)


def _decode(path, device, rule):
    with open_on_device(path, device=device, fps=25.0, frame_rule=rule, chunk_frames=24) as decode:
        chunks = list(decode.frames())
    frames = torch.cat([c.frames for c in chunks]).cpu().numpy()
    return decode.report, frames, np.concatenate([c.source_index for c in chunks])


def _cpu_path(path, rule):
    chunks = list(iter_frames(path, fps=25.0, frame_rule=rule))
    return np.concatenate([c.frames for c in chunks]), np.concatenate([c.source_index for c in chunks])


@pytest.mark.slow
@needs_torchcodec
@pytest.mark.parametrize("rule", ["ffmpeg", "pts"])
def test_torchcodec_on_the_cpu_gives_the_pyav_frames(sample_videos, rule):
    for path in sample_videos.values():
        report, frames, index = _decode(path, "cpu", rule)
        expected, expected_index = _cpu_path(path, rule)
        assert report.outcome is Outcome.OK and report.frames_decoded == len(expected)
        assert np.array_equal(index, expected_index) and np.array_equal(frames, expected)


@needs_gpu
@pytest.mark.parametrize("rule", ["ffmpeg", "pts"])
def test_nvdec_chooses_the_same_frames_with_pixels_close_to_the_cpus(sample_videos, rule):
    for path in sample_videos.values():
        report, frames, index = _decode(path, "cuda", rule)
        expected, expected_index = _cpu_path(path, rule)
        assert report.outcome is Outcome.OK and np.array_equal(index, expected_index)
        diff = np.abs(frames.astype(np.int16) - expected.astype(np.int16))
        assert diff.mean() <= 2.0 and np.percentile(diff, 99) <= 8  # YUV -> RGB arithmetic differs


@needs_torchcodec
def test_failures_are_typed(tmp_path):
    corpus = make_fault_corpus(tmp_path / "faults")
    expected = {
        "random_bytes": Outcome.UNDECODABLE,
        "no_video": Outcome.NO_VIDEO,
        "zero_length": Outcome.EMPTY_FILE,
        "missing": Outcome.NOT_FOUND,
    }
    for kind, outcome in expected.items():
        with open_on_device(corpus.get(kind, tmp_path / "missing.mp4"), device="cpu", fps=25.0) as decode:
            assert list(decode.frames()) == []
        assert decode.report.outcome is outcome, (kind, decode.report.error)


def test_a_missing_torchcodec_is_named_with_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # import fails as if not installed
    with pytest.raises(RuntimeError, match=r"needs torchcodec .*pip install torchcodec==0\.17\.0"):
        check_device_decoding("cuda")


def test_the_runner_refuses_gpu_decoding_for_cpu_models(tmp_path):
    with pytest.raises(ValueError, match="decode_device 'cuda' decodes frames for models on that device"):
        list(extract_videos([], [FakeVisual()], decode_device="cuda"))
    with pytest.raises(ValueError, match="unknown decode_device 'tpu'"):
        list(extract_videos([], [FakeVisual()], decode_device="tpu"))


@needs_torchcodec
def test_the_runner_takes_frames_from_the_device_decoder(sample_videos, monkeypatch):
    """The on-device route end to end, with torchcodec's CPU decoder standing in for the GPU's."""
    jobs = [VideoJob(stem, str(path)) for stem, path in sample_videos.items()]
    on_cpu = {r.video_id: r for r in extract_videos(jobs, [FakeVisual()])}
    opened = []

    def cpu_stand_in(path, **kwargs):
        opened.append(path)
        return open_on_device(path, **{**kwargs, "device": "cpu"})

    monkeypatch.setattr(runner, "open_on_device", cpu_stand_in)
    monkeypatch.setattr(runner, "check_device_decoding", lambda device: None)
    model = FakeVisual()
    model.device = torch.device("cuda")  # only read by the runner's checks: the fake runs anywhere
    on_device = {r.video_id: r for r in extract_videos(jobs, [model], decode_device="cuda")}
    assert sorted(opened) == sorted(str(p) for p in sample_videos.values())
    for video_id, result in on_cpu.items():
        assert result.status == on_device[video_id].status == Outcome.OK
        assert np.array_equal(result.features, on_device[video_id].features)


@needs_gpu
@pytest.mark.slow
def test_c3d_on_gpu_decoded_frames(sample_videos):
    model = build_extractor("c3d", weights="random", mode="benchmark", device="cuda")
    jobs = [VideoJob("v", str(sample_videos["v_ZNVhz7ctTq0"]))]
    (cpu,) = extract_videos(jobs, [model])
    (gpu,) = extract_videos(jobs, [model], decode_device="cuda")
    assert gpu.status == Outcome.OK and gpu.features.shape == cpu.features.shape == (22, 4096)
    assert np.array_equal(gpu.start_s, cpu.start_s)
    assert np.abs(gpu.features - cpu.features).mean() <= 0.05 * np.abs(cpu.features).mean()
