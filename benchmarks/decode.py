"""Decoding speed: each backend and sampling mode against the raw decode limit measured in the same run.

The limit is PyAV decoding every packet with no colour conversion (the faster of its SLICE and AUTO
threading). Every mode is timed best-of-N, interleaved, on the two sample videos (when the shared data is
present) and on a 720p synthetic clip. Also measured: PyAV thread types, keyframe seeks for sparse
sampling, the guarded child's transports (shared-memory ring vs pipe), its start methods, and how much
of the decoding the guarded child hides behind the consumer's work.
Run: ``.venv/bin/python -m benchmarks.decode [--repeats N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import av
import numpy as np

from benchmarks.report import SummaryRow, command_line, markdown_table, write_section
from pipeline.decode import FrameChunk, iter_frames, open_guarded, rgb
from pipeline.decode.backends.decord_backend import DecordBackend
from pipeline.decode.backends.pyav_backend import DEFAULT_THREAD_TYPE, PyAVBackend, default_convert_workers
from pipeline.decode.sampling import plan_samples
from pipeline.decode.scan import scan_video
from pipeline.decode.transport import DEFAULT_TRANSPORT
from pipeline.synth.media import make_test_clip

SHARED = Path(os.environ.get("AVZSL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
COMMAND = ".venv/bin/python -m benchmarks.decode"
FRAME_X2 = PyAVBackend(thread_type="FRAME", thread_count=2, convert_workers=0)
SINGLE = PyAVBackend(thread_count=1)  # what the extraction runner uses: one decoder per core
STREAMS_AT_ONCE = 2  # one decoder per core on the 2-core reference machine


def best_time(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Best wall time of ``repeats`` runs (the machine is shared: the minimum is the least disturbed)."""
    times, count = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        times.append(time.perf_counter() - start)
    return min(times), count


def process_cpu_s() -> float:
    """CPU seconds of this process, all threads: robust to other load, unlike wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raw_decode(path: Path, thread_type: str) -> int:
    """The limit: decode every packet, no colour conversion, no copies."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        return sum(1 for _ in container.decode(stream))


def must_decode(path: Path, fps: float) -> str:
    """Frames any exact decoder must decode to sample ``fps``: each target's frame and those back to its keyframe."""
    with av.open(str(path)) as container:
        scan = scan_video(container, container.streams.video[0])
    plan = plan_samples(scan.pts_s, scan.end_s, fps=fps)
    keys = np.searchsorted(scan.pts, scan.keyframe_pts)  # keyframes' presentation-order indices
    needed, covered = 0, -1  # frames counted so far, and the last index already counted
    for index in np.unique(plan.indices).tolist():
        key = int(keys[max(int(np.searchsorted(keys, index, side="right")) - 1, 0)]) if keys.size else 0
        needed += index - max(key, covered + 1) + 1
        covered = index
    return f"{needed} of {scan.pts.size}"


def frames_with(path: Path, backend: object, fps: float | None) -> int:
    return sum(len(chunk) for chunk in iter_frames(path, fps=fps, backend=backend))


def pyav_reformat_frames(path: Path) -> int:
    """The single-threaded decode with PyAV's own RGB conversion (a new frame per call, then a copy)
    instead of the direct conversion into the chunk: what :mod:`pipeline.decode.rgb` saves."""
    direct, rgb.RGBConverter.write = rgb.RGBConverter.write, _write_with_pyav
    try:
        return frames_with(path, SINGLE, None)
    finally:
        rgb.RGBConverter.write = direct


def _write_with_pyav(converter: rgb.RGBConverter, frame: av.VideoFrame, out: np.ndarray) -> None:
    out[...] = converter.pyav_rgb(frame)


def guarded_frames(path: Path, fps: float | None, transport: str, work_s: float = 0.0) -> int:
    with open_guarded(path, fps=fps, timeout_s=120, transport=transport) as decode:
        return consume(decode.frames(), work_s)


def consume(chunks: Iterable[FrameChunk], work_s: float) -> int:
    """Count frames, sleeping ``work_s`` per chunk to stand in for model inference (which frees the GIL)."""
    count = 0
    for chunk in chunks:
        count += len(chunk)
        if work_s:
            time.sleep(work_s)
    return count


