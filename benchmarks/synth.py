"""Synthetic media and manifests: where generation time goes and what parallelism and parquet buy.

Measured side by side in one run: dataset generation with 1 vs N worker processes (same bytes either
way), rendering alone vs rendering + encoding, 720p test-clip encoding against real time, and reading a
manifest from parquet vs rebuilding it from the AV-GZSL split CSVs (when the shared data is present).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import SummaryRow, markdown_table, write_section
from pipeline.manifest import VideoManifest
from pipeline.synth.classes import design_classes
from pipeline.synth.dataset import SynthConfig, generate_dataset
from pipeline.synth.media import make_test_clip
from pipeline.synth.render import draw_params, render_audio, render_frames

COMMAND = ".venv/bin/python -m benchmarks.synth"
SHARED_DATA = Path(
    os.environ.get("AVZSL_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)
SHARED_AVGZSL = SHARED_DATA / "avgzsl"


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted((root / "videos").rglob("*.mp4")):
        h.update(path.read_bytes())
    return h.hexdigest()


def _render_only(config: SynthConfig) -> None:
    """Everything generate_dataset does per clip except encoding and writing."""
    for c in design_classes(config.classes, seed=config.seed):
        for k in range(config.clips_per_class):
            rng = np.random.default_rng([config.seed, c.class_id, k])
            params = draw_params(rng, config.variation)
            video_rng, audio_rng = rng.spawn(2)
            n = round(config.seconds * config.fps)
            for _ in render_frames(
                c.attributes,
                params,
                video_rng,
                n_frames=n,
                fps=config.fps,
                width=config.width,
                height=config.height,
            ):
                pass
            render_audio(
                c.attributes, params, audio_rng, seconds=config.seconds, sample_rate=config.sample_rate
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.synth", description=__doc__)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--clips-per-class", type=int, default=12)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--hd-seconds", type=float, default=4.0, help="length of the 1280x720 test clip")
    args = parser.parse_args(argv)
    config = SynthConfig(classes=args.classes, clips_per_class=args.clips_per_class)
    n_clips = config.classes * config.clips_per_class
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="avzsl-bench-synth-") as tmp:
        tmp_path = Path(tmp)
        t1, _ = _timed(lambda: generate_dataset(config, tmp_path / "w1"))
        tn, _ = _timed(
            lambda: generate_dataset(config.model_copy(update={"workers": args.workers}), tmp_path / "wn")
        )
        same = _digest(tmp_path / "w1") == _digest(tmp_path / "wn")
        rows.append(
            [
                f"dataset {config.classes}x{config.clips_per_class} clips, {config.seconds:g} s, 64x64",
                f"{n_clips / t1:.1f} clips/s (1 worker)",
                f"{n_clips / tn:.1f} clips/s ({args.workers} workers)",
                f"speed-up x{t1 / tn:.2f}; identical bytes: {same}",
            ]
        )
        tr, _ = _timed(lambda: _render_only(config))
        rows.append(
            [
                "render only vs render + encode (1 worker)",
                f"{n_clips / tr:.1f} clips/s",
                f"{n_clips / t1:.1f} clips/s",
                f"encoding + writing = {100 * (1 - tr / t1):.0f} % of generation time",
            ]
        )
        th, _ = _timed(
            lambda: make_test_clip(tmp_path / "hd.mp4", seconds=args.hd_seconds, width=1280, height=720)
        )
        rows.append(
            [
                f"make_test_clip 1280x720 25 fps, {args.hd_seconds:g} s + audio",
                f"{args.hd_seconds * 25 / th:.1f} frames/s",
                f"{(tmp_path / 'hd.mp4').stat().st_size / 1e6:.2f} MB",
                f"x{args.hd_seconds / th:.2f} real time",
            ]
        )
        if (SHARED_AVGZSL / "VGGSound" / "class-split").is_dir():
            tb, manifest = _timed(lambda: VideoManifest.from_avgzsl(SHARED_AVGZSL, "VGGSound", "cls"))
            manifest.to_parquet(tmp_path / "vgg.parquet")
            tp, _ = _timed(lambda: VideoManifest.read_parquet(tmp_path / "vgg.parquet"))
            rows.append(
                [
                    f"VGGSound cls manifest ({len(manifest)} videos)",
                    f"split CSVs {tb:.2f} s",
                    f"parquet {tp:.2f} s",
                    f"parquet x{tb / tp:.1f} faster",
                ]
            )
    table = markdown_table(["what", "A", "B", "ratio"], rows)
    print(table)
    summary = [
        SummaryRow(
            "synthetic dataset: same bytes for 1 and N workers (one machine)", "identical", str(same), same
        ),
        SummaryRow(f"synthetic dataset speed-up, {args.workers} workers over 1", "-", f"{t1 / tn:.2f}x"),
    ]
    write_section("synth", COMMAND, table, summary=summary)


if __name__ == "__main__":
    main()
