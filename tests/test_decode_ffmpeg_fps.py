"""Benchmark-mode frame choice, frame by frame against FFmpeg's own ``fps`` filter run through PyAV.

The published C3D features were computed on videos converted to 25 fps with FFmpeg, whose ``fps`` filter
picks for output tick k the last frame whose pts*25, rounded half away from zero, is <= k. The reference here
is that filter itself (``av.filter.Graph``: buffer -> fps -> buffersink), fed with every decoded frame; the
frame it emits is identified by the pts stored in the frame's ``opaque`` field, and on synthetic clips also by
the index code drawn into the pixels.
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from extractors.registry import build_extractor
from extractors.runner import VideoJob, extract_videos
from pipeline.decode import iter_frames, open_guarded, open_inprocess, plan_samples, read_audio
from pipeline.decode.scan import scan_video
from pipeline.decode.types import FrameChunk
from pipeline.synth.faults import make_fault_corpus
from pipeline.synth.media import pattern_frame, read_frame_code, write_av_clip
from tests.extractor_helpers import kaiming_

FPS = 25


def fps_filter(path, fps: int = FPS, pixels: bool = False):
    """What FFmpeg's ``fps`` filter emits: (pts of each emitted frame, its output tick, the scan's pts, and
    with ``pixels`` the emitted frames as RGB arrays).

    The stream is closed where our packet scan says it ends (its declared end when the edit list stops it
    early, as in v_GGSY1Qvo990): the FFmpeg command line closes it there too (``ffmpeg -i v_GGSY1Qvo990.mp4
    -vf fps=25`` with FFmpeg 5.1 writes 451 frames, docs/benchmark-mode.md), while PyAV would otherwise close
    it one packet duration after the last frame.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        scan = scan_video(container, stream)
        container.seek(0)
        frames = list(container.decode(stream))
        graph = av.filter.Graph()
        source = graph.add_buffer(template=stream)
        fps_node = graph.add("fps", f"fps={fps}")
        sink = graph.add("buffersink")
        source.link_to(fps_node)
        fps_node.link_to(sink)
        graph.configure()
        frames[-1].duration = int(scan.end_pts) - frames[-1].pts
        picked, ticks, images = [], [], []

        def drain() -> None:
            while True:
                try:
                    out = sink.pull()
                except (av.BlockingIOError, av.EOFError):
                    return
                picked.append(out.opaque)
                ticks.append(out.pts)
                if pixels:
                    images.append(out.to_ndarray(format="rgb24"))

        for frame in frames:
            frame.opaque = frame.pts
            source.push(frame)
            drain()
        source.push(None)
        drain()
    if pixels:
        return picked, ticks, scan.pts, np.stack(images)
    return picked, ticks, scan.pts