def overlap_rows(name: str, path: Path, repeats: int) -> list[list[object]]:
    """Decode + simulated inference per chunk: in-process (serial) vs guarded child (overlapped)."""
    decode_s, _ = best_time(lambda: frames_with(path, PyAVBackend(), None), repeats)
    chunks = sum(1 for _ in iter_frames(path))
    work_s = decode_s / chunks  # inference as slow as decoding: the case where overlap matters most
    serial, _ = best_time(lambda: consume(iter_frames(path), work_s), repeats)
    overlapped, _ = best_time(lambda: guarded_frames(path, None, DEFAULT_TRANSPORT, work_s), repeats)
    return [
        [
            name,
            round(decode_s * 1000),
            round(serial * 1000),
            round(overlapped * 1000),
            round(serial / overlapped, 2),
        ]
    ]


def video_rows(name: str, path: Path, repeats: int) -> tuple[list[list[object]], list[list[object]]]:
    modes: dict[str, Callable[[], int]] = {
        "raw SLICE (no RGB)": lambda: raw_decode(path, "SLICE"),
        "raw AUTO (no RGB)": lambda: raw_decode(path, "AUTO"),
        "pyav every frame": lambda: frames_with(path, PyAVBackend(), None),
        "pyav every frame, no converter threads": lambda: frames_with(
            path, PyAVBackend(convert_workers=0), None
        ),
        "pyav every frame, FRAME x2 threads": lambda: frames_with(path, FRAME_X2, None),
        "pyav every frame, SLICE threads": lambda: frames_with(path, PyAVBackend(thread_type="SLICE"), None),
        "pyav every frame, 1 thread": lambda: frames_with(path, SINGLE, None),
        "pyav every frame, 1 thread, PyAV's reformat": lambda: pyav_reformat_frames(path),
        "decord every frame": lambda: frames_with(path, DecordBackend(), None),
        "guarded pyav every frame, shm ring": lambda: guarded_frames(path, None, "shm"),
        "guarded pyav every frame, pipe": lambda: guarded_frames(path, None, "pipe"),
        "pyav 25 fps": lambda: frames_with(path, PyAVBackend(), 25.0),
        "decord 25 fps": lambda: frames_with(path, DecordBackend(), 25.0),
        "pyav 1 fps (keyframe seeks)": lambda: frames_with(path, PyAVBackend(), 1.0),
        "pyav 1 fps, no seeks": lambda: frames_with(path, PyAVBackend(seek=False), 1.0),
        "decord 1 fps": lambda: frames_with(path, DecordBackend(), 1.0),
    }
    results = {label: [] for label in modes}
    cpu = {label: [] for label in modes}
    counts = {}
    for _ in range(repeats):  # interleave so that load spikes hit every mode alike
        for label, fn in modes.items():
            cpu_start = process_cpu_s()
            seconds, counts[label] = best_time(fn, 1)
            cpu[label].append(process_cpu_s() - cpu_start)
            results[label].append(seconds)
    best = {label: min(times) for label, times in results.items()}
    best_cpu = {label: min(times) for label, times in cpu.items()}
    limit_cpu = best_cpu["raw SLICE (no RGB)"]
    limit = min(best["raw SLICE (no RGB)"], best["raw AUTO (no RGB)"])
    limit_fps = counts["raw SLICE (no RGB)"] / limit
    rows = []
    for label in modes:
        fps_out = counts[label] / best[label]
        rows.append(
            [
                name,
                label,
                counts[label],
                round(best[label] * 1000, 1),
                round(fps_out, 1),
                round(fps_out / limit_fps, 2),
                round(limit / best[label], 2),
                "-" if label.startswith("guarded") else round(best_cpu[label] * 1000, 1),
                "-" if label.startswith("guarded") else round(limit_cpu / best_cpu[label], 2),
            ]
        )
    limit_times = [
        min(pair) for pair in zip(results["raw SLICE (no RGB)"], results["raw AUTO (no RGB)"], strict=True)
    ]
    every, single = results["pyav every frame"], results["pyav every frame, 1 thread"]
    decord_every, single_cpu = results["decord every frame"], best_cpu["pyav every frame, 1 thread"]
    summary = [
        name,
        round(limit_fps, 1),
        paired(limit_times, every),
        paired(limit_times, single),
        round(limit_cpu / single_cpu, 2),
        round(best_cpu["pyav every frame, 1 thread, PyAV's reformat"] / single_cpu, 2),
        paired(limit_times, decord_every),
        paired(every, results["pyav 1 fps (keyframe seeks)"]),
        round(best_cpu["pyav every frame"] / best_cpu["pyav 1 fps (keyframe seeks)"], 2),
        must_decode(path, 1.0),
        paired(decord_every, results["decord 1 fps"]),
        paired(results["guarded pyav every frame, shm ring"], every),
        paired(results["guarded pyav every frame, pipe"], every),
    ]
    return rows, [summary]


