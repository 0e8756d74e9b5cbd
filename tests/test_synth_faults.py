"""The fault corpus: every file behaves as its name says when opened with PyAV (docs/decoding.md)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.synth.faults import FAULT_KINDS, make_fault_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_fault_corpus(tmp_path_factory.mktemp("faults"))


def _count(path: Path, stream: str) -> tuple[int, list[float]]:
    """Frames decoded from one stream and their times; raises what PyAV raises."""
    times = []
    with av.open(str(path)) as container:
        for frame in container.decode(**{stream: 0}):
            times.append(float(frame.time))
    return len(times), times


def test_every_kind_is_written(corpus: dict[str, Path]) -> None:
    assert set(corpus) == set(FAULT_KINDS)
    assert all(p.is_file() for p in corpus.values())


def test_ok_has_both_streams_and_decodes_fully(corpus: dict[str, Path]) -> None:
    frames, times = _count(corpus["ok"], "video")
    assert frames == 50 and times[-1] == pytest.approx(1.96)
    audio_frames, audio_times = _count(corpus["ok"], "audio")
    assert audio_frames > 0 and audio_times[-1] > 1.9


def test_truncated_opens_then_fails_mid_stream(corpus: dict[str, Path]) -> None:
    size, full = corpus["truncated"].stat().st_size, corpus["ok"].stat().st_size
    assert int(0.4 * full) <= size < 0.5 * full
    decoded = 0
    with pytest.raises(av.error.InvalidDataError), av.open(str(corpus["truncated"])) as container:
        for _ in container.decode(video=0):
            decoded += 1
    assert 0 < decoded < 50


def test_no_audio_and_no_video_keep_the_other_stream(corpus: dict[str, Path]) -> None:
    with av.open(str(corpus["no_audio"])) as container:
        assert list(container.streams.audio) == [] and len(container.streams.video) == 1
    assert _count(corpus["no_audio"], "video")[0] == _count(corpus["ok"], "video")[0]
    with av.open(str(corpus["no_video"])) as container:
        assert list(container.streams.video) == [] and len(container.streams.audio) == 1
    assert _count(corpus["no_video"], "audio")[0] == _count(corpus["ok"], "audio")[0]


@pytest.mark.parametrize("kind", ["random_bytes", "zero_length"])
def test_unreadable_files_fail_to_open(corpus: dict[str, Path], kind: str) -> None:
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(corpus[kind]))


def test_sizes_of_unreadable_files(corpus: dict[str, Path]) -> None:
    assert corpus["zero_length"].stat().st_size == 0
    assert corpus["random_bytes"].stat().st_size == 64 * 1024


def test_short_clip_is_0_3_seconds_with_audio(corpus: dict[str, Path]) -> None:
    frames, times = _count(corpus["short_0_3s"], "video")
    assert frames == 9 and times[-1] < 0.3
    with av.open(str(corpus["short_0_3s"])) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    assert 0.3 * 16000 <= samples <= 0.3 * 16000 + 1024


def test_vfr_alternates_frame_durations(corpus: dict[str, Path]) -> None:
    _, times = _count(corpus["vfr"], "video")
    steps = np.diff(times)
    np.testing.assert_allclose(steps[0::2], 0.04, atol=1e-4)
    np.testing.assert_allclose(steps[1::2], 0.06, atol=1e-4)
    with av.open(str(corpus["vfr"])) as container:
        assert len(container.streams.audio) == 1


def test_corpus_is_deterministic(corpus: dict[str, Path], tmp_path: Path) -> None:
    again = make_fault_corpus(tmp_path)
    assert {k: p.read_bytes() for k, p in again.items()} == {k: p.read_bytes() for k, p in corpus.items()}


def test_corpus_from_a_real_video(sample_videos: dict[str, Path], tmp_path: Path) -> None:
    source = sample_videos["v_GGSY1Qvo990"]
    paths = make_fault_corpus(tmp_path, source=source)
    assert paths["ok"].read_bytes() == source.read_bytes()
    decoded = 0
    with pytest.raises(av.error.InvalidDataError), av.open(str(paths["truncated"])) as container:
        for _ in container.decode(video=0):
            decoded += 1
    assert 0 < decoded < 355
    with av.open(str(paths["no_audio"])) as container:
        assert not container.streams.audio
    frames, times = _count(paths["short_0_3s"], "video")
    assert frames >= 5 and times[-1] < 0.3


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="source video not found"):
        make_fault_corpus(tmp_path / "out", source=tmp_path / "nope.mp4")
