"""write_av_clip / make_test_clip: real H.264 + AAC mp4 files, streamed, deterministic, VFR-capable."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.synth.media import make_test_clip, pattern_frame, read_frame_code, write_av_clip


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
    a = make_test_clip(tmp_path / "a.mp4", seconds=0.5, width=64, height=48, seed=1)
    b = make_test_clip(tmp_path / "b.mp4", seconds=0.5, width=64, height=48, seed=1)
    c = make_test_clip(tmp_path / "c.mp4", seconds=0.5, width=64, height=48, seed=2)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


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