def ours(path, **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Benchmark-mode decode: (source index, target seconds, frames) of every delivered frame."""
    chunks = list(iter_frames(path, fps=float(FPS), frame_rule="ffmpeg", chunk_frames=64, **kwargs))
    return (
        np.concatenate([c.source_index for c in chunks]),
        np.concatenate([c.target_s for c in chunks]),
        np.concatenate([c.frames for c in chunks]),
    )


@pytest.mark.parametrize(
    ("stem", "ticks", "clean_ticks", "disagree"),
    [("v_GGSY1Qvo990", 451, 452, 176), ("v_ZNVhz7ctTq0", 350, 350, 140)],
)
def test_samples_match_the_fps_filter_frame_by_frame(sample_videos, stem, ticks, clean_ticks, disagree):
    path = sample_videos[stem]
    picked, out_ticks, pts = fps_filter(path)
    index, target, _ = ours(path)
    assert len(picked) == ticks
    assert pts[index].tolist() == picked  # the same frame at every tick
    assert np.allclose(target * FPS, out_ticks)  # at the same tick times
    # the clean rule (frame displayed at k/25) picks another frame at many ticks, always the next one
    clean = np.concatenate([c.source_index for c in iter_frames(path, fps=float(FPS), chunk_frames=64)])
    assert len(clean) == clean_ticks
    assert int(np.sum(clean[:ticks] != index)) == disagree
    assert set((index - clean[:ticks]).tolist()) == {0, 1}


@pytest.fixture(scope="module")
def vfr_clips(tmp_path_factory):
    """Variable-frame-rate clips with pattern codes: the corpus's 40/60 ms alternation (exact half ticks at
    0.1 s, 0.3 s, ...), and irregular timing starting late with bursts (several frames per tick) and a gap."""
    folder = tmp_path_factory.mktemp("vfr")
    rng = np.random.default_rng(7)
    steps = np.concatenate([rng.uniform(0.004, 0.09, 40), [0.35], rng.uniform(0.004, 0.02, 12), [0.06] * 10])
    irregular = 0.37 + np.concatenate([[0.0], np.cumsum(np.round(steps, 4))])
    clips = {"alternating": make_fault_corpus(folder / "corpus")["vfr"]}
    for name, count in (("irregular", irregular.size), ("short", 24)):
        frames = (pattern_frame(k, 96, 64, seed=2) for k in range(count))
        clips[name] = write_av_clip(folder / f"{name}.mp4", frames, 25.0, pts_s=irregular[:count])
    return clips


@pytest.mark.parametrize("kind", ["alternating", "irregular"])
def test_variable_frame_rate_clips_match_the_fps_filter(vfr_clips, kind):
    path = vfr_clips[kind]
    picked, out_ticks, pts, images = fps_filter(path, pixels=True)
    index, target, frames = ours(path)
    assert pts[index].tolist() == picked
    assert np.array_equal(frames, images)  # bit-identical pixels
    assert np.allclose(target * FPS, out_ticks)
    assert out_ticks[0] == int(np.floor(pts[0] * FPS / 90000 + 0.5))  # the first tick: the first frame's
    codes = [read_frame_code(f) for f in frames]
    assert codes == np.searchsorted(pts, picked).tolist()  # the pixels are those frames too
    if kind == "alternating":  # 0.1 s is 2.5 ticks: rounded up, so the 0.04 s frame is shown twice
        assert codes[:5] == [0, 1, 1, 2, 3]
    else:  # late start, bursts (frames dropped) and a 0.35 s gap (a frame repeated)
        assert out_ticks[0] == 9 and np.diff(codes).max() > 1 and np.diff(codes).min() == 0


def test_windows_of_the_ffmpeg_rule_are_slices_of_the_whole(vfr_clips):
    path = vfr_clips["irregular"]
    whole, target, _ = ours(path)
    part, part_target, _ = ours(path, start_s=1.0, end_s=2.0)
    keep = (target >= 1.0 - 1e-9) & (target < 2.0 - 1e-9)
    assert part.tolist() == whole[keep].tolist() and np.allclose(part_target, target[keep])
    with av.open(str(path)) as container:
        scan = scan_video(container, container.streams.video[0])
    plan = plan_samples(scan.pts_s, scan.end_s, fps=FPS, frame_rule="ffmpeg")
    assert plan.indices.tolist() == whole.tolist()


@pytest.mark.slow
def test_benchmark_c3d_extraction_embeds_the_fps_filter_frames(vfr_clips):
    path = vfr_clips["short"]
    model = build_extractor("c3d", weights="random", mode="benchmark")
    kaiming_(model.net, seed=1)  # fc7 follows its input, so one wrong frame would show
    (result,) = extract_videos([VideoJob("short", str(path))], [model], batch_size=4)
    _, ticks, _, images = fps_filter(path, pixels=True)
    times = np.asarray(ticks, dtype=np.float64) / FPS
    windower = model.frame_windower()
    windows = windower.push(FrameChunk(images, times, np.arange(len(ticks)), times)) + windower.flush()
    assert len(windows) == len(result.features) == 2
    np.testing.assert_allclose(result.features, model.embed(windows).numpy(), rtol=1e-4, atol=1e-4)
    assert result.start_s.tolist() == pytest.approx([w.start_s for w in windows])


@pytest.mark.parametrize("opener", [open_guarded, open_inprocess])
def test_both_decode_isolations_pass_on_the_benchmark_choices(sample_videos, opener):
    path = sample_videos["v_ZNVhz7ctTq0"]
    with opener(path, fps=25.0, frame_rule="ffmpeg", want_audio=True, audio_path="int16-resampy") as decode:
        clip = decode.audio()
        index = np.concatenate([c.source_index for c in decode.frames()])
    assert index.tolist() == ours(path)[0].tolist()
    assert np.array_equal(clip.samples, read_audio(path, audio_path="int16-resampy").samples)
