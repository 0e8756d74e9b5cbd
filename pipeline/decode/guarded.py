"""Decode in a child process with a time limit, streaming chunks to the parent through a bounded buffer.

Two jobs in one mechanism: (1) a decode that hangs (decord#373 spins forever in native code holding the GIL)
or crashes is cut off by killing the child, and the parent keeps every frame received so far; (2) decoding
overlaps with the parent's work: while the parent runs a model on chunk k, the child decodes the next ones.

Transport: a pipe carries small pickled headers; pixels go through an anonymous shared-memory ring
(default on Linux) or the pipe itself (:mod:`pipeline.decode.transport`, both measured in
benchmarks/decode.py). A reader thread in the parent copies each chunk into a parent-owned buffer and puts
it into a queue of ``prefetch_chunks`` entries; when that is full the ring's slots are not returned and
the child blocks, so memory stays bounded at about ``prefetch_chunks + 4`` chunks. Killing the child
closes the pipe, so nothing in the parent can wait forever on a half-sent message.

Start method: ``forkserver`` with the decoding modules preloaded, measured in benchmarks/decode.py to start
a child several times faster than ``spawn`` (which re-imports numpy and av in every child) while staying
safe with torch/decord threads in the parent (``fork`` would copy them mid-flight). The child never
re-imports the parent's ``__main__`` (see :func:`_main_module_hidden`).

Inside a Dask worker the worker process must be allowed children: set ``distributed.worker.daemon: false``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import sys
import threading
import types
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.decode._child import DecodeRequest, run_child
from pipeline.decode.backends import BACKENDS, TEST_BACKENDS
from pipeline.decode.frames import DEFAULT_BACKEND, check_args
from pipeline.decode.transport import DEFAULT_TRANSPORT, TRANSPORTS, ChunkReceiver, recv_into
from pipeline.decode.types import AudioClip, DecodeReport, FrameChunk, Outcome

START_METHOD = "forkserver"
PRELOAD_MODULES = ["pipeline.decode._child", "pipeline.decode.backends.pyav_backend"]
DEFAULT_TIMEOUT_S = 120.0
_START_LOCK = threading.Lock()


def open_guarded(
    path: str | Path,
    *,
    fps: float | None = None,
    chunk_frames: int = 32,
    want_audio: bool = False,
    audio_rate: int = 16000,
    backend: str = DEFAULT_BACKEND,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    prefetch_chunks: int = 2,
    start_s: float = 0.0,
    end_s: float | None = None,
    start_method: str = START_METHOD,
    transport: str = DEFAULT_TRANSPORT,
) -> GuardedDecode:
    """Start decoding ``path`` in a child process; use the result as a context manager.

    ``timeout_s`` bounds how long the parent waits for the child's next message (chunk, audio or end);
    time the parent spends on its own work does not count, so a slow model never looks like a hung
    decode. Arguments as in :func:`pipeline.decode.iter_frames` / :func:`pipeline.decode.read_audio`.
    """
    check_args(fps, chunk_frames, start_s, end_s)
    if backend not in BACKENDS + TEST_BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if timeout_s <= 0 or prefetch_chunks < 1:
        raise ValueError(f"need timeout_s > 0 and prefetch_chunks >= 1, got {timeout_s}, {prefetch_chunks}")
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; choose one of {', '.join(TRANSPORTS)}")
    request = DecodeRequest(
        str(path), fps, chunk_frames, want_audio, audio_rate, backend, start_s, end_s, transport
    )
    return GuardedDecode(
        request, timeout_s=timeout_s, prefetch_chunks=prefetch_chunks, start_method=start_method
    )


def decode_context(start_method: str = START_METHOD) -> mp.context.BaseContext:
    """The multiprocessing context for decode children (forkserver preloads av and our decoding code)."""
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD_MODULES)
    return ctx


class GuardedDecode:
    """A running child decode: ``frames()``, ``audio()``, and ``report`` / ``audio_report`` for outcomes.

    Media problems never raise here: they end up in ``report`` (frames) and ``audio_report`` (audio) as
    typed outcomes, including ``timeout`` and a crashed decoder, with the frames received so far kept.
    """

    def __init__(self, request: DecodeRequest, *, timeout_s: float, prefetch_chunks: int, start_method: str):
        self.request = request
        self.timeout_s = timeout_s
        self.report = DecodeReport(request.path)
        self.audio_report = DecodeReport(request.path)
        self._audio: AudioClip | None = None
        self._audio_done = not request.want_audio
        self._finished = False
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=prefetch_chunks)
        if mp.current_process().daemon:
            raise RuntimeError(
                "open_guarded needs to start a decoder process, but this process is daemonic (a Dask worker by "
                "default): set the Dask config distributed.worker.daemon to false for extraction workers"
            )
        ctx = decode_context(start_method)
        receiver, sender = ctx.Pipe(duplex=True)  # the parent returns shared-memory slots to the child
        self._process = ctx.Process(
            target=run_child, args=(sender, request), name="avzsl-decode", daemon=True
        )
        with _main_module_hidden():
            self._process.start()
        sender.close()  # the child holds the only other end: its death must show up here as EOF
        self._pump_thread = threading.Thread(target=self._pump, args=(receiver,), daemon=True)
        self._pump_thread.start()

    def __enter__(self) -> GuardedDecode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frames(self) -> Iterator[FrameChunk]:
        """Frame chunks as the child decodes them; ends on completion, error, crash or timeout."""
        while not self._finished:
            kind, payload = self._next_message()
            if kind == "frames":
                self.report.frames_decoded += len(payload)
                yield payload
            else:
                self._handle(kind, payload)

    def audio(self) -> AudioClip | None:
        """The mono clip (sent before any frame), or None with the reason in ``audio_report``."""
        if not self.request.want_audio:
            raise ValueError("audio was not requested: open_guarded(..., want_audio=True)")
        while not self._audio_done and not self._finished:
            kind, payload = self._next_message()
            if kind == "frames":
                raise RuntimeError("protocol error: frames arrived before audio")
            self._handle(kind, payload)
        return self._audio

    def close(self) -> None:
        """Stop the child (killing it if still running) and release the pipe; safe to call twice."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=10)
        while self._pump_thread.is_alive():  # unblock the pump if it waits on a full inbox
            with contextlib.suppress(queue.Empty):
                self._inbox.get(timeout=0.05)
        self._finished = True

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
            self._finish(kill=False)
        elif kind == "timeout":
            self._fail(Outcome.TIMEOUT, f"no output from the decoder for {self.timeout_s:g} s; child killed")
            self._finish(kill=True)
        else:  # "failed" (decoder raised) or "eof" (the child died without a word)
            why = payload if kind == "failed" else f"decoder process died (exit code {self._exit_code()})"
            self._fail(Outcome.PARTIAL if self.report.frames_decoded else Outcome.UNDECODABLE, why)
            self._finish(kill=True)

    def _fail(self, outcome: Outcome, why: str) -> None:
        self.report.outcome, self.report.error = outcome, why
        if not self._audio_done:
            self.audio_report.outcome, self.audio_report.error = outcome, why
            self._audio_done = True

    def _finish(self, *, kill: bool) -> None:
        self._finished = True
        if kill:
            self.close()
        else:
            self._process.join(timeout=self.timeout_s)

    def _exit_code(self) -> int | None:
        self._process.join(timeout=1)
        return self._process.exitcode

    def _pump(self, conn: Connection) -> None:
        """Reader thread: receive messages into the bounded inbox (blocking when full: back-pressure)."""
        chunks = ChunkReceiver(conn)
        try:
            while True:
                kind, meta = conn.recv()
                if kind == "ring":
                    chunks.open_ring(meta)
                    continue
                if kind == "frames":
                    self._inbox.put(("frames", chunks.receive(meta)))
                else:
                    self._inbox.put(_receive_other(conn, kind, meta))
                if kind in ("end", "failed"):
                    return
        except (EOFError, OSError):
            self._inbox.put(("eof", None))
        finally:
            chunks.close()
            conn.close()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Keep the child from re-importing the parent's ``__main__``: it only runs pipeline code.

    spawn and forkserver children import the parent's main module before running the target; for a
    benchmark or a Dask worker that main module imports torch, which costs seconds per child. The target
    lives in :mod:`pipeline.decode._child`, so the child never needs ``__main__``.
    """
    with _START_LOCK:  # decode threads start children concurrently: swap and restore one at a time
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


def _receive_other(conn: Connection, kind: str, meta: Any) -> tuple[str, Any]:
    if kind == "audio":
        samples = np.empty(meta["n"], dtype=np.float32)
        recv_into(conn, samples)
        clip = AudioClip(samples=samples, sample_rate=meta["rate"], start_s=meta["start_s"])
        return "audio", (clip, meta["outcome"], meta["error"])
    return kind, meta
