"""The decoding side of :mod:`pipeline.decode.guarded`: a child process that decodes requests one after another.

A child serves videos in turn (starting a process, warming up the decoder and mapping the ring in cost more
than decoding a short clip: profiled at 70 ms per video for a 4 s 320x240 clip that decodes in 40 ms), and
exits when the parent closes the pipe or says ``exit``. Messages are small pickled headers; frame pixels go
through a shared-memory ring or as raw bytes (:mod:`pipeline.decode.transport`), audio as raw bytes (``send_bytes``, no pickling of samples). Everything
is sent from the decoding thread itself, so a decode that hangs can never leave half a message in the pipe.
"""

from __future__ import annotations

import signal
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from pipeline.decode.audio import read_audio
from pipeline.decode.frames import iter_frames
from pipeline.decode.transport import ChunkSender
from pipeline.decode.types import DecodeReport, MediaError


@dataclass(frozen=True)
class DecodeRequest:
    path: str
    fps: float | None
    chunk_frames: int
    want_audio: bool
    audio_rate: int | None  # None: int16-resampy audio at its native rate, before resampling
    backend: str
    decoder_threads: int
    start_s: float
    end_s: float | None
    frame_rule: str = "pts"
    audio_path: str = "swresample"
    want_frames: bool = True  # False: audio only, the video stream is never opened


def serve(conn: Connection, transport: str) -> None:
    """Entry point of the child: decode each request the parent sends until told to stop.

    The child ignores Ctrl-C, which reaches the whole process group: the parent handles it and stops us.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sender = ChunkSender(conn, transport)
    try:
        while (request := sender.next_request()) is not None:
            if not _decode(conn, sender, request):
                return
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent went away or stopped listening: nothing left to do
    finally:
        conn.close()


def _decode(conn: Connection, sender: ChunkSender, request: DecodeRequest) -> bool:
    """Audio first (if wanted), then frame chunks (if wanted), then the final report; False if this child
    should stop."""
    try:
        if request.want_audio:
            _send_audio(conn, request)
        report = DecodeReport(request.path)
        if request.want_frames:
            _send_frames(sender, request, report)
        conn.send(("end", report))
        return True
    except (BrokenPipeError, ConnectionResetError):
        raise  # the parent went away: not a decoder failure; serve() ends quietly
    except Exception as err:  # a decoder bug triggered by this file: record it for the parent, never hide it
        detail = "".join(traceback.format_exception_only(err)).strip()
        conn.send(("failed", f"decoder raised {detail}"))
        return False  # its state may be off after that: the parent retires this child


def _send_frames(sender: ChunkSender, request: DecodeRequest, report: DecodeReport) -> None:
    try:
        for chunk in iter_frames(
            request.path,
            fps=request.fps,
            chunk_frames=request.chunk_frames,
            backend=request.backend,
            decoder_threads=request.decoder_threads,
            start_s=request.start_s,
            end_s=request.end_s,
            frame_rule=request.frame_rule,
            report=report,
            _allow_test_backend=True,
        ):
            sender.send(chunk)
    except MediaError as err:
        report.outcome, report.error = err.outcome, err.reason


def _send_audio(conn: Connection, request: DecodeRequest) -> None:
    report = DecodeReport(request.path)
    try:
        clip = read_audio(
            request.path, sample_rate=request.audio_rate, report=report, audio_path=request.audio_path
        )
    except MediaError as err:
        conn.send(("audio_error", (err.outcome, err.reason)))
        return
    conn.send(
        (
            "audio",
            {
                "n": int(clip.samples.size),
                "dtype": clip.samples.dtype.str,
                "rate": clip.sample_rate,
                "start_s": clip.start_s,
                "outcome": report.outcome,
                "error": report.error,
            },
        )
    )
    conn.send_bytes(memoryview(np.ascontiguousarray(clip.samples)).cast("B"))
