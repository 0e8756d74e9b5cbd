"""CPU seconds per video that extraction spends besides the network, against raw decoding of the same stream.

For each extractor (issue 19's setting): pipeline-only = ``extract_videos`` with the network swapped for
zeros, so what is left is decoding, resampling, windowing, preprocessing and the hand-offs between them; its CPU time
is summed over the whole process tree (the decode children and the forkserver included) and divided by the
videos. raw = PyAV decoding every packet of the stream the extractor reads (video or audio), one thread, no
colour conversion or resampling: the least any extraction must spend. Target: pipeline-only <= 2x raw.

Side by side, in the calling process (``decode_isolation="none"``: a child process cannot be patched), the
same pipeline with the plain reference paths swapped in (:func:`plain_reference_paths`): frame-by-frame audio
conversion, swresample's own s16 conversion, resampy itself and C3D's step-by-step preprocessing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import psutil
import torch
from av.stream import Discard

from benchmarks.report import SummaryRow, markdown_table
from extractors import c3d
from extractors.base import Extractor
from extractors.registry import build_extractor
from extractors.runner import VideoJob, extract_videos
from pipeline.decode import audio, audio_blocks, resample
from pipeline.synth.media import make_test_clip

# The settings: C3D and VGGish as the published features were made, ViT at 2 fps, AST clean.
COST_SETUPS: dict[str, dict] = {
    "c3d": {"mode": "benchmark"},
    "vit": {"mode": "clean", "fps": 2.0},
    "vggish": {"mode": "benchmark"},
    "ast": {"mode": "clean"},
}
CLIP = {"seconds": 10.0, "width": 320, "height": 240, "fps": 25.0, "sample_rate": 44100}


def cost_clips(folder: Path, count: int) -> list[Path]:
    """10 s 320x240 25 fps clips with 44.1 kHz AAC."""
    return [make_test_clip(folder / f"clip{i}.mp4", seed=i, **CLIP) for i in range(count)]


def tree_cpu_seconds() -> float:
    """CPU time of this process and every descendant so far (children that ended count in their parent's
    ``children_*`` times once reaped, so a decode child that exits is not lost)."""
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def raw_decode(path: Path, modality: str) -> None:
    """Decode every packet of the stream an extractor of ``modality`` reads; nothing else."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0] if modality == "visual" else container.streams.audio[0]
        for other in container.streams:
            if other.index != stream.index:
                other.discard = Discard.all
        stream.codec_context.thread_count = 1
        for packet in container.demux(stream):
            packet.decode()


