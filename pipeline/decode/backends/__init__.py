"""Frame backends by name: ``pyav`` and ``decord`` (identical frames), plus the test-only ``hang-test``."""

from __future__ import annotations

from pipeline.decode.backends.base import FrameBackend, FrameReader

BACKENDS = ("pyav", "decord")
TEST_BACKENDS = ("hang-test",)  # simulates decord#373 (a decode that never returns); only inside open_guarded


def get_backend(name: str, *, allow_test: bool = False) -> FrameBackend:
    """The backend called ``name``; test backends only when ``allow_test`` (they would hang the caller)."""
    if name == "pyav":
        from pipeline.decode.backends.pyav_backend import PyAVBackend

        return PyAVBackend()
    if name == "decord":
        from pipeline.decode.backends.decord_backend import DecordBackend

        return DecordBackend()
    if name == "hang-test" and allow_test:
        from pipeline.decode.backends.hang_backend import HangBackend

        return HangBackend()
    if name in TEST_BACKENDS:
        raise ValueError(f"backend {name!r} is test-only and never returns; use it through open_guarded")
    raise ValueError(f"unknown decode backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "TEST_BACKENDS", "FrameBackend", "FrameReader", "get_backend"]
