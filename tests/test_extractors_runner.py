"""The runner: one decode per video, batches across videos, typed per-video outcomes, real models end to end."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest
import torch

import extractors.runner as runner
from extractors.base import Extractor, Window
from extractors.registry import build_extractor
from extractors.runner import VideoJob, extract_one, extract_videos
from extractors.spec import ExtractorSpec
from extractors.windowing import FrameWindower, audio_windows
from pipeline import cores
from pipeline.decode import open_guarded
from pipeline.decode.types import Outcome
from pipeline.synth.faults import make_fault_corpus
from pipeline.synth.media import make_test_clip


def _spec(name: str, modality: str, rate: float, window: float) -> ExtractorSpec:
    return ExtractorSpec(
        name=name,
        modality=modality,
        sample_rate=rate,
        window=window,
        hop=window,
        input_size=(),
        output_dim=3,
        output_dtype="float32",
        preprocessing="test double",
        mode="clean",
        weights_files=(),
        weights_source="",
        state_dict_shapes=(),
        provenance="test",
        weights_id="random:seed=0",
    )


class FakeVisual(Extractor):
    """16-frame clips at ``fps``; the row is the clip's mean colour; records every model batch."""

    def __init__(self, fps: float = 25.0, name: str = "fake_visual"):
        super().__init__(_spec(name, "visual", fps, 16))
        self.batches: list[int] = []

    def frame_windower(self):
        return FrameWindower(16, 16, self.spec.sample_rate)

    def prepare(self, windows: Sequence[Window]) -> torch.Tensor:
        return torch.stack([w.data[: w.valid].float().mean(dim=(0, 1, 2)) for w in windows])

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(inputs))
        return inputs