def cpu_per_video(run, videos: int, repeats: int, clock=tree_cpu_seconds) -> float:
    """Least CPU seconds per video over ``repeats`` runs of ``run()`` (after one warm-up run)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        run()
        best = min(best, clock() - start)
    return best / videos


@contextlib.contextmanager
def zeros_network(extractor: Extractor) -> Iterator[None]:
    dim = extractor.spec.output_dim
    extractor.forward = lambda inputs: torch.zeros(len(inputs), dim, device=inputs.device)
    try:
        yield
    finally:
        del extractor.forward


@contextlib.contextmanager
def plain_reference_paths(extractor: Extractor) -> Iterator[None]:
    """Swap in the plain versions the fast paths are tested against (in this process only)."""
    saved = (audio_blocks.BLOCK_SAMPLES, audio.FLOAT_FORMATS, resample.MAX_TABLE_ENTRIES)
    audio_blocks.BLOCK_SAMPLES = 1  # every decoded frame converted on its own
    audio.FLOAT_FORMATS = ()  # swresample's own float -> s16
    resample.MAX_TABLE_ENTRIES = 0  # resampy itself
    resample.phase_table.cache_clear()
    if isinstance(extractor, c3d.C3DExtractor):
        extractor.prepare = lambda windows: c3d.preprocess_reference(
            extractor.batch_to_device([w.data for w in windows]),
            [w.valid for w in windows],
            bgr=extractor.bgr,
            invert=extractor.invert,
            zero_pad=extractor.spec.mode == "benchmark",
        )
    try:
        yield
    finally:
        audio_blocks.BLOCK_SAMPLES, audio.FLOAT_FORMATS, resample.MAX_TABLE_ENTRIES = saved
        resample.phase_table.cache_clear()
        if "prepare" in vars(extractor):
            del extractor.prepare


@contextlib.contextmanager
def host_side_only(extractor: Extractor) -> Iterator[None]:
    """Leave on the CPU only what stays there when the models run on a GPU (in this process only).

    With a CUDA model device, ``prepare`` runs on the GPU after one host copy of the batch
    (``batch_to_device``), and benchmark-mode audio is resampled there (extractors/audio_resample.py); so the
    host copy is kept, the device work is skipped (the zeros network reads only the batch size), and the
    resampling is replaced by zeros of its output length.
    """
    saved = audio.resample_like_resampy
    audio.resample_like_resampy = lambda x, rate_in, rate_out: np.zeros(
        -(-len(x) * rate_out // rate_in), dtype=np.float64
    )

    def host_copy_only(windows):
        extractor.batch_to_device([w.data for w in windows], stack=False)
        return torch.empty(len(windows), 0)

    extractor.prepare = host_copy_only
    try:
        yield
    finally:
        audio.resample_like_resampy = saved
        del extractor.prepare


def measure(
    name: str, clips: list[Path], *, device: str, decode_device: str, batch_size: int, repeats: int
) -> dict[str, float]:
    extractor = build_extractor(name, weights="random", device=device, **COST_SETUPS[name])
    jobs = [VideoJob(p.name, str(p)) for p in clips]

    def pipeline(isolation: str):
        def run():
            results = list(
                extract_videos(
                    jobs,
                    [extractor],
                    batch_size=batch_size,
                    decode_isolation=isolation,
                    decode_device=decode_device,
                )
            )
            bad = [r for r in results if r.features is None]
            if bad:
                raise RuntimeError(f"{name}: extraction failed: {bad[0].status} {bad[0].reason}")

        return run

    n = len(clips)

    def raw() -> None:
        for path in clips:
            raw_decode(path, extractor.spec.modality)

    # raw decoding runs in this process alone: its own clock is exact (the process tree's ticks are 10 ms)
    row = {"raw": cpu_per_video(raw, n, repeats, clock=time.process_time)}
    with zeros_network(extractor):
        row["process"] = cpu_per_video(pipeline("process"), n, repeats)
        row["none"] = cpu_per_video(pipeline("none"), n, repeats)
        with plain_reference_paths(extractor):
            row["reference"] = cpu_per_video(pipeline("none"), n, repeats)
        if device == "cpu":
            with host_side_only(extractor):
                row["host"] = cpu_per_video(pipeline("none"), n, repeats)
    return row


def cost_section(
    extractors: list[str],
    folder: Path,
    samples: list[Path],
    *,
    videos: int,
    device: str,
    decode_device: str,
    batch_size: int,
    repeats: int,
) -> tuple[str, list[SummaryRow]]:
    """Measure every extractor on the 10 s clips and on the samples; the markdown table and summary rows."""
    sets = {f"{videos} x 10 s 320x240 25 fps, 44.1 kHz AAC": cost_clips(folder, videos)}
    if samples:
        sets["the 2 sample videos"] = samples
    rows, summary = [], []
    for name in extractors:
        for label, clips in sets.items():
            started = time.perf_counter()
            m = measure(
                name,
                clips,
                device=device,
                decode_device=decode_device,
                batch_size=batch_size,
                repeats=repeats,
            )
            ratio = m["process"] / m["raw"]
            host = m.get("host", float("nan"))
            rows.append(
                [
                    name,
                    label,
                    m["raw"],
                    m["process"],
                    ratio,
                    m["none"],
                    m["reference"],
                    m["reference"] / m["none"],
                    host,
                    host / m["raw"],
                ]
            )
            summary.append(
                SummaryRow(
                    f"{name} pipeline-only CPU / raw decode, {label}", "<= 2", f"{ratio:.2f}", ratio <= 2
                )
            )
            print(f"{name} on {label}: {m} ({time.perf_counter() - started:.0f} s)", flush=True)
    table = markdown_table(
        [
            "extractor",
            "videos",
            "raw decode CPU-s/video",
            "pipeline-only CPU-s/video",
            "pipeline / raw (target <= 2)",
            "in-process, fast paths",
            "in-process, plain reference paths",
            "reference / fast",
            "in-process, host side only",
            "host side / raw",
        ],
        rows,
    )
    return table, summary
