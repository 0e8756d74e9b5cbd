"""write_av_clip / make_test_clip: real H.264 + AAC mp4 files, streamed, deterministic, VFR-capable."""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.reformatter import Interpolation

from pipeline.synth.media import (
    make_test_clip,
    pattern_frame,
    read_frame_code,
    rgb_to_yuv420p,
    write_av_clip,
)


def _decode_video(path: Path) -> tuple[list[np.ndarray], list[float]]:
    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
    return frames, times


def _decode_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])


def test_test_clip_streams_codecs_and_frame_identity(tmp_path: Path) -> None:
    path = make_test_clip(tmp_path / "clip.mp4", seconds=1.0, width=96, height=64, fps=25.0)
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert (video.codec_context.width, video.codec_context.height) == (96, 64)
        assert audio.codec_context.name == "aac" and audio.sample_rate == 16000 and audio.channels == 1
    frames, times = _decode_video(path)
    assert len(frames) == 25
    assert [read_frame_code(f) for f in frames] == list(range(25))
    np.testing.assert_allclose(times, np.arange(25) / 25.0, atol=1e-6)


def test_test_clip_tone_is_audible_at_its_frequency(tmp_path: Path) -> None:
    path = make_test_clip(tmp_path / "tone.mp4", seconds=1.0, width=64, height=64, seed=3)
    samples = _decode_audio(path)
    assert abs(len(samples) - 16000) <= 1024  # AAC pads to whole 1024-sample frames
    spectrum = np.abs(np.fft.rfft(samples[2000:14000]))
    peak_hz = np.argmax(spectrum) * 16000 / 12000
    assert 430 <= peak_hz <= 890
    assert 0.3 < float(np.max(np.abs(samples))) <= 1.0


def test_same_input_gives_same_bytes(tmp_path: Path) -> None:
    files = {make_test_clip(tmp_path / "a.mp4", seconds=0.5, width=64, height=48, seed=1).read_bytes()}
    for _ in range(9):
        files.add(make_test_clip(tmp_path / "a.mp4", seconds=0.5, width=64, height=48, seed=1).read_bytes())
    other = make_test_clip(tmp_path / "c.mp4", seconds=0.5, width=64, height=48, seed=2)
    assert len(files) == 1
    assert other.read_bytes() not in files


@pytest.fixture
def ffmpeg_cpu_flags() -> Iterator[Callable[[int], None]]:
    """``av_force_cpu_flags`` of PyAV's bundled FFmpeg (0: plain C code only); the CPU's own flags come back after."""
    libs = sorted((Path(av.__file__).parents[1] / "av.libs").glob("libavutil*.so*"))
    if not libs:
        pytest.skip("PyAV's bundled libavutil not found (only Linux wheels are laid out as av.libs/)")
    force = ctypes.CDLL(str(libs[0])).av_force_cpu_flags
    yield force
    force(-1)


def test_file_does_not_depend_on_the_simd_code_ffmpeg_runs(
    tmp_path: Path, ffmpeg_cpu_flags: Callable[[int], None]
) -> None:
    """FFmpeg's scaler gives other yuv420p pixels with other SIMD code (so on other CPUs); frames must reach x264
    converted by our exact arithmetic instead, or the clip would depend on the machine that wrote it.
    """
    frames = np.stack([pattern_frame(k, 32, 32, seed=3) for k in range(6)])
    ffmpeg_cpu_flags(0)
    plain_c = write_av_clip(tmp_path / "c.mp4", frames, 10.0).read_bytes()
    ffmpeg_cpu_flags(-1)
    native = write_av_clip(tmp_path / "native.mp4", frames, 10.0).read_bytes()
    assert plain_c == native


