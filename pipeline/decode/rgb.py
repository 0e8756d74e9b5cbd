"""YUV to RGB written straight into the caller's buffer by the libswscale that PyAV bundles.

PyAV's ``reformat`` allocates a new frame per call, which the chunk then copies: 136 us per 480x360 frame
against 80 us converting in place (2-core machine; benchmarks/decode.py measures the effect on whole
decodes). PyAV has no call that converts into a given buffer, so this calls ``sws_scale`` itself, on the
same library build PyAV uses, with the frame's colour matrix and range set the way PyAV's
``sws_scale_frame`` reads them.

Exactness comes first. Only planar 8-bit YUV whose width is a multiple of 16 is converted here: at other
widths this libswscale's SIMD path leaves the last columns unwritten. Each converter also checks its first
frame of every new shape or colour setting against PyAV's own conversion and, on any difference, leaves
that setting to PyAV for good. Everything else returns ``False`` and the caller uses PyAV.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

log = logging.getLogger(__name__)

DIRECT_FORMATS = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p")
WIDTH_MULTIPLE = 16
AVCOL_RANGE_JPEG = 2
SWS_BILINEAR = 2  # PyAV's default flags; unscaled conversions ignore the interpolation


class _Swscale:
    """ctypes bindings to the libswscale/libavutil shared objects in PyAV's wheel (``av.libs``)."""

    def __init__(self, libs: Path):
        swscale = ctypes.CDLL(str(_one(libs, "libswscale-*.so*")))
        avutil = ctypes.CDLL(str(_one(libs, "libavutil-*.so*")))
        int_p, void_pp = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_void_p)
        self.get_pix_fmt = _bind(avutil.av_get_pix_fmt, ctypes.c_int, [ctypes.c_char_p])
        self.get_context = _bind(
            swscale.sws_getContext, ctypes.c_void_p, [ctypes.c_int] * 7 + [ctypes.c_void_p] * 3
        )
        self.coefficients = _bind(swscale.sws_getCoefficients, int_p, [ctypes.c_int])
        self.set_colorspace = _bind(
            swscale.sws_setColorspaceDetails,
            ctypes.c_int,
            [ctypes.c_void_p, int_p, ctypes.c_int, int_p] + [ctypes.c_int] * 4,
        )
        self.scale = _bind(
            swscale.sws_scale,
            ctypes.c_int,
            [ctypes.c_void_p, void_pp, int_p, ctypes.c_int, ctypes.c_int, void_pp, int_p],
        )
        self.free_context = _bind(swscale.sws_freeContext, None, [ctypes.c_void_p])
        self.rgb24 = self.get_pix_fmt(b"rgb24")


def _bind(function, restype, argtypes):
    function.restype, function.argtypes = restype, argtypes
    return function


def _one(folder: Path, pattern: str) -> Path:
    matches = sorted(folder.glob(pattern))
    if len(matches) != 1:
        raise OSError(f"expected one {pattern} in {folder}, found {len(matches)}")
    return matches[0]


def _load() -> _Swscale | None:
    """PyAV's bundled libraries, or None (e.g. a PyAV built against system FFmpeg): PyAV converts then."""
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    try:
        return _Swscale(libs)
    except (OSError, AttributeError) as err:
        log.debug("direct RGB conversion unavailable (%s); using PyAV's reformat", err)
        return None


_SWSCALE = _load()
_UNSEEN = object()
# Frame settings (format, size, colour) a converter keeps contexts for: a dataset of many resolutions must
# not grow a long-lived thread's cache without bound. A setting evicted and seen again is verified again.
MAX_SETTINGS = 8


class _Context:
    """One swscale context for one frame setting, with the pointer arrays reused across calls."""

    def __init__(self, lib: _Swscale, fmt: str, width: int, height: int, colorspace: int, full_range: bool):
        self.lib, self.height = lib, height
        self.ptr = lib.get_context(
            width,
            height,
            lib.get_pix_fmt(fmt.encode()),
            width,
            height,
            lib.rgb24,
            SWS_BILINEAR,
            None,
            None,
            None,
        )
        if not self.ptr:
            raise MemoryError(f"sws_getContext failed for {fmt} {width}x{height}")
        matrix = lib.coefficients(colorspace)  # AVColorSpace and SWS_CS_* agree for every matrix swscale has
        lib.set_colorspace(self.ptr, matrix, int(full_range), matrix, 1, 0, 1 << 16, 1 << 16)
        self.src = (ctypes.c_void_p * 4)()
        self.src_stride = (ctypes.c_int * 4)()
        self.dst = (ctypes.c_void_p * 4)()
        self.dst_stride = (ctypes.c_int * 4)(width * 3)

    def convert(self, frame: av.VideoFrame, out: np.ndarray) -> None:
        for i, plane in enumerate(frame.planes):
            self.src[i], self.src_stride[i] = plane.buffer_ptr, plane.line_size
        self.dst[0] = out.ctypes.data
        self.lib.scale(self.ptr, self.src, self.src_stride, 0, self.height, self.dst, self.dst_stride)

    def __del__(self) -> None:
        if getattr(self, "ptr", None):
            self.lib.free_context(self.ptr)


class RGBConverter:
    """Converts decoded frames to RGB into a given (H, W, 3) uint8 array. Not thread-safe: one per thread."""

    def __init__(self) -> None:
        self._contexts: dict[tuple, _Context | None] = {}  # None: this setting is left to PyAV
        self._reformatter = VideoReformatter()

    def write(self, frame: av.VideoFrame, out: np.ndarray) -> None:
        """Write ``frame`` as RGB into ``out`` (C-contiguous, the frame's height and width)."""
        key = (frame.format.name, frame.width, frame.height, int(frame.colorspace), int(frame.color_range))
        context = self._contexts.get(key, _UNSEEN)
        if context is _UNSEEN:
            context = self._verified_context(key, frame)
        if context is None or not out.flags.c_contiguous:
            out[...] = self.pyav_rgb(frame)
        else:
            context.convert(frame, out)

    def pyav_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """PyAV's conversion: a view of a new frame's buffer. swscale runs on the calling thread only
        (``threads=1``): splitting each frame across one thread per core cost more CPU and was no faster on
        an idle 16-core machine (benchmarks/decode.py)."""
        return self._reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()

    def _verified_context(self, key: tuple, frame: av.VideoFrame) -> _Context | None:
        fmt, width, height, colorspace, color_range = key
        context = None
        if _SWSCALE is not None and fmt in DIRECT_FORMATS and width % WIDTH_MULTIPLE == 0:
            full_range = color_range == AVCOL_RANGE_JPEG or fmt.startswith("yuvj")
            candidate = _Context(_SWSCALE, fmt, width, height, colorspace, full_range)
            direct = np.empty((height, width, 3), np.uint8)
            candidate.convert(frame, direct)
            if np.array_equal(direct, self.pyav_rgb(frame)):
                context = candidate
            else:
                log.warning("direct RGB conversion differs from PyAV's for %s; using PyAV's for it", key)
        if len(self._contexts) >= MAX_SETTINGS:
            del self._contexts[next(iter(self._contexts))]  # the oldest setting
        self._contexts[key] = context
        return context


_per_thread = threading.local()


def thread_converter() -> RGBConverter:
    """This thread's converter, kept for the thread's life: its settings are verified once, not per video
    (a 720p check costs as much as converting 5 to 10 frames)."""
    converter = getattr(_per_thread, "converter", None)
    if converter is None:
        converter = _per_thread.converter = RGBConverter()
    return converter
