"""A small deterministic corpus of damaged and unusual media, one file per failure mode.

Decoding, extraction and the Dask tasks must turn each of these into a typed outcome instead of a crash
(docs/decoding.md); the corpus gives every test the same files. With ``source`` (e.g. a real sample video)
the good, truncated and stream-less variants derive from that file instead of a synthetic clip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.synth.media import make_test_clip, pattern_frame, write_av_clip

FAULT_KINDS = ("ok", "truncated", "no_audio", "no_video", "random_bytes", "zero_length", "short_0_3s", "vfr")
TRUNCATE_FRACTION = 0.4
RANDOM_BYTES = 64 * 1024
SHORT_SECONDS = 0.3
WIDTH, HEIGHT, SECONDS = 160, 120, 2.0
SAMPLE_RATE = 16000
# Variable frame rate: frame durations alternate 1/25 s and 3/50 s (average 20 fps).
VFR_DURATIONS = (Fraction(1, 25), Fraction(3, 50))


def make_fault_corpus(out_dir: str | Path, source: str | Path | None = None) -> dict[str, Path]:
    """Write the corpus into ``out_dir`` and return ``{kind: path}`` for every kind in :data:`FAULT_KINDS`.

    ok: a good H.264 + AAC clip (2 s, 160x120, or a copy of ``source``); truncated: its first ~40 % of
    bytes, cut inside a video packet so video decoding fails mid-stream; no_audio / no_video: its
    video / audio stream remuxed alone (no re-encode); random_bytes: 64 KiB of seeded noise;
    zero_length: an empty file; short_0_3s: a 0.3 s clip with audio; vfr: frame durations alternating
    1/25 s and 3/50 s, with audio.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / f"{kind}.mp4" for kind in FAULT_KINDS}
    if source is None:
        make_test_clip(paths["ok"], seconds=SECONDS, width=WIDTH, height=HEIGHT, seed=0)
        make_test_clip(paths["short_0_3s"], seconds=SHORT_SECONDS, width=WIDTH, height=HEIGHT, fps=30.0)
    else:
        source = Path(source)
        if not source.is_file():
            raise FileNotFoundError(f"{source}: fault corpus source video not found; pass an existing file")
        _atomic_copy(source, paths["ok"])
        _write_head(source, paths["short_0_3s"], SHORT_SECONDS)
    _write_truncated(paths["ok"], paths["truncated"], TRUNCATE_FRACTION)
    _remux_single_stream(paths["ok"], paths["no_audio"], "video")
    _remux_single_stream(paths["ok"], paths["no_video"], "audio")
    rng = np.random.default_rng(0)
    _atomic_bytes(paths["random_bytes"], rng.integers(0, 256, RANDOM_BYTES, dtype=np.uint8).tobytes())
    _atomic_bytes(paths["zero_length"], b"")
    _write_vfr(paths["vfr"])
    return paths


def truncation_point(path: Path, fraction: float) -> int:
    """Byte offset near ``fraction`` of ``path`` that lies inside a video packet.

    A cut between packets or inside an audio packet lets the video decoder stop cleanly at EOF;
    a cut inside a video packet reproduces the real failure (an error at ``avcodec_send_packet``).
    """
    target = int(path.stat().st_size * fraction)
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if packet.pos is None or packet.size < 2:
                continue
            if packet.pos + packet.size > target:
                return max(target, packet.pos + 1) if packet.pos <= target else packet.pos + packet.size // 2
    raise ValueError(f"{path}: no video packet after {fraction:.0%} of the file; cannot truncate it usefully")


def _write_truncated(good: Path, dest: Path, fraction: float) -> None:
    cut = truncation_point(good, fraction)
    with good.open("rb") as f:
        _atomic_bytes(dest, f.read(cut))


def _remux_single_stream(src: Path, dest: Path, kind: str) -> None:
    """Copy one stream's packets into a new mp4 without re-encoding."""
    tmp = _tmp_path(dest)
    try:
        with av.open(str(src)) as inp:
            streams = inp.streams.video if kind == "video" else inp.streams.audio
            if not streams:
                raise ValueError(f"{src}: has no {kind} stream to keep")
            with av.open(str(tmp), "w", format="mp4", options={"fflags": "+bitexact"}) as out:
                ostream = out.add_stream_from_template(streams[0])
                for packet in inp.demux(streams[0]):
                    if packet.dts is None:  # the demuxer's final flush packet
                        continue
                    packet.stream = ostream
                    out.mux(packet)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def _write_head(source: Path, dest: Path, seconds: float) -> None:
    """Re-encode the first ``seconds`` of ``source`` (frames at their own times, audio as 16 kHz mono)."""
    frames, times = [], []
    with av.open(str(source)) as inp:
        for frame in inp.decode(video=0):
            if frame.time is not None and frame.time >= seconds:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time or 0.0))
    audio = _read_audio(source, seconds)
    h, w = frames[0].shape[:2]
    frames = [f[: h - h % 2, : w - w % 2] for f in frames]
    t0 = times[0]
    write_av_clip(dest, frames, fps=len(frames) / seconds, audio=audio, pts_s=[t - t0 for t in times])


def _read_audio(source: Path, seconds: float) -> np.ndarray | None:
    with av.open(str(source)) as inp:
        if not inp.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        parts = []
        for frame in inp.decode(audio=0):
            parts.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(frame))
            if sum(len(p) for p in parts) >= seconds * SAMPLE_RATE:
                break
    samples = np.concatenate(parts)[: round(seconds * SAMPLE_RATE)] if parts else np.zeros(0, np.float32)
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


def _write_vfr(dest: Path) -> None:
    n = round(SECONDS / float(sum(VFR_DURATIONS)) * len(VFR_DURATIONS))
    durations = [VFR_DURATIONS[k % len(VFR_DURATIONS)] for k in range(n)]
    pts = [float(sum(durations[:k], Fraction(0))) for k in range(n)]
    end = float(sum(durations, Fraction(0)))
    t = np.arange(round(end * SAMPLE_RATE)) / SAMPLE_RATE
    audio = (0.4 * np.sin(2 * np.pi * 330.0 * t)).astype(np.float32)
    frames = (pattern_frame(k, WIDTH, HEIGHT, seed=1) for k in range(n))
    write_av_clip(dest, frames, fps=n / end, audio=audio, pts_s=pts)


def _tmp_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{dest.suffix}")


def _atomic_bytes(dest: Path, data: bytes) -> None:
    tmp = _tmp_path(dest)
    try:
        tmp.write_bytes(data)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_copy(src: Path, dest: Path) -> None:
    tmp = _tmp_path(dest)
    try:
        shutil.copyfile(src, tmp)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