def test_encoder_input_is_bt601_limited_range_420() -> None:
    """Against FFmpeg's exact (bit-exact, accurate-rounding) 4:4:4 conversion: luma within one level, chroma
    within one level of the mean of its 2x2 block; black, white and the primaries land on the nominal codes."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frame[:2, :8] = np.repeat([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]], 2, axis=0)[None]
    exact = Interpolation.POINT | Interpolation.ACCURATE_RND | Interpolation.BITEXACT
    reference = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
        format="yuv444p", interpolation=exact
    )
    ref_y, ref_u, ref_v = reference.to_ndarray().astype(np.float64)
    planes = rgb_to_yuv420p(frame)
    assert planes.shape == (72, 64) and planes.dtype == np.uint8
    y = planes[:48].astype(np.float64)
    u, v = planes[48:].reshape(2, 24, 32).astype(np.float64)

    def block_mean(p: np.ndarray) -> np.ndarray:
        return (p[0::2, 0::2] + p[0::2, 1::2] + p[1::2, 0::2] + p[1::2, 1::2]) / 4

    assert np.abs(y - ref_y).max() <= 1
    assert np.abs(u - block_mean(ref_u)).max() <= 1
    assert np.abs(v - block_mean(ref_v)).max() <= 1
    # Textbook BT.601 codes (Y, Cb, Cr): black 16/128/128, white 235/128/128, red 81/90/240, blue 41/240/110.
    assert y[0, [0, 2, 4, 6]].tolist() == [16, 235, 81, 41]
    assert u[0, :4].tolist() == [128, 128, 90, 240]
    assert v[0, :4].tolist() == [128, 128, 240, 110]


def test_array_and_generator_inputs_give_the_same_file(tmp_path: Path) -> None:
    frames = np.stack([pattern_frame(k, 64, 64) for k in range(10)])
    consumed: list[int] = []

    def stream():
        for k in range(10):
            consumed.append(k)
            yield pattern_frame(k, 64, 64)

    a = write_av_clip(tmp_path / "array.mp4", frames, 10.0)
    b = write_av_clip(tmp_path / "gen.mp4", stream(), 10.0)
    assert consumed == list(range(10))
    assert a.read_bytes() == b.read_bytes()
    with av.open(str(a)) as container:
        assert not container.streams.audio


def test_pts_s_gives_a_variable_frame_rate_clip(tmp_path: Path) -> None:
    durations = np.tile([0.04, 0.06], 10)
    pts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    path = write_av_clip(tmp_path / "vfr.mp4", (pattern_frame(k, 64, 64) for k in range(20)), 20.0, pts_s=pts)
    frames, times = _decode_video(path)
    np.testing.assert_allclose(times, pts, atol=1e-4)
    assert [read_frame_code(f) for f in frames] == list(range(20))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": np.zeros((2, 63, 64, 3), np.uint8)}, "even width and height"),
        ({"frames": np.zeros((2, 64, 64, 3), np.float32)}, "uint8"),
        ({"frames": np.zeros((2, 64, 64), np.uint8)}, "(H, W, 3)"),
        ({"frames": np.zeros((0, 64, 64, 3), np.uint8)}, "no frames"),
        ({"pts_s": [0.0, 0.0]}, "strictly increasing"),
        ({"pts_s": [0.0]}, "more frames than pts_s"),
        ({"audio": np.full(100, 1.5, np.float32)}, "[-1, 1]"),
        ({"audio": np.zeros((100, 2), np.float32)}, "mono"),
        ({"fps": 0}, "fps must be positive"),
    ],
)
def test_bad_input_is_rejected_and_leaves_no_file(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"frames": np.zeros((2, 64, 64, 3), np.uint8), "fps": 25.0} | kwargs
    target = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match=re.escape(message)):
        write_av_clip(target, **args)
    assert list(tmp_path.iterdir()) == []


def test_frame_size_change_mid_stream_is_rejected(tmp_path: Path) -> None:
    frames = [np.zeros((64, 64, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame size changed"):
        write_av_clip(tmp_path / "x.mp4", frames, 25.0)
    assert list(tmp_path.iterdir()) == []
