"""The decoding side of :mod:`pipeline.decode.guarded`: runs in a child process, streams results up a pipe.

Messages are small pickled headers; frame pixels go through a shared-memory ring or as raw bytes
(:mod:`pipeline.decode.transport`), audio as raw bytes (``send_bytes``, no pickling of samples). Everything
is sent from the decoding thread itself, so a decode that hangs can never leave half a message in the pipe.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from pipeline.decode.audio import read_audio
from pipeline.decode.frames import iter_frames
from pipeline.decode.transport import DEFAULT_TRANSPORT, ChunkSender
from pipeline.decode.types import DecodeReport, MediaError


@dataclass(frozen=True)
class DecodeRequest:
    path: str
    fps: float | None
    chunk_frames: int
    want_audio: bool
    audio_rate: int
    backend: str
    start_s: float
    end_s: float | None
    transport: str = DEFAULT_TRANSPORT


def run_child(conn: Connection, request: DecodeRequest) -> None:
    """Entry point of the child: audio first (if wanted), then frame chunks, then the final report."""
    try:
        if request.want_audio:
            _send_audio(conn, request)
        report = DecodeReport(request.path)
        sender = ChunkSender(conn, request.transport)
        try:
            for chunk in iter_frames(
                request.path,
                fps=request.fps,
                chunk_frames=request.chunk_frames,
                backend=request.backend,
                start_s=request.start_s,
                end_s=request.end_s,
                report=report,
                _allow_test_backend=True,
            ):
                sender.send(chunk)
        except MediaError as err:
            report.outcome, report.error = err.outcome, err.reason
        conn.send(("end", report))
    except (BrokenPipeError, ConnectionResetError):
        return  # the parent stopped listening (closed early or timed out): nothing left to do
    except Exception as err:  # a decoder bug triggered by this file: record it for the parent, never hide it
        detail = "".join(traceback.format_exception_only(err)).strip()
        conn.send(("failed", f"decoder raised {detail}"))
    finally:
        conn.close()


def _send_audio(conn: Connection, request: DecodeRequest) -> None:
    report = DecodeReport(request.path)
    try:
        clip = read_audio(request.path, sample_rate=request.audio_rate, report=report)
    except MediaError as err:
        conn.send(("audio_error", (err.outcome, err.reason)))
        return
    conn.send(
        (
            "audio",
            {
                "n": int(clip.samples.size),
                "rate": clip.sample_rate,
                "start_s": clip.start_s,
                "outcome": report.outcome,
                "error": report.error,
            },
        )
    )
    conn.send_bytes(memoryview(np.ascontiguousarray(clip.samples, dtype=np.float32)).cast("B"))
