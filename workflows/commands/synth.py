"""``avzsl synth OUT_DIR``: write a synthetic audio-visual zero-shot dataset (or, with --faults, a fault corpus)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from pipeline.config import ConfigError
from pipeline.provenance import write_run_info
from workflows.cli import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic audio-visual zero-shot dataset (videos, manifest, classes, split)",
        description="Procedural classes (shape, colour, motion + pitch, timbre, rhythm); unseen classes are new "
        "combinations of seen attribute values. Deterministic for a seed.",
    )
    parser.add_argument("out_dir", type=Path, help="output folder (videos/, manifest.parquet, classes.csv)")
    parser.add_argument("--config", type=Path, help="SynthConfig YAML; the flags below override it")
    parser.add_argument("--classes", type=int, help="number of classes (default 12)")
    parser.add_argument("--clips-per-class", type=int, help="videos per class (default 12)")
    parser.add_argument("--seconds", type=float, help="clip duration (default 2.0)")
    parser.add_argument("--size", help="frame size WxH, even numbers (default 64x64)")
    parser.add_argument("--fps", type=float, help="frame rate (default 25)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, help="processes used to render and encode (default 1)")
    parser.add_argument(
        "--faults",
        action="store_true",
        help="write the fault corpus (ok, truncated, no_audio, no_video, random_bytes, ...) instead",
    )
    parser.add_argument("--source", type=Path, help="with --faults: derive the corpus from this real video")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.faults:
        from pipeline.synth.faults import make_fault_corpus

        try:
            paths = make_fault_corpus(args.out_dir, source=args.source)
        except FileNotFoundError as err:
            raise UsageError(str(err)) from None
        source = str(args.source) if args.source else None
        write_run_info(args.out_dir, {"fault_corpus": {"source": source}}, command="avzsl synth --faults")
        for kind, path in paths.items():
            print(f"{kind:14s} {path}")
        return 0
    if args.source is not None:
        raise UsageError("--source only applies with --faults")
    from pipeline.synth.dataset import SynthConfig, generate_dataset

    config = SynthConfig.from_yaml(args.config) if args.config else SynthConfig()
    overrides = {
        "classes": args.classes,
        "clips_per_class": args.clips_per_class,
        "seconds": args.seconds,
        "fps": args.fps,
        "seed": args.seed,
        "workers": args.workers,
    }
    if args.size:
        overrides["width"], overrides["height"] = _parse_size(args.size)
    data = config.to_dict() | {k: v for k, v in overrides.items() if v is not None}
    config = SynthConfig.from_dict(data, source="avzsl synth options")
    try:
        dataset = generate_dataset(config, args.out_dir)
    except ValueError as err:
        raise ConfigError(f"cannot build this dataset: {err}") from None
    print(dataset.manifest.summary().to_string(index=False))
    print(f"wrote {len(dataset.manifest)} videos of {len(dataset.classes)} classes to {dataset.root}")
    print(f"manifest: {dataset.manifest_path}  classes: {dataset.classes_path}")
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 64x64")
    return int(match[1]), int(match[2])
