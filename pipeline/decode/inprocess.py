"""Decode in the calling process, with the interface of :func:`pipeline.decode.open_guarded`.

For trusted inputs, or where child processes are unwelcome (some schedulers, debuggers): no time limit and no
crash isolation, so a decoder that hangs (decord#373) hangs the caller. Media problems still end up as typed
outcomes in ``report`` / ``audio_report``. Decoding then runs on the caller's own thread: one extraction worker
uses about one core instead of two processes' worth (benchmarks/scale.py measures both).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline.decode.audio import check_audio_path, read_audio
from pipeline.decode.frames import DEFAULT_BACKEND, check_args, iter_frames
from pipeline.decode.types import AudioClip, DecodeReport, FrameChunk, MediaError


def open_inprocess(
    path: str | Path,
    *,
    fps: float | None = None,
    chunk_frames: int = 32,
    want_audio: bool = False,
    audio_rate: int | None = 16000,
    backend: str = DEFAULT_BACKEND,
    decoder_threads: int = 0,
    start_s: float = 0.0,
    end_s: float | None = None,
    frame_rule: str = "pts",
    audio_path: str = "swresample",
    want_frames: bool = True,
    **_guard_options: object,
) -> InProcessDecode:
    """Arguments as :func:`pipeline.decode.open_guarded`; its guard options (time limit, transport) do not
    apply."""
    check_args(fps, chunk_frames, start_s, end_s, frame_rule)
    check_audio_path(audio_path, audio_rate)
    if not (want_frames or want_audio):
        raise ValueError("nothing to decode: want_frames and want_audio are both False")
    frame_args = {
        "fps": fps,
        "chunk_frames": chunk_frames,
        "backend": backend,
        "decoder_threads": decoder_threads,
        "start_s": start_s,
        "end_s": end_s,
        "frame_rule": frame_rule,
    }
    return InProcessDecode(
        path,
        frame_args if want_frames else None,
        {"sample_rate": audio_rate, "audio_path": audio_path} if want_audio else None,
    )


class InProcessDecode:
    """``frames()``, ``audio()``, ``report`` and ``audio_report`` as in
    :class:`pipeline.decode.GuardedDecode`."""

    def __init__(self, path: str | Path, frame_args: dict | None, audio_args: dict | None):
        """``frame_args`` for :func:`iter_frames`, ``audio_args`` for :func:`read_audio`; None: not wanted."""
        self.path = str(path)
        self._frame_args = frame_args
        self._audio_args = audio_args
        self.report = DecodeReport(self.path)
        self.audio_report = DecodeReport(self.path)

    def __enter__(self) -> InProcessDecode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to stop: present so callers treat both decode kinds alike."""

    def audio(self) -> AudioClip | None:
        """The mono clip, or None with the reason in ``audio_report``."""
        if self._audio_args is None:
            raise ValueError("audio was not requested: open_inprocess(..., want_audio=True)")
        try:
            clip = read_audio(self.path, report=self.audio_report, **self._audio_args)
        except MediaError as err:
            self.audio_report.outcome, self.audio_report.error = err.outcome, err.reason
            return None
        self.audio_report.audio_samples = len(clip.samples)
        return clip

    def frames(self) -> Iterator[FrameChunk]:
        """Frame chunks as they are decoded; a failure ends the stream and is recorded in ``report``."""
        if self._frame_args is None:
            raise ValueError("frames were not requested: open_inprocess(..., want_frames=True)")
        try:
            yield from iter_frames(self.path, report=self.report, **self._frame_args)
        except MediaError as err:
            self.report.outcome, self.report.error = err.outcome, err.reason