def paired(numerator: list[float], denominator: list[float]) -> float:
    """Median over the rounds of one mode's time over another's in the same round: the two ran seconds
    apart, so load that comes and goes on a shared machine mostly cancels (a best-of ratio pairs two
    different moments)."""
    return round(statistics.median(a / b for a, b in zip(numerator, denominator, strict=True)), 2)


def _decode_repeatedly(args: tuple[str, int, int]) -> float:
    """In a worker process: decode every frame of a video ``times`` times; the wall time."""
    path, thread_count, times = args
    backend = PyAVBackend(thread_count=thread_count)
    start = time.perf_counter()
    for _ in range(times):
        frames_with(Path(path), backend, None)
    return time.perf_counter() - start


def parallel_rows(videos: dict[str, Path], repeats: int) -> list[list[object]]:
    """Streams decoded at once, one per process: the default threading against single-threaded decoders
    (the extraction runner's setting). Throughput, not latency, is what matters there."""
    rows = []
    with mp.get_context("forkserver").Pool(STREAMS_AT_ONCE) as pool:
        for name, path in videos.items():
            best = {}
            for _ in range(repeats):
                for label, threads in (("default", 0), ("1 thread", 1)):
                    start = time.perf_counter()
                    pool.map(_decode_repeatedly, [(str(path), threads, 3)] * STREAMS_AT_ONCE)
                    best[label] = min(best.get(label, float("inf")), time.perf_counter() - start)
            rows.append(
                [
                    name,
                    round(best["default"] * 1000),
                    round(best["1 thread"] * 1000),
                    round(best["default"] / best["1 thread"], 2),
                ]
            )
    return rows


