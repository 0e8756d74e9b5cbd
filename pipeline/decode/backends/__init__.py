"""Frame backends by name: ``pyav`` and ``decord`` (identical frames), plus the test-only ``hang-test``."""

from __future__ import annotations

from pipeline.decode.backends.base import FrameBackend, FrameReader

BACKENDS = ("pyav", "decord")
TEST_BACKENDS = ("hang-test",)  # simulates decord#373 (a decode that never returns); only inside open_guarded


def get_backend(name: str, *, threads: int = 0, allow_test: bool = False) -> FrameBackend:
    """The backend called ``name``; test backends only when ``allow_test`` (they would hang the caller).

    ``threads``: 0 lets one stream use the machine (the backend picks); 1 decodes on the calling thread
    alone, for callers that already run one decoder per core; N uses N decoding threads.
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if name == "pyav":
        from pipeline.decode.backends.pyav_backend import PyAVBackend

        return PyAVBackend(thread_count=threads)
    if name == "decord":
        from pipeline.decode.backends.decord_backend import DecordBackend

        return DecordBackend(num_threads=threads)
    if name == "hang-test" and allow_test:
        from pipeline.decode.backends.hang_backend import HangBackend

        return HangBackend()
    if name in TEST_BACKENDS:
        raise ValueError(f"backend {name!r} is test-only and never returns; use it through open_guarded")
    raise ValueError(f"unknown decode backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "TEST_BACKENDS", "FrameBackend", "FrameReader", "get_backend"]
