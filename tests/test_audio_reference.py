"""Benchmark-mode audio against the published path itself: torchvggish 0.2's ``vggish_input``.

The published VGGish features were computed from a 16-bit WAV that FFmpeg wrote at the file's native rate
and channel count (``pydub`` runs ``ffmpeg -i VIDEO -acodec pcm_s16le -vn -f wav``), read by
``vggish_input.wavfile_to_examples``: int16 / 32768.0, channel mean, ``resampy.resample`` to 16 kHz, log-mel.
Here FFmpeg (through PyAV) writes that WAV and torchvggish's own function reads it.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import torch
from torchvggish import vggish_input

from extractors.registry import build_extractor
from extractors.runner import VideoJob, extract_videos
from pipeline.decode import read_audio
from pipeline.decode.types import AudioClip
from tests.extractor_helpers import kaiming_, relative_change

SAMPLES = ("v_GGSY1Qvo990", "v_ZNVhz7ctTq0")


def write_pcm16_wav(video: Path, wav: Path) -> Path:
    """The reference's WAV: FFmpeg's s16 conversion and pcm_s16le encoder, native rate and layout."""
    with av.open(str(video)) as src, av.open(str(wav), "w", format="wav") as out:
        stream = src.streams.audio[0]
        rate, layout = stream.codec_context.sample_rate, stream.layout
        pcm = out.add_stream("pcm_s16le", rate=rate, layout=layout)
        to_s16 = av.AudioResampler(format="s16", layout=layout, rate=rate)
        for frame in src.decode(stream):
            for converted in to_s16.resample(frame):
                out.mux(pcm.encode(converted))
        for converted in to_s16.resample(None):
            out.mux(pcm.encode(converted))
        out.mux(pcm.encode(None))
    return wav


@pytest.fixture(scope="module")
def stereo_clip(tmp_path_factory) -> Path:
    return make_stereo_clip(tmp_path_factory.mktemp("stereo") / "stereo.mp4")


def make_stereo_clip(path: Path) -> Path:
    """2.5 s of stereo AAC at 48 kHz, different in each channel and loud enough to overshoot full scale."""
    rate = 48000
    t = np.arange(int(2.5 * rate)) / rate
    left = 0.99 * np.sign(np.sin(2 * np.pi * 220 * t))  # a square wave: AAC rings past +-1 at its edges
    right = 0.3 * np.sin(2 * np.pi * 3000 * t)
    samples = np.stack([left, right]).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate, layout="stereo")
        for begin in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                samples[:, begin : begin + 1024].copy(), format="fltp", layout="stereo"
            )
            frame.sample_rate, frame.pts = rate, begin
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def reference_examples(video: Path, tmp_path: Path) -> np.ndarray:
    """torchvggish's (n, 96, 64) log-mel examples of the video's audio, by the published path."""
    wav = write_pcm16_wav(video, tmp_path / f"{video.stem}.wav")
    return vggish_input.wavfile_to_examples(str(wav)).detach().numpy()[:, 0]


def our_examples(clip: AudioClip) -> np.ndarray:
    extractor = build_extractor("vggish", weights="random", mode="benchmark")
    return extractor.prepare(list(extractor.windows_from_audio(clip))).numpy()[:, 0]


@pytest.mark.parametrize("name", [*SAMPLES, "stereo"])
def test_benchmark_log_mel_matches_torchvggish(sample_videos, stereo_clip, tmp_path, name):
    video = stereo_clip if name == "stereo" else sample_videos[name]
    reference = reference_examples(video, tmp_path)
    ours = our_examples(read_audio(video, audio_path="int16-resampy"))
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-4
    if name == "v_GGSY1Qvo990":  # the clean path (one float resample) is measurably elsewhere
        clean = our_examples(read_audio(video))
        assert np.abs(clean - reference).max() > 0.1


def test_waveform_before_resampling_is_the_wav_the_reference_reads(stereo_clip, tmp_path):
    wav = write_pcm16_wav(stereo_clip, tmp_path / "stereo.wav")
    data, rate = soundfile.read(str(wav), dtype="int16")  # what wavfile_to_examples reads
    assert rate == 48000 and data.shape[1] == 2
    reference = np.mean(data / 32768.0, axis=1)
    ours = read_audio(stereo_clip, audio_path="int16-resampy", sample_rate=48000).samples
    assert np.array_equal(ours, reference.astype(np.float32))
    # the square wave's overshoot saturated in the int16 step, as FFmpeg's conversion does
    assert (int(data[:, 0].max()), int(data[:, 0].min())) == (32767, -32768)


def test_no_path_clips_samples(sample_videos):
    published = read_audio(sample_videos["v_GGSY1Qvo990"], audio_path="int16-resampy").samples
    assert np.abs(published).max() > 1.1  # resampy overshoots full scale and the reference keeps it
    clean = read_audio(sample_videos["v_GGSY1Qvo990"]).samples
    assert int(np.sum(np.abs(clean) > 1.0)) == 36  # clean mode keeps the decoder's overshoot too


@pytest.mark.slow
def test_benchmark_extraction_embeds_the_published_log_mel(sample_videos, tmp_path):
    video = sample_videos["v_ZNVhz7ctTq0"]
    model = build_extractor("vggish", weights="random", mode="benchmark", variant="vf")
    kaiming_(model.net, seed=0)  # embeddings that follow the log-mel
    (result,) = extract_videos([VideoJob("v", str(video))], [model], batch_size=8)
    reference = torch.from_numpy(reference_examples(video, tmp_path))[:, None]
    expected = model.run_model(reference)
    assert result.features.shape == tuple(expected.shape) == (14, 128)
    assert relative_change(expected, torch.from_numpy(result.features)) < 1e-3
    clean = model.run_model(model.prepare(list(model.windows_from_audio(read_audio(video)))))
    assert relative_change(expected, clean) > 10 * relative_change(
        expected, torch.from_numpy(result.features)
    )
