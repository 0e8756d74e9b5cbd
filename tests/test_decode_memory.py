"""Streaming keeps memory bounded: peak RSS growth while decoding a long video stays under a fixed bound
that holding the whole decoded video would exceed several times over."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.synth.media import pattern_frame, write_av_clip

SECONDS, FPS, WIDTH, HEIGHT = 64, 25, 320, 240
BOUND_MB = 100

# Runs in a fresh interpreter so the peak RSS (ru_maxrss) belongs to this decode alone.
MEASURE = """
import json, resource, sys
from pipeline.decode import iter_frames
path, backend = sys.argv[1], sys.argv[2]
chunks = iter_frames(path, chunk_frames=16, backend=backend)
first = next(chunks)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
count = len(first)
del first
for chunk in chunks:
    count += len(chunk)
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps({"frames": count, "growth_mb": growth / 1024}))
"""


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    # Cycling a few distinct frames keeps the encode fast; decoding cost and memory do not depend on content.
    distinct = [pattern_frame(k, WIDTH, HEIGHT) for k in range(10)]
    frames = (distinct[k % len(distinct)] for k in range(SECONDS * FPS))
    return write_av_clip(tmp_path_factory.mktemp("long") / "long.mp4", frames, fps=FPS)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_streaming_peak_memory_is_bounded(long_clip, backend):
    whole_video_mb = SECONDS * FPS * WIDTH * HEIGHT * 3 / 2**20
    assert whole_video_mb > 3 * BOUND_MB  # holding every frame could not fit under the bound
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(long_clip), backend], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["frames"] == SECONDS * FPS
    assert result["growth_mb"] < BOUND_MB, result


@pytest.mark.slow
def test_chunks_are_bounded_and_fresh(long_clip):
    from pipeline.decode import iter_frames

    chunks = iter_frames(long_clip, chunk_frames=7, end_s=1.0)
    first, second = next(chunks), next(chunks)
    assert first.frames.shape == (7, HEIGHT, WIDTH, 3) and len(second) == 7
    assert not np.shares_memory(first.frames, second.frames)  # a consumer may keep a chunk safely


def test_chunk_buffers_are_shared_across_videos_but_kept_chunks_stay_intact(long_clip):
    import weakref

    from pipeline.decode import iter_frames

    kept = next(iter_frames(long_clip, chunk_frames=5, end_s=0.2))  # 5 frames of one decode, held
    expected = kept.frames.copy()
    first = next(iter_frames(long_clip, chunk_frames=5, start_s=1.0, end_s=1.2))  # a later decode, dropped
    assert not np.shares_memory(first.frames, kept.frames)
    released = weakref.ref(first.frames.base)
    del first
    again = next(iter_frames(long_clip, chunk_frames=5, start_s=2.0, end_s=2.2))
    assert released() is not None and again.frames.base is released()  # refilled, not faulted in afresh
    assert np.array_equal(kept.frames, expected)  # the chunk still held was never written to
