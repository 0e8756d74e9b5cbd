"""Direct YUV -> RGB conversion: the same bytes as PyAV's own, or PyAV's own when it cannot promise that."""

from __future__ import annotations

import itertools
import logging
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

from pipeline.decode import rgb
from pipeline.decode.rgb import DIRECT_FORMATS, RGBConverter

pytestmark = pytest.mark.skipif(
    rgb._SWSCALE is None,
    reason="this PyAV does not bundle libswscale (not a PyPI wheel); PyAV converts alone",
)

AVCOL_SPC = (0, 1, 2, 5, 6, 9)  # RGB, BT709, unspecified, BT470BG, SMPTE170M, BT2020_NCL
AVCOL_RANGE = (0, 1, 2)  # unspecified, MPEG (limited), JPEG (full)


def _frame(fmt: str, width: int, height: int, colorspace: int, color_range: int, seed: int) -> av.VideoFrame:
    """A frame of random pixels in ``fmt``, tagged with the given colour matrix and range."""
    rgb_frame = av.VideoFrame.from_ndarray(
        np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8), format="rgb24"
    )
    frame = rgb_frame.reformat(format=fmt)
    frame.colorspace, frame.color_range = colorspace, color_range
    return frame


def _pyav(frame: av.VideoFrame) -> np.ndarray:
    return VideoReformatter().reformat(frame, format="rgb24", threads=1).to_ndarray()


@pytest.mark.parametrize("fmt", DIRECT_FORMATS)
def test_direct_conversion_matches_pyav_for_every_matrix_and_range(fmt):
    converter = RGBConverter()
    for seed, (colorspace, color_range) in enumerate(itertools.product(AVCOL_SPC, AVCOL_RANGE)):
        for _ in range(2):  # the second frame of a setting takes the direct path without a check
            frame = _frame(fmt, 320, 182, colorspace, color_range, seed)
            out = np.empty((182, 320, 3), np.uint8)
            converter.write(frame, out)
            np.testing.assert_array_equal(out, _pyav(frame), err_msg=f"{fmt} {colorspace=} {color_range=}")
            seed += 100


def _count_pyav_calls(monkeypatch) -> list[int]:
    calls = []
    original = RGBConverter.pyav_rgb

    def counting(self, frame):
        calls.append(1)
        return original(self, frame)

    monkeypatch.setattr(RGBConverter, "pyav_rgb", counting)
    return calls


def test_a_checked_setting_is_converted_directly_afterwards(monkeypatch):
    calls = _count_pyav_calls(monkeypatch)
    converter, out = RGBConverter(), np.empty((64, 96, 3), np.uint8)
    for seed in range(5):
        converter.write(_frame("yuv420p", 96, 64, 1, 1, seed), out)
    assert len(calls) == 1  # only the first frame's check


def test_widths_the_simd_path_mishandles_go_to_pyav(monkeypatch):
    calls = _count_pyav_calls(monkeypatch)
    converter, out = RGBConverter(), np.empty((64, 322, 3), np.uint8)
    for seed in range(3):
        frame = _frame("yuv420p", 322, 64, 2, 0, seed)
        converter.write(frame, out)
        np.testing.assert_array_equal(out, _pyav(frame))  # incl. the last 2 columns swscale's SIMD skips
    assert len(calls) == 3


def test_a_setting_that_fails_its_check_stays_with_pyav(monkeypatch, caplog):
    monkeypatch.setattr(rgb._Context, "convert", lambda self, frame, out: out.fill(0))
    calls = _count_pyav_calls(monkeypatch)
    converter, out = RGBConverter(), np.empty((64, 96, 3), np.uint8)
    with caplog.at_level(logging.WARNING, logger="pipeline.decode.rgb"):
        for seed in range(3):
            frame = _frame("yuv420p", 96, 64, 2, 0, seed)
            converter.write(frame, out)
            np.testing.assert_array_equal(out, _pyav(frame))
    assert "differs from PyAV's" in caplog.text
    assert len(calls) == 1 + 3  # the failed check, then every frame


def test_a_long_lived_converter_keeps_a_bounded_number_of_settings(monkeypatch):
    calls = _count_pyav_calls(monkeypatch)
    converter = RGBConverter()
    widths = [16 * (k + 1) for k in range(rgb.MAX_SETTINGS + 2)]  # one more setting than kept, twice over
    for width in widths + widths[-rgb.MAX_SETTINGS :]:
        frame, out = _frame("yuv420p", width, 32, 1, 1, width), np.empty((32, width, 3), np.uint8)
        converter.write(frame, out)
        np.testing.assert_array_equal(out, _pyav(frame))
        assert len(converter._contexts) <= rgb.MAX_SETTINGS
    assert len(calls) == len(widths)  # the most recent settings were still kept: no second check


def test_each_thread_keeps_its_own_converter():
    mine = rgb.thread_converter()
    with ThreadPoolExecutor(1) as pool:
        theirs = pool.submit(rgb.thread_converter).result()
        assert pool.submit(rgb.thread_converter).result() is theirs
    assert rgb.thread_converter() is mine and theirs is not mine
