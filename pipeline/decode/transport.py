"""How frame chunks travel from the decoding child to the parent: a shared-memory ring or the pipe itself.

``shm`` (Linux, the default): the child creates an anonymous memfd ring of ``RING_SLOTS`` slots of
``SLOT_BYTES`` and hands its file descriptor to the parent over the pipe, so it has no name and cannot leak,
even when the child is killed. A decode child serves many videos in turn, so its ring is made (and its pages
faulted in) once per child, not per video. A chunk travels in slot-sized pieces: the child copies a piece into
a free slot and sends a small message; the parent copies it into its own chunk buffer and returns the slot.
``pipe``: the raw bytes go through the pipe itself (portable, and the fallback where memfd is missing).
Measured (benchmarks/decode.py and 5 interleaved runs on the two samples and a 720p clip): ``shm`` had the
lower median time on all three, by 5-20 %; single runs on the loaded 2-core machine vary more than that.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from pipeline.decode.buffers import BufferPool
from pipeline.decode.types import FrameChunk

RING_SLOTS = 3
SLOT_BYTES = 2 << 20  # chunks travel in pieces: a small ring stays in cache and costs little to map in
TRANSPORTS = ("shm", "pipe")
DEFAULT_TRANSPORT = "shm" if hasattr(os, "memfd_create") else "pipe"
# Pre-fault the ring in one call instead of one page fault per 4 KiB page on first touch.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
# Parent-side chunk buffers are reused across videos (a consumer still holding one keeps it out of reuse).
RECEIVE_POOL = BufferPool(keep=2)


def chunk_meta(chunk: FrameChunk) -> dict[str, Any]:
    return {
        "shape": chunk.frames.shape,
        "pts_s": chunk.pts_s,
        "source_index": chunk.source_index,
        "target_s": chunk.target_s,
    }


class ChunkSender:
    """Child side: sends chunks by the chosen transport; blocks while every ring slot is in use.

    One sender lives as long as its child and is reused for every video, ring included. Parent -> child
    messages are ``("free", slot)``, ``("decode", request)`` and ``("exit", None)``.
    """

    def __init__(self, conn: Connection, transport: str):
        self.conn = conn
        self.transport = transport
        self._ring: mmap.mmap | None = None
        self._free: list[int] = []

    def send(self, chunk: FrameChunk) -> None:
        if self.transport == "shm" and self._ring is None:
            self._open_ring()  # announced before the first chunk: the parent must know how pieces arrive
        self.conn.send(("frames", chunk_meta(chunk)))
        data = np.ascontiguousarray(chunk.frames).reshape(-1)
        if self.transport == "pipe":
            self.conn.send_bytes(memoryview(data))
            return
        for begin in range(0, data.size, SLOT_BYTES):
            piece = data[begin : begin + SLOT_BYTES]
            slot = self._take_slot()
            np.frombuffer(self._ring, np.uint8, count=piece.size, offset=slot * SLOT_BYTES)[:] = piece
            self.conn.send(("piece", slot))

    def next_request(self) -> Any | None:
        """Wait for the parent's next decode request (None: exit), taking back slots returned meanwhile."""
        while True:
            kind, payload = self.conn.recv()
            if kind == "free":
                self._free.append(payload)
            elif kind == "decode":
                return payload
            else:
                return None

    def _take_slot(self) -> int:
        while not self._free:
            kind, payload = self.conn.recv()
            if kind != "free":
                raise RuntimeError(f"protocol error: expected a returned slot, got {kind!r}")
            self._free.append(payload)
        return self._free.pop(0)

    def _open_ring(self) -> None:
        fd = os.memfd_create("avzsl-decode-ring")
        try:
            os.ftruncate(fd, RING_SLOTS * SLOT_BYTES)
            self._ring = mmap.mmap(fd, RING_SLOTS * SLOT_BYTES, flags=_MAP_FLAGS)
            self.conn.send(("ring", RING_SLOTS * SLOT_BYTES))
            reduction.send_handle(self.conn, fd, os.getppid())
        finally:
            os.close(fd)
        self._free = list(range(RING_SLOTS))


class ChunkReceiver:
    """Parent side (a reader thread): reassembles a chunk into a parent-owned buffer, returning slots.

    Lives as long as the child it talks to; the ring arrives once, before that child's first chunk.
    """

    def __init__(self, conn: Connection):
        self.conn = conn
        self._ring: mmap.mmap | None = None

    def open_ring(self, size: int) -> None:
        fd = reduction.recv_handle(self.conn)
        try:
            self._ring = mmap.mmap(fd, size, flags=_MAP_FLAGS)
        finally:
            os.close(fd)

    def receive(self, meta: dict[str, Any]) -> FrameChunk:
        frames = RECEIVE_POOL.get(tuple(meta["shape"]))
        flat = frames.reshape(-1)
        if self._ring is None:
            recv_into(self.conn, frames)
        else:
            for begin in range(0, flat.size, SLOT_BYTES):
                kind, slot = self.conn.recv()
                if kind != "piece":
                    raise RuntimeError(f"protocol error: expected a chunk piece, got {kind!r}")
                n = min(SLOT_BYTES, flat.size - begin)
                flat[begin : begin + n] = np.frombuffer(
                    self._ring, np.uint8, count=n, offset=slot * SLOT_BYTES
                )
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.conn.send(("free", slot))  # fails once the child has finished and exited
        return FrameChunk(frames, meta["pts_s"], meta["source_index"], meta["target_s"])

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None


def recv_into(conn: Connection, array: np.ndarray) -> None:
    """Receive one ``send_bytes`` message straight into ``array`` (no intermediate bytes object)."""
    if array.nbytes == 0:
        conn.recv_bytes()
    else:
        conn.recv_bytes_into(memoryview(array).cast("B"))
