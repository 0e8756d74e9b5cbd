"""RGB conversion handed to the shared converter threads in batches: same bytes, every row written before it
is read, nothing written after its video is closed."""

from __future__ import annotations

import os
import threading

import av
import numpy as np
import pytest

from pipeline.decode import rgb_handover
from pipeline.decode.rgb import RGBConverter
from pipeline.decode.rgb_handover import RGBHandover, shared_pool

WIDTH, HEIGHT = 64, 32


def _frames(count: int) -> list[av.VideoFrame]:
    rng = np.random.default_rng(0)
    return [
        av.VideoFrame.from_ndarray(
            rng.integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8), format="rgb24"
        ).reformat(format="yuv420p")
        for _ in range(count)
    ]


def _expected(frames: list[av.VideoFrame]) -> np.ndarray:
    return np.stack([RGBConverter().pyav_rgb(frame) for frame in frames])


def test_frames_go_over_in_batches_and_come_back_exact():
    frames = _frames(10)
    out = np.zeros((10, HEIGHT, WIDTH, 3), np.uint8)
    handover = RGBHandover(2, WIDTH * HEIGHT, batch_pixels=4 * WIDTH * HEIGHT)
    batches = [handover.convert(frame, row) for frame, row in zip(frames, out, strict=True)]
    assert [len({id(b) for b in batches[i : i + 4]}) for i in (0, 4, 8)] == [1, 1, 1]
    assert len({id(b) for b in batches}) == 3  # 4 + 4 + the 2 still filling
    assert batches[-1].future is None  # not sent until full or waited for
    for batch in batches:
        batch.wait()
    np.testing.assert_array_equal(out, _expected(frames))
    handover.close()


def test_waiting_on_a_filling_batch_sends_it_and_later_frames_start_a_new_one():
    frames = _frames(3)
    out = np.zeros((3, HEIGHT, WIDTH, 3), np.uint8)
    handover = RGBHandover(1, WIDTH * HEIGHT, batch_pixels=8 * WIDTH * HEIGHT)
    first = handover.convert(frames[0], out[0])
    first.wait()  # the consumer needs row 0 now, e.g. at the end of a chunk
    later = [handover.convert(frame, row) for frame, row in zip(frames[1:], out[1:], strict=True)]
    assert later[0] is not first and later[0] is later[1]
    later[0].wait()
    np.testing.assert_array_equal(out, _expected(frames))
    handover.close()


def test_close_finishes_sent_batches_and_drops_the_filling_one(monkeypatch):
    release = threading.Event()
    write = RGBConverter.write

    def slow_write(self, frame, out):
        release.wait(5)
        write(self, frame, out)

    monkeypatch.setattr(RGBConverter, "write", slow_write)
    frames = _frames(3)
    out = np.zeros((3, HEIGHT, WIDTH, 3), np.uint8)
    handover = RGBHandover(1, WIDTH * HEIGHT, batch_pixels=2 * WIDTH * HEIGHT)
    sent, _ = handover.convert(frames[0], out[0]), handover.convert(frames[1], out[1])
    filling = handover.convert(frames[2], out[2])
    assert sent.future is not None and not sent.future.done()
    threading.Timer(0.05, release.set).start()
    handover.close()  # returns only once the sent batch is written
    assert sent.future.done() and filling.future is None
    np.testing.assert_array_equal(out[:2], _expected(frames[:2]))
    assert not out[2].any()  # never converted: nobody waits for it


def test_a_conversion_error_reaches_the_consumer(monkeypatch):
    def broken(self, frame, out):
        raise MemoryError("sws_getContext failed")

    monkeypatch.setattr(RGBConverter, "write", broken)
    handover = RGBHandover(1, WIDTH * HEIGHT)
    batch = handover.convert(_frames(1)[0], np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    with pytest.raises(MemoryError, match="sws_getContext"):
        batch.wait()
    handover.close()


def test_the_pool_is_shared_within_a_process_and_not_inherited_by_a_fork():
    assert shared_pool(2) is shared_pool(2) and shared_pool(3) is not shared_pool(2)
    pid = os.fork()
    if pid == 0:  # the child has none of the parent's threads: a new pool must be made, and must work
        ok = not rgb_handover._pools and shared_pool(2).submit(lambda: 7).result(timeout=10) == 7
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
