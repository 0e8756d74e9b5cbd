"""Test double of the extractors package for the extraction-job tests: tiny, deterministic, real decoding.

``build`` and ``extract_videos`` have the signatures of ``extractors.registry.build_extractor`` and
``extractors.runner.extract_videos``; the job loads them by import path (``extract_fakes:build``), so
Dask workers and ``avzsl extract`` subprocesses need this folder on PYTHONPATH. Features are cheap
statistics of really decoded frames (4 fps) or audio (0.5 s blocks), so every fault outcome of
``pipeline.decode`` reaches the store. Environment switches drive the fault tests:
``FAKE_SLEEP_S`` (seconds per video), ``FAKE_STARTED_MARKER`` (a path created when a worker starts a video),
``FAKE_CRASH_ON`` (the runner raises on a video whose id contains
it) and ``FAKE_KILL_MARKER`` (a path: the first worker process that meets a video whose id contains
"kill" creates it and SIGKILLs itself).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.decode import DecodeReport, MediaError, Outcome, iter_frames, read_audio

FPS = 4.0
AUDIO_BLOCK_S = 0.5
DIM = 4


@dataclass
class VideoJob:
    video_id: str
    path: str


@dataclass
class ExtractedFeatures:
    video_id: str
    extractor: str
    status: Outcome
    reason: str | None
    features: np.ndarray | None
    start_s: np.ndarray | None
    end_s: np.ndarray | None


@dataclass(frozen=True)
class FakeSpec:
    name: str
    modality: str
    weights: str
    mode: str
    output_dim: int = DIM
    output_dtype: str = "float32"

    @property
    def random_weights(self) -> bool:
        return self.weights == "random"

    def fingerprint(self) -> str:
        text = f"{self.name}|{self.modality}|{self.weights}|{self.mode}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "modality": self.modality,
            "output_dim": DIM,
            "output_dtype": "float32",
            "random_weights": self.random_weights,
        }


@dataclass
class FakeExtractor:
    spec: FakeSpec


def build(name: str, *, weights: str, device: str = "cpu", mode: str = "clean", **options) -> FakeExtractor:
    modality = "audio" if name.startswith("audio") else "visual"
    return FakeExtractor(FakeSpec(name, modality, str(weights), mode))


def extract_videos(
    jobs: Iterable[VideoJob],
    extractors: Sequence[FakeExtractor],
    *,
    batch_size: int = 32,
    decode_timeout_s: float = 600.0,
    prefetch_videos: int | None = None,
    decode_isolation: str = "process",
    decode_device: str = "cpu",
) -> Iterator[ExtractedFeatures]:
    if multiprocessing.current_process().daemon:  # the real runner needs to start a decode child
        raise RuntimeError("daemonic worker process: the guarded decode child could not be started here")
    for job in jobs:
        _faults(job)
        for extractor in extractors:
            if extractor.spec.modality == "audio":
                yield _audio(job, extractor.spec.name)
            else:
                yield _visual(job, extractor.spec.name)


def _faults(job: VideoJob) -> None:
    if started := os.environ.get("FAKE_STARTED_MARKER"):
        Path(started).touch()
    delay = float(os.environ.get("FAKE_SLEEP_S", "0") or 0)
    if delay:
        time.sleep(delay)
    crash = os.environ.get("FAKE_CRASH_ON")
    if crash and crash in job.video_id:
        raise RuntimeError(f"simulated runner crash on {job.video_id}")
    marker = os.environ.get("FAKE_KILL_MARKER")
    if marker and "kill" in job.video_id and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def _visual(job: VideoJob, name: str) -> ExtractedFeatures:
    report = DecodeReport(job.path)
    rows, times = [], []
    try:
        for chunk in iter_frames(job.path, fps=FPS, report=report):
            frames = chunk.frames.astype(np.float32)
            rows.append(
                np.concatenate([frames.mean(axis=(1, 2)), frames.std(axis=(1, 2, 3))[:, None]], axis=1)
            )
            times.append(chunk.pts_s)
    except MediaError as err:
        return ExtractedFeatures(job.video_id, name, err.outcome, err.reason, None, None, None)
    features = np.concatenate(rows).astype(np.float32)
    start = np.concatenate(times)
    return ExtractedFeatures(
        job.video_id, name, report.outcome, report.error, features, start, start + 1 / FPS
    )


def _audio(job: VideoJob, name: str) -> ExtractedFeatures:
    report = DecodeReport(job.path)
    try:
        clip = read_audio(job.path, sample_rate=16000, report=report)
    except MediaError as err:
        return ExtractedFeatures(job.video_id, name, err.outcome, err.reason, None, None, None)
    block = int(AUDIO_BLOCK_S * clip.sample_rate)
    count = len(clip.samples) // block
    if count == 0:
        reason = f"{clip.duration_s:.2f} s of audio is shorter than one {AUDIO_BLOCK_S} s window"
        return ExtractedFeatures(job.video_id, name, Outcome.TOO_SHORT, reason, None, None, None)
    blocks = clip.samples[: count * block].reshape(count, block)
    features = np.stack([blocks.mean(1), blocks.std(1), blocks.min(1), blocks.max(1)], axis=1).astype(
        np.float32
    )
    start = clip.start_s + np.arange(count) * AUDIO_BLOCK_S
    return ExtractedFeatures(
        job.video_id, name, report.outcome, report.error, features, start, start + AUDIO_BLOCK_S
    )
