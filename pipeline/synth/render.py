"""Render one synthetic clip of a class: frames from the visual attributes, audio from the audio attributes.

Per-clip variation (position, speed, phase, size, background, pixel and audio noise, slight pitch
jitter) comes from a per-clip random generator, so a class is learnable from either modality but not
from a single memorised template. ``variation`` scales every random perturbation (0 = templates only).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 70), "blue": (50, 90, 230), "yellow": (230, 210, 40)}
PITCH_HZ = {"low": 220.0, "mid": 440.0, "high": 880.0}
BEATS_HZ = {"steady": 0.0, "slow": 2.0, "fast": 5.0}


@dataclass(frozen=True)
class ClipParams:
    """The random draws of one clip; every field is derived from the clip's seed."""

    size: float  # shape half-size as a fraction of min(width, height)
    start: tuple[float, float]  # anchor position (fractions of width, height)
    speed: float  # motion cycles per second
    phase: float  # motion phase in radians
    colour_jitter: tuple[int, int, int]
    background: tuple[int, int, int]
    pixel_noise: float  # std of per-pixel gaussian noise (0-255 scale)
    pitch_factor: float  # multiplies the class pitch
    beat_phase: float  # seconds
    loudness: float
    audio_noise: float


def draw_params(rng: np.random.Generator, variation: float) -> ClipParams:
    v = variation
    return ClipParams(
        size=float(0.2 + 0.05 * v * rng.uniform(-1, 1)),
        start=(float(0.5 + 0.25 * v * rng.uniform(-1, 1)), float(0.5 + 0.25 * v * rng.uniform(-1, 1))),
        speed=float(0.6 * (1 + 0.4 * v * rng.uniform(-1, 1))),
        phase=float(2 * np.pi * v * rng.uniform()),
        colour_jitter=tuple(int(x) for x in np.round(25 * v * rng.uniform(-1, 1, 3))),
        background=tuple(int(x) for x in np.round(30 + 30 * v * rng.uniform(0, 1, 3))),
        pixel_noise=float(6.0 * v * rng.uniform(0.5, 1.5)),
        pitch_factor=float(2 ** (0.05 * v * rng.uniform(-1, 1))),  # about +-3.5 %
        beat_phase=float(v * rng.uniform(0, 0.5)),
        loudness=float(0.5 + 0.2 * v * rng.uniform(-1, 1)),
        audio_noise=float(0.03 * v * rng.uniform(0.5, 1.5)),
    )


def render_frames(
    attributes: dict[str, str],
    params: ClipParams,
    rng: np.random.Generator,
    *,
    n_frames: int,
    fps: float,
    width: int,
    height: int,
) -> Iterator[np.ndarray]:
    """Frames (H, W, 3) uint8 one at a time; ``rng`` supplies the pixel noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    colour = np.clip(np.array(COLOURS[attributes["colour"]]) + params.colour_jitter, 0, 255).astype(
        np.float32
    )
    base = np.empty((height, width, 3), np.float32)
    base[:] = params.background
    scale = min(width, height)
    for k in range(n_frames):
        t = k / fps
        cx, cy, r = _position(attributes["motion"], params, t)
        mask = _shape_mask(
            attributes["shape"], (xx - cx * width) / (r * scale), (yy - cy * height) / (r * scale)
        )
        frame = base.copy()
        frame[mask] = colour
        if params.pixel_noise > 0:
            frame += params.pixel_noise * rng.standard_normal(frame.shape, dtype=np.float32)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def _position(motion: str, p: ClipParams, t: float) -> tuple[float, float, float]:
    """Centre (fractions of the frame) and half-size at time ``t`` for each motion pattern."""
    w = 2 * np.pi * p.speed * t + p.phase
    x0, y0 = p.start
    if motion == "bouncing":
        return x0, 0.8 - 0.6 * abs(np.sin(w)), p.size
    if motion == "circling":
        return 0.5 + 0.28 * np.cos(w), 0.5 + 0.28 * np.sin(w), p.size
    if motion == "sliding":
        return 0.2 + 0.6 * (0.5 + 0.5 * np.sin(w)), y0, p.size
    if motion == "pulsing":
        return x0, y0, p.size * (1.0 + 0.35 * np.sin(2 * w))
    raise ValueError(f"unknown motion {motion!r}")


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Pixels inside a unit-size shape, given offsets from its centre in units of its half-size."""
    if shape == "circle":
        return dx * dx + dy * dy <= 1.0
    if shape == "square":
        return (np.abs(dx) <= 0.85) & (np.abs(dy) <= 0.85)
    if shape == "triangle":
        return (dy <= 0.9) & (np.abs(dx) <= (dy + 1.0) * 0.55)
    if shape == "cross":
        return ((np.abs(dx) <= 0.3) & (np.abs(dy) <= 1.0)) | ((np.abs(dy) <= 0.3) & (np.abs(dx) <= 1.0))
    raise ValueError(f"unknown shape {shape!r}")


def render_audio(
    attributes: dict[str, str],
    params: ClipParams,
    rng: np.random.Generator,
    *,
    seconds: float,
    sample_rate: int,
) -> np.ndarray:
    """Mono float32 in [-1, 1]: a tone of the class's pitch and timbre, gated by its rhythm, plus noise."""
    t = np.arange(round(seconds * sample_rate), dtype=np.float64) / sample_rate
    f0 = PITCH_HZ[attributes["pitch"]] * params.pitch_factor
    tone = _timbre(attributes["timbre"], f0, t, sample_rate, params)
    tone *= _rhythm(attributes["rhythm"], t, params)
    peak = float(np.max(np.abs(tone))) or 1.0
    signal = params.loudness * tone / peak
    if params.audio_noise > 0:
        signal += rng.normal(0.0, params.audio_noise, t.shape)
    return np.clip(signal, -1.0, 1.0).astype(np.float32)


def _timbre(timbre: str, f0: float, t: np.ndarray, sample_rate: int, p: ClipParams) -> np.ndarray:
    nyquist = sample_rate / 2
    if timbre == "flute":  # nearly pure with a weak octave
        return np.sin(2 * np.pi * f0 * t) + 0.15 * np.sin(4 * np.pi * f0 * t)
    if timbre == "reed":  # odd harmonics, clarinet-like
        return sum(np.sin(2 * np.pi * n * f0 * t) / n for n in (1, 3, 5, 7) if n * f0 < nyquist)
    if timbre == "buzz":  # all harmonics, sawtooth-like
        return sum(np.sin(2 * np.pi * n * f0 * t) / n for n in range(1, 9) if n * f0 < nyquist)
    if timbre == "bell":  # inharmonic partials that decay from every note onset
        since = (t - p.beat_phase) % 0.5
        partials = sum(a * np.sin(2 * np.pi * r * f0 * t) for r, a in ((1.0, 1.0), (2.76, 0.5), (5.4, 0.25)))
        return partials * np.exp(-6.0 * since)
    raise ValueError(f"unknown timbre {timbre!r}")


def _rhythm(rhythm: str, t: np.ndarray, p: ClipParams) -> np.ndarray:
    beats = BEATS_HZ[rhythm]
    if beats == 0:
        return 1.0 + 0.1 * np.sin(2 * np.pi * 5.5 * t)  # light tremolo
    cycle = ((t - p.beat_phase) * beats) % 1.0
    return np.where(cycle < 0.55, np.sin(np.pi * cycle / 0.55), 0.0)
