"""resampy's default resampler (``kaiser_best``), computed as a polyphase matrix product.

Benchmark mode resamples exactly as torchvggish did: ``resampy.resample(x, sr_orig, sr_new)``
(docs/benchmark-mode.md). resampy computes output sample t at input time t * sr_orig / sr_new, as a sum over
the input samples around it weighted by a tabulated windowed sinc (read by linear interpolation), one output
and one tap at a time: 160-210 CPU-ms for 10 s of 44.1 kHz audio, 30x the AAC decoding.

The weights depend only on where the output time falls between two input samples. With sr_new / sr_orig =
P / Q in lowest terms that position repeats every P outputs, so the weights of each of the P phases are
computed once, with resampy's own arithmetic, into a (P, taps) matrix, and the outputs become one matrix
product of that matrix with strided windows of the input: 11 CPU-ms for the same 10 s. Two things keep it
equal to resampy:

- resampy finds an output's input sample by truncating the float t * (sr_orig / sr_new); where that lands one
  sample short of the exact value, its weights are those of the next phase over, computed from that sample.
  Those outputs are found the same way and redone with the weights resampy uses for them.
- Equal up to float64 rounding: the sum runs in another order, and each phase's weights come from the exact
  phase instead of resampy's float time, which drifts by ~1e-15 per output (relative differences below 1e-9,
  well under the float32 the result is stored in).

Rate pairs whose phase table would be large (P in the thousands, e.g. 16 kHz from 44,101 Hz) go to resampy
itself, as do sr_orig == sr_new (a copy). :func:`resample_like_resampy` is the one place that chooses.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

MAX_TABLE_ENTRIES = 1 << 22  # 32 MiB of float64 weights; larger tables go to resampy itself
GROUP_OUTPUTS = (
    128  # few phases (P = 1 for 48 -> 16 kHz): several periods per row keep the matrix product wide
)


def resample_like_resampy(x: np.ndarray, sr_orig: int, sr_new: int) -> np.ndarray:
    """``resampy.resample(x, sr_orig, sr_new)`` (filter ``kaiser_best``) of 1-D float64 ``x``, as float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected 1-D samples, got shape {x.shape}")
    table = phase_table(int(sr_orig), int(sr_new)) if sr_orig != sr_new else None
    if table is None:
        import resampy  # imported here: numba compiles it on first use, only rate pairs without a table pay

        return resampy.resample(x, sr_orig, sr_new)
    return table.apply(x)