def start_method_rows(path: Path, repeats: int) -> list[list[object]]:
    """Time from open_guarded to the end of a one-frame decode: fresh children per start method (the
    forkserver is started by the first call), and a child reused from the pool (the default)."""
    cases = [("forkserver", False), ("spawn", False), ("forkserver", True)]
    rows = []
    for method, reuse in cases:
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            with open_guarded(
                path, chunk_frames=1, end_s=0.01, timeout_s=60, start_method=method, reuse=reuse
            ) as decode:
                consume(decode.frames(), 0.0)
            times.append(time.perf_counter() - start)
        label = f"{method}, {'reused child' if reuse else 'fresh child'}"
        rows.append([label, round(times[0] * 1000, 1), round(statistics.median(times[1:]) * 1000, 1)])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best is reported")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the 720p synthetic clip")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        videos = {}
        for sample in ("v_GGSY1Qvo990", "v_ZNVhz7ctTq0"):
            if (SHARED / "samples" / f"{sample}.mp4").is_file():
                videos[f"{sample} (sample)"] = SHARED / "samples" / f"{sample}.mp4"
        if not videos:
            print(
                f"shared samples not found under {SHARED}; benchmarking the synthetic clip only",
                file=sys.stderr,
            )
        videos["synthetic 1280x720 25 fps"] = make_test_clip(
            Path(tmp) / "clip720.mp4", seconds=args.seconds, width=1280, height=720, with_audio=False
        )
        rows, summary = [], []
        for name, path in videos.items():
            print(f"benchmarking {name}", file=sys.stderr, flush=True)
            detail, head = video_rows(name, path, args.repeats)
            rows += detail
            summary += head
        parallel = parallel_rows(videos, args.repeats)
        starts = start_method_rows(videos["synthetic 1280x720 25 fps"], args.repeats)
        overlap = overlap_rows("synthetic 1280x720 25 fps", videos["synthetic 1280x720 25 fps"], args.repeats)
    body = "\n\n".join(
        [
            "Limit = PyAV decoding every packet without colour conversion (best of SLICE/AUTO threads), same run. "
            f"`pyav` = the default `PyAVBackend()`, for one stream: thread_type={DEFAULT_THREAD_TYPE}, and "
            "RGB conversion on converter threads from 4 cores up (one per 640x360 of frame, at least 2, at most a "
            "quarter of the cores; FFmpeg's decoding threads give up as many cores; here "
            f"{default_convert_workers(0, 320 * 240)} for 320x240, {default_convert_workers(0, 1280 * 720)} for "
            "720p). `1 thread` = "
            "`PyAVBackend(thread_count=1)`, what extraction jobs use (one decoder per core); `PyAV's reformat` = "
            "the same without the direct RGB conversion into the chunk (pipeline/decode/rgb.py). Targets: every "
            "frame to RGB >= 0.8x the limit; 1 fps faster than every frame. `frames 1 fps must decode` = each sampled frame and the frames back "
            "to its keyframe: the least any bit-exact decoder must decode (with no colour conversion saved "
            "beyond the sampled frames, this bounds the 1 fps speed-up). Time ratios in this table are medians over "
            f"the {args.repeats} rounds of the ratio within a round (each round runs every mode once, back to back), "
            "so load that comes and goes cancels; CPU ratios are of the least CPU time; `limit frames/s` is the "
            "best round's.",
            markdown_table(
                [
                    "video",
                    "limit frames/s",
                    "pyav every/limit",
                    "pyav 1 thread every/limit",
                    "pyav 1 thread every/limit (CPU)",
                    "direct RGB CPU saving (1 thread, reformat/direct)",
                    "decord every/limit",
                    "pyav 1fps speed-up vs every",
                    "pyav 1fps speed-up vs every (CPU)",
                    "frames 1 fps must decode",
                    "decord 1fps speed-up vs every",
                    "guarded shm / in-process time",
                    "guarded pipe / in-process time",
                ],
                summary,
            ),
            "All modes (time = best of the interleaved repeats; `x limit fps` = output frames/s over the limit's "
            "frames/s; `x limit time` = the limit's wall time over this mode's, >1 means faster than decoding "
            "everything raw; `CPU ms` = this process's CPU time over all its threads, which other load on a shared "
            "machine barely inflates; `x limit CPU` = raw SLICE decoding's CPU time over this mode's; the guarded "
            "child's CPU time is not counted, so those rows have none):",
            markdown_table(
                [
                    "video",
                    "mode",
                    "frames out",
                    "ms",
                    "frames/s",
                    "x limit fps",
                    "x limit time",
                    "CPU ms",
                    "x limit CPU",
                ],
                rows,
            ),
            f"{STREAMS_AT_ONCE} streams at once, one process each, every frame decoded 3 times per process "
            "(wall time, best of the repeats): the default threading against single-threaded decoders. "
            "Above 1 means single-threaded decoders get more done when every core already has a stream.",
            markdown_table(["video", "default ms", "1 thread ms", "default / 1 thread"], parallel),
            "Guarded child start (open_guarded to the end of a one-frame decode; the first forkserver call also "
            "starts the server; the default reuses a child that finished its last video cleanly):",
            markdown_table(["start method", "first call ms", "median later ms"], starts),
            "Overlap: every frame decoded while the consumer 'infers' (sleeps) as long per chunk as decoding took, "
            f"guarded with the default `{DEFAULT_TRANSPORT}` transport:",
            markdown_table(
                [
                    "video",
                    "decode only ms",
                    "in-process decode+work ms",
                    "guarded decode+work ms",
                    "speed-up",
                ],
                overlap,
            ),
        ]
    )
    print(body)
    write_section("decode", command_line(COMMAND, argv), body, summary=summary_rows(summary))


def summary_rows(table: list[list[object]]) -> list[SummaryRow]:
    """The targets of the per-video table: every frame to RGB >= 0.8x raw decoding, 1 fps faster than every
    frame (columns: video, limit fps, pyav every/limit, ..., pyav 1 fps speed-up at index 7)."""
    rows = []
    for line in table:
        video, every, one_fps = str(line[0]), float(line[2]), float(line[7])
        rows.append(
            SummaryRow(
                f"decode every frame to RGB / raw decode, {video}", ">= 0.8", f"{every:.2f}", every >= 0.8
            )
        )
        rows.append(
            SummaryRow(
                f"1 fps sampling speed-up over every frame, {video}", "> 1", f"{one_fps:.2f}", one_fps > 1
            )
        )
    return rows


if __name__ == "__main__":
    main()