class FakeAudio(Extractor):
    """0.96 s windows at 16 kHz, no padding (VGGish framing); the row is (mean, max, min)."""

    def __init__(self):
        super().__init__(_spec("fake_audio", "audio", 16000, 0.96))

    def windows_from_audio(self, clip):
        return audio_windows(
            clip,
            window_samples=15600,
            hop_samples=15360,
            pad_last=False,
            min_samples=15600,
            nominal_window_s=0.96,
        )

    def prepare(self, windows: Sequence[Window]) -> torch.Tensor:
        data = torch.stack([w.data for w in windows])
        return torch.stack([data.mean(1), data.max(1).values, data.min(1).values], dim=1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_fault_corpus(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return [make_test_clip(folder / f"c{i}.mp4", seconds=2.0, width=64, height=48, seed=i) for i in range(3)]


def _by_key(results):
    return {(r.video_id, r.extractor): r for r in results}


def test_one_decode_per_video_and_batches_across_videos(clips, monkeypatch):
    opened = []

    def counting_open(path, **kwargs):
        opened.append(path)
        return open_guarded(path, **kwargs)

    monkeypatch.setitem(runner.OPENERS, "process", counting_open)
    visual, audio = FakeVisual(), FakeAudio()
    jobs = [VideoJob(f"clips/{p.name}", str(p)) for p in clips]
    results = _by_key(extract_videos(jobs, [visual, audio], batch_size=8, prefetch_videos=2))
    assert sorted(opened) == sorted(str(p) for p in clips)  # each video decoded once for both extractors
    assert len(results) == 6
    for job in jobs:
        v, a = results[(job.video_id, "fake_visual")], results[(job.video_id, "fake_audio")]
        assert v.status == a.status == Outcome.OK and v.reason is None
        assert v.features.shape == (4, 3)  # 50 frames at 25 fps -> ceil(50 / 16) clips
        assert v.start_s.tolist() == pytest.approx([0.0, 0.64, 1.28, 1.92])
        assert v.end_s[-1] == pytest.approx(2.0)
        assert a.features.shape == (2, 3) and a.end_s.tolist() == pytest.approx([0.96, 1.92])
        assert np.all(a.features[:, 1] > 0.4)  # the tone (amplitude 0.5) made it through
    assert visual.batches == [8, 4]  # full batches mix videos (4 clips each); only the last is partial


def test_mixed_frame_rates_share_one_native_decode(clips):
    fast, slow = FakeVisual(25.0, "fast"), FakeVisual(5.0, "slow")
    results = _by_key(extract_videos([VideoJob("a", str(clips[0]))], [fast, slow], batch_size=4))
    assert results[("a", "fast")].features.shape == (4, 3)
    slow_rows = results[("a", "slow")]
    assert slow_rows.features.shape == (1, 3)  # 10 frames at 5 fps -> one padded 16-frame clip
    assert slow_rows.end_s[0] == pytest.approx(2.0)


@pytest.mark.parametrize("isolation", ["process", "none"])
def test_typed_outcomes_never_stop_the_batch(corpus, tmp_path, isolation):
    jobs = [VideoJob(kind, str(path)) for kind, path in corpus.items()]
    jobs.append(VideoJob("missing", str(tmp_path / "missing.mp4")))
    results = _by_key(
        extract_videos(jobs, [FakeVisual(), FakeAudio()], batch_size=8, decode_isolation=isolation)
    )
    assert len(results) == 2 * len(jobs)

    def status(video, extractor):
        return results[(video, extractor)].status

    assert status("ok", "fake_visual") == status("ok", "fake_audio") == Outcome.OK
    assert (
        status("no_audio", "fake_visual") == Outcome.OK
        and status("no_audio", "fake_audio") == Outcome.NO_AUDIO
    )
    assert (
        status("no_video", "fake_audio") == Outcome.OK
        and status("no_video", "fake_visual") == Outcome.NO_VIDEO
    )
    truncated = results[("truncated", "fake_visual")]
    assert truncated.status == Outcome.PARTIAL and truncated.features is not None and truncated.reason
    assert status("random_bytes", "fake_visual") == Outcome.UNDECODABLE
    assert status("zero_length", "fake_audio") == Outcome.EMPTY_FILE
    assert status("missing", "fake_visual") == Outcome.NOT_FOUND
    short = results[("short_0_3s", "fake_audio")]
    assert short.status == Outcome.TOO_SHORT and "0.96" in short.reason and short.features is None
    assert status("short_0_3s", "fake_visual") == Outcome.OK  # one zero-padded clip, as AV-GZSL does
    for result in results.values():
        if result.status not in (Outcome.OK, Outcome.PARTIAL):
            assert result.features is None and result.reason


class PickyVisual(FakeVisual):
    """Preprocessing that refuses frames wider than 80 px; records which threads preprocess."""

    def __init__(self):
        super().__init__()
        self.prepare_threads: set[str] = set()

    def prepare(self, windows: Sequence[Window]) -> torch.Tensor:
        self.prepare_threads.add(threading.current_thread().name)
        if windows[0].data.shape[2] > 80:
            raise ValueError("frames wider than 80 px")
        return super().prepare(windows)


def test_preprocessing_runs_in_decode_threads_and_fails_per_video(clips, tmp_path):
    wide = make_test_clip(tmp_path / "wide.mp4", seconds=1.0, width=96, height=48)
    visual, audio = PickyVisual(), FakeAudio()
    jobs = [VideoJob("narrow", str(clips[0])), VideoJob("wide", str(wide))]
    results = _by_key(extract_videos(jobs, [visual, audio], batch_size=8, prefetch_videos=2))
    assert visual.prepare_threads and all(t.startswith("avzsl-decode-") for t in visual.prepare_threads)
    failed = results[("wide", "fake_visual")]
    assert failed.status == Outcome.UNDECODABLE and "preprocessing failed" in failed.reason
    assert failed.features is None
    assert results[("wide", "fake_audio")].status == Outcome.OK  # the other extractor keeps its rows
    assert results[("narrow", "fake_visual")].features.shape == (4, 3)


def test_a_failing_job_list_finishes_started_videos_then_raises(clips):
    def jobs():
        yield VideoJob("first", str(clips[0]))
        raise OSError("manifest unreadable")

    results = []
    with pytest.raises(OSError, match="manifest unreadable"):
        for result in extract_videos(jobs(), [FakeAudio()], prefetch_videos=2):
            results.append(result)
    assert [(r.video_id, r.status) for r in results] == [("first", Outcome.OK)]


def test_hanging_decode_times_out_and_keeps_audio(clips, monkeypatch):
    def hanging(path, **kwargs):
        return open_guarded(path, **{**kwargs, "backend": "hang-test"})

    monkeypatch.setitem(runner.OPENERS, "process", hanging)
    results = _by_key(
        extract_videos([VideoJob("h", str(clips[0]))], [FakeVisual(), FakeAudio()], decode_timeout_s=1.0)
    )
    assert results[("h", "fake_visual")].status == Outcome.TIMEOUT
    assert results[("h", "fake_audio")].status == Outcome.OK


def test_audio_only_pass(clips, corpus):
    jobs = [VideoJob("clip", str(clips[0])), VideoJob("no_video", str(corpus["no_video"]))]
    results = _by_key(extract_videos(jobs, [FakeAudio()]))
    assert results[("clip", "fake_audio")].status == results[("no_video", "fake_audio")].status == Outcome.OK
    assert results[("clip", "fake_audio")].features.shape == (2, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one extractor"):
        list(extract_videos([], []))
    with pytest.raises(ValueError, match="batch_size"):
        list(extract_videos([], [FakeAudio()], batch_size=0))
    with pytest.raises(ValueError, match="decode_isolation 'thread'; choose one of process, none"):
        list(extract_videos([], [FakeAudio()], decode_isolation="thread"))


def test_decode_threads_default_by_device(monkeypatch):
    cpu = FakeVisual()
    assert runner.default_prefetch([cpu, FakeAudio()]) == 2  # CPU models already use every core
    gpu = FakeVisual()
    gpu.device = torch.device("cuda")  # only the attribute is read: no GPU needed
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    assert runner.default_prefetch([cpu, gpu]) == runner.MAX_GPU_PREFETCH
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    assert runner.default_prefetch([gpu]) == 2


def test_each_decode_gets_the_cores_the_models_leave(monkeypatch):
    cpu, gpu = FakeVisual(), FakeVisual()
    gpu.device = torch.device("cuda")
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    assert runner.default_decoder_threads([cpu, FakeAudio()], 2) == 1  # the models use the cores
    assert runner.default_decoder_threads([gpu], 8) == 2
    assert runner.default_decoder_threads([gpu], 32) == 1


def test_cpu_extraction_decodes_single_threaded(clips, monkeypatch):
    threads = []

    def recording_open(path, **kwargs):
        threads.append(kwargs["decoder_threads"])
        return open_guarded(path, **kwargs)

    monkeypatch.setitem(runner.OPENERS, "process", recording_open)
    list(extract_videos([VideoJob("a", str(clips[0]))], [FakeVisual()]))
    assert threads == [1]


def test_both_decode_isolations_give_the_same_features(clips):
    jobs = [VideoJob(f"c{i}", str(path)) for i, path in enumerate(clips)]
    features = {
        isolation: _by_key(extract_videos(jobs, [FakeVisual(), FakeAudio()], decode_isolation=isolation))
        for isolation in ("process", "none")
    }
    assert features["process"].keys() == features["none"].keys()
    for key, result in features["process"].items():
        assert np.array_equal(result.features, features["none"][key].features), key


def assert_same_rows(concurrent, sequential) -> None:
    """Every field of every (video, extractor) row: outcome, reason, features (dtype too) and timestamps."""
    assert concurrent.keys() == sequential.keys()
    for key, want in sequential.items():
        got = concurrent[key]
        assert (got.status, got.reason) == (want.status, want.reason), key
        for name in ("features", "start_s", "end_s"):
            a, b = getattr(got, name), getattr(want, name)
            assert (a is None) == (b is None), (key, name)
            if b is not None:
                assert a.dtype == b.dtype and np.array_equal(a, b), (key, name)


def mixed_extractors() -> list[Extractor]:
    """Two frame rates (one native decode, resampled per extractor), audio, and a preprocessing that fails
    on wide frames."""
    return [FakeVisual(25.0, "fast"), FakeVisual(5.0, "slow"), FakeAudio(), PickyVisual()]


@pytest.mark.parametrize("isolation", ["process", "none"])
def test_concurrent_runner_gives_the_sequential_reference_rows(corpus, clips, tmp_path, isolation):
    """The threads, the byte queue and the batches across videos change nothing: every row, outcome and
    reason equals ``extract_one``'s, on good clips, every fault of the corpus, a missing file and a clip
    whose preprocessing fails."""
    wide = make_test_clip(tmp_path / "wide.mp4", seconds=1.0, width=96, height=48)
    paths = {**corpus, "wide": wide, "missing": tmp_path / "missing.mp4"}
    paths |= {f"clip{i}": path for i, path in enumerate(clips)}
    jobs = [VideoJob(name, str(path)) for name, path in paths.items()]
    extractors = mixed_extractors()
    concurrent = _by_key(
        extract_videos(jobs, extractors, batch_size=8, prefetch_videos=3, decode_isolation=isolation)
    )
    sequential = _by_key(
        row for job in jobs for row in extract_one(job, extractors, batch_size=8, decode_isolation=isolation)
    )
    assert_same_rows(concurrent, sequential)
    outcomes = {row.status for row in sequential.values()}  # the comparison covered every kind of row
    assert {Outcome.OK, Outcome.PARTIAL, Outcome.NO_AUDIO, Outcome.TOO_SHORT, Outcome.NOT_FOUND} <= outcomes
    assert sequential[("wide", "fake_visual")].reason.startswith("preprocessing failed")


def test_concurrent_runner_gives_the_sequential_reference_rows_on_the_sample_videos(sample_videos):
    jobs = [VideoJob(stem, str(path)) for stem, path in sample_videos.items()]
    extractors = mixed_extractors()[:3]
    concurrent = _by_key(extract_videos(jobs, extractors, batch_size=16, prefetch_videos=2))
    sequential = _by_key(row for job in jobs for row in extract_one(job, extractors, batch_size=16))
    assert_same_rows(concurrent, sequential)
    assert all(row.status == Outcome.OK for row in sequential.values())


def test_extract_one_rejects_an_unknown_isolation(clips):
    with pytest.raises(ValueError, match="decode_isolation 'thread'"):
        extract_one(VideoJob("a", str(clips[0])), [FakeAudio()], decode_isolation="thread")


@pytest.mark.slow
def test_real_models_on_the_sample_videos(sample_videos):
    vggish = build_extractor("vggish", weights="random", mode="benchmark")
    vit = build_extractor("vit", weights="random", fps=0.1)
    jobs = [VideoJob(stem, str(path)) for stem, path in sample_videos.items()]
    results = _by_key(extract_videos(jobs, [vggish, vit], batch_size=16))
    assert results[("v_GGSY1Qvo990", "vggish")].features.shape == (18, 128)
    assert results[("v_ZNVhz7ctTq0", "vggish")].features.shape == (14, 128)
    assert results[("v_ZNVhz7ctTq0", "vggish")].features.dtype == np.uint8
    assert results[("v_GGSY1Qvo990", "vit")].features.shape == (2, 768)  # 18.04 s at 0.1 fps
    assert results[("v_ZNVhz7ctTq0", "vit")].start_s.tolist() == pytest.approx([0.0, 10.0])
    assert vit.spec.random_weights and "RANDOM WEIGHTS" in vit.describe()


@pytest.mark.slow
def test_real_c3d_on_a_short_clip(tmp_path):
    clip = make_test_clip(tmp_path / "short.mp4", seconds=0.8, width=64, height=48)
    c3d = build_extractor("c3d", weights="random", mode="benchmark")
    (rows,) = extract_videos([VideoJob("s", str(clip))], [c3d], batch_size=4)
    assert rows.status == Outcome.OK and rows.features.shape == (2, 4096)  # 20 frames at 25 fps -> 2 clips
    assert rows.end_s.tolist() == pytest.approx([0.64, 0.8])
