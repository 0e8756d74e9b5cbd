"""Decode child processes, kept and reused across videos: one process serves one guarded decode at a time.

Starting a child, warming up its decoder and mapping its ring in cost more than decoding a short clip
(profiled: 70 ms per video for a 4 s 320x240 clip that decodes in 40 ms), so a child that finished its video
cleanly goes back to a pool and serves the next one. A child that timed out, crashed, raised, or was stopped
mid-video is killed and never reused: a hang or a corrupt decoder state cannot leak into another video.

Start method: ``forkserver`` with the decoding modules preloaded, measured in benchmarks/decode.py to start
a child several times faster than ``spawn`` (which re-imports numpy and av in every child) while staying
safe with torch/decord threads in the parent (``fork`` would copy them mid-flight). The child never
re-imports the parent's ``__main__`` (see :func:`_main_module_hidden`), and its numerical libraries run one
thread each (see :func:`_single_threaded_libraries`).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import threading
import types
from collections.abc import Iterator

from pipeline.decode._child import serve
from pipeline.decode.transport import ChunkReceiver

START_METHOD = "forkserver"
# Imported once in the forkserver instead of in every child. numpy.ma is numpy's lazy import behind
# np.unique (used by the frame planner): 35 ms per child when left to the child (profiled, numpy 2.x).
PRELOAD_MODULES = ["pipeline.decode._child", "pipeline.decode.backends.pyav_backend", "numpy.ma"]
# A child is retired after this many videos, so a slow leak in a native decoder stays bounded.
MAX_VIDEOS_PER_CHILD = 500
MAX_IDLE = 16  # idle children kept per (start method, transport); more are closed
# Read by OpenBLAS / OpenMP / MKL when they load, i.e. when the child (or the forkserver) imports numpy.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_START_LOCK = threading.Lock()


class DecoderProcess:
    """A decode child and the parent's end of its pipe (with the ring receiver that outlives each video)."""

    def __init__(self, start_method: str, transport: str):
        self.key = (start_method, transport)
        ctx = decoder_context(start_method)
        conn, child_end = ctx.Pipe(duplex=True)  # the parent returns shared-memory slots to the child
        self.process = ctx.Process(
            target=serve, args=(child_end, transport), name="avzsl-decode", daemon=True
        )
        # decode threads start children concurrently: the swaps below are made and undone one at a time
        with _START_LOCK, _main_module_hidden(), _single_threaded_libraries():
            self.process.start()
        child_end.close()  # the child holds the only other end: its death must show up here as EOF
        self.conn = conn
        self.chunks = ChunkReceiver(conn)
        self.videos = 0

    def kill(self) -> None:
        """Stop the child at once (it may be hung in native code); a reader of the pipe then sees EOF."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)

    def dispose(self) -> None:
        """Release the pipe and ring once nothing reads them any more (after ``kill``)."""
        self.chunks.close()
        self.conn.close()

    def close(self) -> None:
        """Ask an idle child to exit, killing it if it does not, and release the pipe and ring."""
        with contextlib.suppress(OSError):
            self.conn.send(("exit", None))
        self.process.join(timeout=2)
        self.kill()
        self.dispose()

    def exit_code(self) -> int | None:
        self.process.join(timeout=1)
        return self.process.exitcode


class DecoderPool:
    """Idle decode children by (start method, transport); thread-safe, since decode threads share it."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str], list[DecoderProcess]] = {}
        self._lock = threading.Lock()

    def acquire(self, start_method: str, transport: str) -> DecoderProcess:
        with self._lock:
            idle = self._idle.get((start_method, transport), [])
            while idle:
                decoder = idle.pop()
                if decoder.process.is_alive():
                    return decoder
                decoder.close()
        return DecoderProcess(start_method, transport)

    def release(self, decoder: DecoderProcess) -> None:
        """Take back a child that finished its video cleanly (retire it if it has served enough)."""
        decoder.videos += 1
        with self._lock:
            idle = self._idle.setdefault(decoder.key, [])
            if decoder.videos < MAX_VIDEOS_PER_CHILD and len(idle) < MAX_IDLE:
                idle.append(decoder)
                return
        decoder.close()

    def close(self) -> None:
        """Stop every idle child (busy ones are stopped by their decode's ``close``)."""
        with self._lock:
            idle = [d for decoders in self._idle.values() for d in decoders]
            self._idle.clear()
        for decoder in idle:
            decoder.close()


POOL = DecoderPool()


def decoder_context(start_method: str = START_METHOD) -> mp.context.BaseContext:
    """The multiprocessing context for decode children (forkserver preloads av and our decoding code)."""
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD_MODULES)
    return ctx


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Keep the child from re-importing the parent's ``__main__``: it only runs pipeline code.

    spawn and forkserver children import the parent's main module before running the target; for a
    benchmark or a Dask worker that main module imports torch, which costs seconds per child. The target
    lives in :mod:`pipeline.decode._child`, so the child never needs ``__main__``.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


@contextlib.contextmanager
def _single_threaded_libraries() -> Iterator[None]:
    """Start the child (and the forkserver it comes from) with one BLAS/OpenMP thread.

    A child decodes one video on one core, and the parent already runs one decode per core; benchmark mode's
    resampling is a matrix product (:mod:`pipeline.decode.resample`), which OpenBLAS would otherwise spread
    over every core of the machine from every child at once (on 2 cores: 20 instead of 11.5 CPU-ms for 10 s
    of 44.1 kHz audio). The variables are set in ``os.environ`` only while the process starts (the caller
    holds ``_START_LOCK``); a value the user set is kept.
    """
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    for name, value in saved.items():
        os.environ[name] = value or "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
