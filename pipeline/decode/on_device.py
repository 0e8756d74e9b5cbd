"""Decode frames on the GPU (NVDEC, through torchcodec) into uint8 tensors that stay on that device.

``--decode-device cuda``: the GPU's hardware decoder decodes and colour-converts, so the CPU only demuxes and
frames never cross to the host before the model's preprocessing, which runs on the same device. The frames
are chosen as on the CPU: the same packet scan (:mod:`pipeline.decode.scan`) and :func:`plan_samples` pick the
indices, and torchcodec decodes exactly those (its frame index is the presentation order the scan sorts by;
every decoded frame's timestamp is checked against the scan's). Pixels differ from swscale's by the colour
conversion's arithmetic (tests/test_decode_on_device.py measures it on the sample videos).

Runs in the calling thread, with the interface of :func:`pipeline.decode.open_inprocess` for frames only: no
child process and no time limit, so a decoder that hangs or crashes is not contained. torchcodec is an
optional dependency, imported only here (:func:`check_device_decoding` says what is missing); ``device="cpu"``
runs torchcodec's FFmpeg decoder instead, which the tests use where no GPU is present.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.decode.demux import check_file, open_media, read_only
from pipeline.decode.frames import check_args
from pipeline.decode.sampling import plan_samples
from pipeline.decode.scan import scan_video
from pipeline.decode.types import DecodeReport, FrameChunk, MediaError, Outcome

DECODE_DEVICES = ("cpu", "cuda")  # where an extraction decodes frames: PyAV/decord on the CPU, or NVDEC
INSTALL_HINT = (
    "pip install torchcodec==0.17.0 (the build matching your torch and CUDA), with FFmpeg 4-7 shared "
    "libraries on the system (Debian/Ubuntu: apt-get install ffmpeg) built with NVDEC support"
)
TIMESTAMP_SLACK_S = 1e-4  # torchcodec reports pts in seconds: it must name the frame the scan planned


def check_device_decoding(device: str) -> None:
    """A ``RuntimeError`` saying what to install or change when frames cannot be decoded on ``device``."""
    try:
        import torch
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except (
        ImportError,
        OSError,
        RuntimeError,
    ) as err:  # torchcodec raises RuntimeError when FFmpeg is missing
        raise RuntimeError(
            f"decoding frames on {device!r} needs torchcodec ({err}); {INSTALL_HINT}"
        ) from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"decoding frames on {device!r} needs a CUDA GPU, and torch sees none")


def open_on_device(
    path: str | Path,
    *,
    device: str = "cuda",
    fps: float | None = None,
    chunk_frames: int = 32,
    start_s: float = 0.0,
    end_s: float | None = None,
    frame_rule: str = "pts",
) -> DeviceDecode:
    """Frames of ``path`` sampled as by :func:`pipeline.decode.iter_frames`, decoded on ``device``."""
    check_args(fps, chunk_frames, start_s, end_s, frame_rule)
    return DeviceDecode(Path(path), device, fps, chunk_frames, start_s, end_s, frame_rule)


class DeviceDecode:
    """``frames()`` and ``report`` as :class:`pipeline.decode.InProcessDecode` (no audio)."""

    def __init__(self, path, device, fps, chunk_frames, start_s, end_s, frame_rule):
        self.path, self.device = path, device
        self._sampling = {"fps": fps, "start_s": start_s, "end_s": end_s, "frame_rule": frame_rule}
        self._chunk_frames = chunk_frames
        self.report = DecodeReport(str(path))

    def __enter__(self) -> DeviceDecode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to stop: present so callers treat every decode alike."""

    def frames(self) -> Iterator[FrameChunk]:
        """Chunks of (N, H, W, 3) uint8 tensors on the device; a failure ends them and goes in ``report``."""
        try:
            yield from self._frames()
        except MediaError as err:
            self.report.outcome, self.report.error = err.outcome, err.reason

    def _frames(self) -> Iterator[FrameChunk]:
        import torch
        from torchcodec.decoders import VideoDecoder

        times, stream_end = _frame_times(self.path)
        plan = plan_samples(times, stream_end, **self._sampling)
        try:
            decoder = VideoDecoder(
                str(self.path), device=self.device, dimension_order="NHWC", seek_mode="exact"
            )
        except (RuntimeError, ValueError) as err:
            raise MediaError(Outcome.UNDECODABLE, f"torchcodec cannot open it: {err}", self.path) from None
        if decoder.metadata.num_frames != times.size:
            raise MediaError(
                Outcome.UNDECODABLE,
                f"torchcodec finds {decoder.metadata.num_frames} frames, the packet scan {times.size}",
                self.path,
            )
        for begin in range(0, len(plan), self._chunk_frames):
            rows = plan.indices[begin : begin + self._chunk_frames]
            unique, inverse = np.unique(rows, return_inverse=True)
            try:
                batch = decoder.get_frames_at(unique.tolist())
            except RuntimeError as err:
                outcome = Outcome.PARTIAL if self.report.frames_decoded else Outcome.UNDECODABLE
                raise MediaError(outcome, f"decoding stopped: {err}", self.path) from None
            decoded = batch.pts_seconds.cpu().numpy()
            if not np.allclose(decoded, times[unique], atol=TIMESTAMP_SLACK_S):
                at = int(np.argmax(np.abs(decoded - times[unique])))
                raise MediaError(
                    Outcome.UNDECODABLE,
                    f"torchcodec's frame {int(unique[at])} is at {decoded[at]:.6f} s, the scan's at "
                    f"{times[unique[at]]:.6f} s",
                    self.path,
                )
            frames = batch.data[torch.as_tensor(inverse, device=batch.data.device)]
            self.report.frames_decoded += len(rows)
            yield FrameChunk(
                frames, times[rows], rows.astype(np.int64), plan.target_s[begin : begin + len(rows)]
            )


def _frame_times(path: Path) -> tuple[np.ndarray, float]:
    """Presentation times and stream end from a packet scan (what the CPU backends plan with)."""
    check_file(path)
    with open_media(path) as container:
        if not container.streams.video:
            raise MediaError(Outcome.NO_VIDEO, "no video stream", path)
        stream = container.streams.video[0]
        read_only(container, stream)
        scan = scan_video(container, stream)
    if scan.pts.size == 0:
        raise MediaError(Outcome.UNDECODABLE, "the video stream has no frames", path)
    return scan.pts_s, scan.end_s