@dataclass(frozen=True, eq=False)  # one table per rate pair (phase_table caches it): compared by identity
class PhaseTable:
    """Weights of each output phase: row p gives output k * P + p from inputs k * Q + first + j."""

    sr_orig: int
    sr_new: int
    weights: np.ndarray  # (P, taps) float64; P may span several periods of the reduced ratio
    period_in: int  # Q: input samples per period of P outputs
    first: int  # input offset of column 0, relative to the period's first input (<= 0)
    short_weights: np.ndarray  # an output whose input sample resampy finds one short: x[n - left ...]
    short_left: int  # taps of ``short_weights`` before the exact input sample n

    def output_length(self, n: int) -> int:
        """resampy's output length: int(n * sr_new / sr_orig), evaluated in its order."""
        return int(n * float(self.sr_new) / float(self.sr_orig))

    def periods(self, n_out: int) -> int:
        """Rows of the matrix product for ``n_out`` outputs."""
        return -(-n_out // self.weights.shape[0])

    def padded_length(self, n: int, n_out: int) -> int:
        """Length of the zero-padded input: every tap of every row lies inside it."""
        return max((self.periods(n_out) - 1) * self.period_in + self.weights.shape[1], n - self.first)

    def short_outputs(self, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        """Outputs where resampy's float time truncates to the input sample before the exact one (only
        outputs at a whole input sample can: t * Q / P an integer), and the exact input sample of each."""
        g = gcd(self.sr_new, self.sr_orig)
        p, q = self.sr_new // g, self.sr_orig // g
        t = np.arange(0, n_out, p)
        exact = t // p * q
        short = (t * (1.0 / (float(self.sr_new) / self.sr_orig))).astype(np.int64) < exact
        return t[short], exact[short]

    def apply(self, x: np.ndarray) -> np.ndarray:
        n_out = self.checked_length(x.size)
        padded = np.zeros(self.padded_length(x.size, n_out))
        padded[-self.first : -self.first + x.size] = x  # zeros outside the signal: resampy skips those taps
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.weights.shape[1])[:: self.period_in]
        y = (windows[: self.periods(n_out)] @ self.weights.T).reshape(-1)[:n_out]
        outputs, exact = self.short_outputs(n_out)
        if outputs.size:
            taps = self.short_weights.size
            padded = np.concatenate([np.zeros(self.short_left), x, np.zeros(taps)])
            y[outputs] = (
                padded[exact[:, None] + np.arange(taps)] @ self.short_weights
            )  # x[n - short_left + j]
        return y

    def checked_length(self, n: int) -> int:
        """:meth:`output_length`, refusing inputs too short for one output (as resampy does)."""
        n_out = self.output_length(n)
        if n_out < 1:
            raise ValueError(f"{n} samples are too few to resample from {self.sr_orig} to {self.sr_new} Hz")
        return n_out


@functools.cache
def phase_table(sr_orig: int, sr_new: int) -> PhaseTable | None:
    """The phase weights for this rate pair, or None when they would exceed ``MAX_TABLE_ENTRIES``."""
    if sr_orig <= 0 or sr_new <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_orig} and {sr_new}")
    g = gcd(sr_new, sr_orig)
    p, q = sr_new // g, sr_orig // g
    group = max(1, GROUP_OUTPUTS // p)
    filt = _Filter.kaiser_best(sr_orig, sr_new)
    if p * group * (q * group + 2 * filt.max_taps()) > MAX_TABLE_ENTRIES:
        return None
    rows = []
    for phase in range(p * group):
        base = phase * q // p  # the input sample at or before this output's time
        rows.append((base, *filt.wings(filt.scale * ((phase * q % p) / p))))
    first = min(base - left.size + 1 for base, left, _ in rows)
    last = max(base + right.size for base, _, right in rows)
    weights = np.zeros((p * group, last - first + 1))
    for phase, (base, left, right) in enumerate(rows):
        weights[phase, base - first - np.arange(left.size)] = left  # x[n - i] for i = 0, 1, ...
        weights[phase, base + 1 - first + np.arange(right.size)] = right  # x[n + 1 + k] for k = 0, 1, ...
    # One sample short, the output lies (up to rounding) a whole input sample past the one it uses.
    left, right = filt.wings(filt.scale)
    short = np.concatenate([left[::-1], right])  # x[n - left.size] ... x[n - 1], then x[n] ...
    return PhaseTable(sr_orig, sr_new, weights, q * group, first, short, left.size)


@dataclass(frozen=True)
class _Filter:
    """resampy's interpolation table and the per-output arithmetic of its ``_resample_loop``."""

    window: np.ndarray  # right wing of the windowed sinc, scaled by sr_new / sr_orig when downsampling
    delta: np.ndarray  # window[i + 1] - window[i] (0 after the last entry)
    per_crossing: int  # table entries per zero crossing ("precision" in resampy)
    scale: float

    @classmethod
    def kaiser_best(cls, sr_orig: int, sr_new: int) -> _Filter:
        window, per_crossing = _kaiser_best()
        ratio = float(sr_new) / sr_orig
        if ratio < 1:
            window = ratio * window
        return cls(window, np.diff(window, append=window[-1]), per_crossing, min(1.0, ratio))

    @property
    def step(self) -> int:
        return int(self.scale * self.per_crossing)  # resampy truncates the table stride

    def max_taps(self) -> int:
        return self.window.size // self.step + 1

    def wings(self, frac: float) -> tuple[np.ndarray, np.ndarray]:
        """Weights of x[n - i] (left) and x[n + 1 + k] (right) for an output ``frac`` past input n."""
        return self._wing(frac), self._wing(self.scale - frac)

    def _wing(self, frac: float) -> np.ndarray:
        index_frac = frac * self.per_crossing
        offset = int(index_frac)
        eta = index_frac - offset
        at = offset + np.arange((self.window.size - offset) // self.step) * self.step
        return self.window[at] + eta * self.delta[at]


@functools.cache
def _kaiser_best() -> tuple[np.ndarray, int]:
    """resampy's default filter, read from the table it ships (importing resampy would load numba)."""
    spec = importlib.util.find_spec("resampy")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "resampy is not installed; benchmark mode's audio path needs it (pip install resampy)"
        )
    with np.load(Path(spec.submodule_search_locations[0]) / "data" / "kaiser_best.npz") as data:
        return np.asarray(data["half_window"], dtype=np.float64), int(data["precision"])
