"""Decode in a child process with a time limit, streaming chunks to the parent through a bounded buffer.

Two jobs in one mechanism: (1) a decode that hangs (decord#373 spins forever in native code holding the GIL)
or crashes is cut off by killing the child, and the parent keeps every frame received so far; (2) decoding
overlaps with the parent's work: while the parent runs a model on chunk k, the child decodes the next ones.

Children come from :data:`pipeline.decode.decoders.POOL`: one that finished its video cleanly serves the next
one, one that timed out, crashed or was stopped mid-video is killed (see :mod:`pipeline.decode.decoders`).

A child killed by a signal (the out-of-memory killer's SIGKILL, a crash in native code) says nothing about
the video: the decode is retried once in a fresh child, which skips the frames (and audio) already
delivered, so the consumer sees one continuous stream. A second death ends the decode as ``crashed``, an
outcome extraction runs redo (unlike ``undecodable``, which is the file's fault).

Transport: a pipe carries small pickled headers; pixels go through an anonymous shared-memory ring
(default on Linux) or the pipe itself (:mod:`pipeline.decode.transport`, both measured in
benchmarks/decode.py). A reader thread in the parent copies each chunk into a parent-owned buffer and puts
it into a queue of ``prefetch_chunks`` entries; when that is full the ring's slots are not returned and
the child blocks, so memory stays bounded at about ``prefetch_chunks + 4`` chunks. Killing the child
closes the pipe, so nothing in the parent can wait forever on a half-sent message.

Inside a Dask worker the worker process must be allowed children: set ``distributed.worker.daemon: false``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import threading
from collections.abc import Iterator
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.decode._child import DecodeRequest
from pipeline.decode.audio import check_audio_path
from pipeline.decode.backends import BACKENDS, TEST_BACKENDS
from pipeline.decode.decoders import POOL, START_METHOD, DecoderProcess
from pipeline.decode.frames import DEFAULT_BACKEND, check_args
from pipeline.decode.transport import DEFAULT_TRANSPORT, TRANSPORTS, recv_into
from pipeline.decode.types import AudioClip, DecodeReport, FrameChunk, Outcome

DEFAULT_TIMEOUT_S = 120.0


def open_guarded(
    path: str | Path,
    *,
    fps: float | None = None,
    chunk_frames: int = 32,
    want_audio: bool = False,
    audio_rate: int | None = 16000,
    backend: str = DEFAULT_BACKEND,
    decoder_threads: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    prefetch_chunks: int = 2,
    start_s: float = 0.0,
    end_s: float | None = None,
    frame_rule: str = "pts",
    audio_path: str = "swresample",
    want_frames: bool = True,
    start_method: str = START_METHOD,
    transport: str = DEFAULT_TRANSPORT,
    reuse: bool = True,
) -> GuardedDecode:
    """Start decoding ``path`` in a child process; use the result as a context manager.

    ``timeout_s`` bounds how long the parent waits for the child's next message (chunk, audio or end);
    time the parent spends on its own work does not count, so a slow model never looks like a hung
    decode. ``want_frames=False`` decodes the audio only: the child never opens the video stream, and the
    decode is over once ``audio()`` has returned. ``reuse=False`` starts a fresh child and stops it
    afterwards (benchmarks time the start).
    Arguments as in :func:`pipeline.decode.iter_frames` / :func:`pipeline.decode.read_audio`.
    """
    check_args(fps, chunk_frames, start_s, end_s, frame_rule)
    check_audio_path(audio_path, audio_rate)
    if not (want_frames or want_audio):
        raise ValueError("nothing to decode: want_frames and want_audio are both False")
    if backend not in BACKENDS + TEST_BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if timeout_s <= 0 or prefetch_chunks < 1:
        raise ValueError(f"need timeout_s > 0 and prefetch_chunks >= 1, got {timeout_s}, {prefetch_chunks}")
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; choose one of {', '.join(TRANSPORTS)}")
    request = DecodeRequest(
        str(path),
        fps,
        chunk_frames,
        want_audio,
        audio_rate,
        backend,
        decoder_threads,
        start_s,
        end_s,
        frame_rule,
        audio_path,
        want_frames,
    )
    if mp.current_process().daemon:
        raise RuntimeError(
            "open_guarded needs to start a decoder process, but this process is daemonic (a Dask worker by "
            "default): set the Dask config distributed.worker.daemon to false for extraction workers"
        )
    decoder = POOL.acquire(start_method, transport) if reuse else DecoderProcess(start_method, transport)
    try:
        decoder.conn.send(("decode", request))
    except OSError:  # an idle child that died since its last video: start a fresh one
        decoder.kill()
        decoder.dispose()
        decoder = DecoderProcess(start_method, transport)
        decoder.conn.send(("decode", request))
    return GuardedDecode(request, decoder, timeout_s=timeout_s, prefetch_chunks=prefetch_chunks, reuse=reuse)


class GuardedDecode:
    """A running child decode: ``frames()``, ``audio()``, and ``report`` / ``audio_report`` for outcomes.

    Media problems never raise here: they end up in ``report`` (frames) and ``audio_report`` (audio) as
    typed outcomes, including ``timeout`` and a crashed decoder, with the frames received so far kept.
    """

    def __init__(
        self,
        request: DecodeRequest,
        decoder: DecoderProcess,
        *,
        timeout_s: float,
        prefetch_chunks: int,
        reuse: bool,
    ):
        self.request = request
        self.timeout_s = timeout_s
        self.report = DecodeReport(request.path)
        self.audio_report = DecodeReport(request.path)
        self._audio: AudioClip | None = None
        self._audio_done = not request.want_audio
        self._finished = False
        self._closed = False
        self._reuse, self._prefetch_chunks = reuse, prefetch_chunks
        self._retried = False
        self._skip_frames = 0  # frames a restarted child sends again that the consumer already has
        self._attach(decoder)

    def _attach(self, decoder: DecoderProcess) -> None:
        """Start reading ``decoder``'s messages (the first child, or the fresh one of a retry)."""
        self._video_done = False  # set by the reader thread once the child has sent its final report
        self._decoder, self._process = decoder, decoder.process
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=self._prefetch_chunks)
        self._pump_thread = threading.Thread(target=self._pump, args=(decoder, self._inbox), daemon=True)
        self._pump_thread.start()

    def __enter__(self) -> GuardedDecode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frames(self) -> Iterator[FrameChunk]:
        """Frame chunks as the child decodes them; ends on completion, error, crash or timeout."""
        if not self.request.want_frames:
            raise ValueError("frames were not requested: open_guarded(..., want_frames=True)")
        while not self._finished:
            kind, payload = self._next_message()
            if kind != "frames":
                self._handle(kind, payload)
            elif (chunk := self._unseen(payload)) is not None:
                self.report.frames_decoded += len(chunk)
                yield chunk

    def audio(self) -> AudioClip | None:
        """The mono clip (sent before any frame), or None with the reason in ``audio_report``.

        Without frames the child's end message follows the audio at once: it is awaited here, so the child
        goes back to the pool instead of being killed as one stopped mid-video.
        """
        if not self.request.want_audio:
            raise ValueError("audio was not requested: open_guarded(..., want_audio=True)")
        while not self._finished and not (self._audio_done and self.request.want_frames):
            kind, payload = self._next_message()
            if kind == "frames":
                raise RuntimeError("protocol error: frames arrived before audio")
            self._handle(kind, payload)
        return self._audio

    def close(self) -> None:
        """Hand the child back if it finished its video, else kill it; safe to call twice."""
        if self._closed:
            return
        self._closed = self._finished = True
        killed = not self._video_done  # timed out, crashed, or stopped mid-video: never reused
        if killed:
            self._decoder.kill()
        while self._pump_thread.is_alive():  # unblock the pump if it waits on a full inbox
            with contextlib.suppress(queue.Empty):
                self._inbox.get(timeout=0.05)
        if killed:
            self._decoder.dispose()
        elif self._reuse:
            POOL.release(self._decoder)
        else:
            self._decoder.close()

    def _next_message(self) -> tuple[str, Any]:
        try:
            return self._inbox.get(timeout=self.timeout_s)
        except queue.Empty:
            return "timeout", None

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "audio":
            self._audio, self.audio_report.outcome, self.audio_report.error = payload
            self.audio_report.audio_samples = len(self._audio.samples)
            self._audio_done = True
        elif kind == "audio_error":
            (self.audio_report.outcome, self.audio_report.error), self._audio_done = payload, True
        elif kind == "end":
            self.report.outcome, self.report.error = payload.outcome, payload.error
            self.report.notes.extend(payload.notes)
            self.close()  # everything has arrived: the child can serve the next video now
        elif kind == "timeout":
            self._fail(Outcome.TIMEOUT, f"no output from the decoder for {self.timeout_s:g} s; child killed")
            self.close()
        elif kind == "eof" and (signal := self._killed_by()) is not None:
            self._retry(signal)
        else:  # "failed" (decoder raised) or "eof" (the child died without a word)
            why = (
                payload
                if kind == "failed"
                else f"decoder process died (exit code {self._decoder.exit_code()})"
            )
            self._fail(Outcome.PARTIAL if self.report.frames_decoded else Outcome.UNDECODABLE, why)
            self.close()

    def _killed_by(self) -> int | None:
        """The signal that killed the child, if one did (a negative exit code)."""
        code = self._decoder.exit_code()
        return -code if code is not None and code < 0 else None

    def _retry(self, signal: int) -> None:
        """Decode again in a fresh child after the first death by a signal; ``crashed`` after the second."""
        if self._retried:
            self._fail(
                Outcome.CRASHED,
                f"decoder process killed by signal {signal} twice (out of memory?); the next run redoes it",
            )
            self.close()
            return
        self._retried = True
        self.report.notes.append(f"decoder process killed by signal {signal}; retried in a fresh process")
        self._decoder.kill()
        self._decoder.dispose()
        self._skip_frames = self.report.frames_decoded
        request = replace(self.request, want_audio=not self._audio_done)
        decoder = DecoderProcess(*self._decoder.key)
        decoder.conn.send(("decode", request))
        self._attach(decoder)

    def _unseen(self, chunk: FrameChunk) -> FrameChunk | None:
        """The part of ``chunk`` the consumer has not had (after a retry the child starts over)."""
        if not self._skip_frames:
            return chunk
        drop = min(self._skip_frames, len(chunk))
        self._skip_frames -= drop
        if drop == len(chunk):
            return None
        rest = slice(drop, None)
        target = None if chunk.target_s is None else chunk.target_s[rest]
        return FrameChunk(chunk.frames[rest], chunk.pts_s[rest], chunk.source_index[rest], target)

    def _fail(self, outcome: Outcome, why: str) -> None:
        self.report.outcome, self.report.error = outcome, why
        if not self._audio_done:
            self.audio_report.outcome, self.audio_report.error = outcome, why
            self._audio_done = True

    def _pump(self, decoder: DecoderProcess, inbox: queue.Queue) -> None:
        """Reader thread: receive one video's messages into the bounded inbox (blocking when full)."""
        conn, chunks = decoder.conn, decoder.chunks
        try:
            while True:
                kind, meta = conn.recv()
                if kind == "ring":
                    chunks.open_ring(meta)
                    continue
                if kind == "frames":
                    inbox.put(("frames", chunks.receive(meta)))
                    continue
                message = _receive_other(conn, kind, meta)
                self._video_done = kind == "end"
                inbox.put(message)
                if kind in ("end", "failed"):
                    return
        except (EOFError, OSError):
            inbox.put(("eof", None))


def _receive_other(conn: Connection, kind: str, meta: Any) -> tuple[str, Any]:
    if kind == "audio":
        samples = np.empty(meta["n"], dtype=np.dtype(meta["dtype"]))
        recv_into(conn, samples)
        clip = AudioClip(samples=samples, sample_rate=meta["rate"], start_s=meta["start_s"])
        return "audio", (clip, meta["outcome"], meta["error"])
    return kind, meta
