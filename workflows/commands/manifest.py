"""``avzsl manifest build|show``: build a VideoManifest (parquet) from a folder, CSV, AV-GZSL split or paths."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.manifest import AVGZSL_DATASETS, AVGZSL_FEATURES, ManifestError, VideoManifest
from pipeline.provenance import write_run_info
from workflows.cli import UsageError

MAX_PROBLEMS_SHOWN = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("manifest", help="build or show a video manifest (parquet)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="build a manifest and write it as parquet")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-folder", type=Path, metavar="DIR", help="one sub-folder per class")
    source.add_argument("--from-csv", type=Path, metavar="CSV", help="columns path,label[,split][,video_id]")
    source.add_argument("--avgzsl", type=Path, metavar="ROOT", help="AV-GZSL benchmark split files")
    source.add_argument("--paths", type=Path, nargs="+", metavar="VIDEO", help="unlabelled videos to extract")
    build.add_argument("--root", type=Path, help="--from-csv/--paths: folder that relative paths and ids use")
    build.add_argument("--split", help="--from-folder: split name given to every video")
    build.add_argument("--dataset", choices=AVGZSL_DATASETS, default="UCF", help="--avgzsl: which benchmark")
    build.add_argument(
        "--features", choices=AVGZSL_FEATURES, default="main", help="--avgzsl: class split setting"
    )
    build.add_argument("--video-root", type=Path, help="--avgzsl: folder holding the benchmark's videos")
    build.add_argument("--out", type=Path, required=True, help="output parquet file")
    build.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when an error-level problem (e.g. a missing file) is found",
    )

    show = actions.add_parser("show", help="summary of a manifest: videos and classes per split, problems")
    show.add_argument("manifest", type=Path)
    show.add_argument("--rows", type=int, default=5, help="first rows to print (default 5)")
    show.add_argument("--check-files", action="store_true", help="also look for missing video files now")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _build(args) if args.action == "build" else _show(args)
    except ManifestError as err:
        raise UsageError(str(err)) from None


def _build(args: argparse.Namespace) -> int:
    if args.from_folder is not None:
        manifest = VideoManifest.from_folder(args.from_folder, split=args.split)
    elif args.from_csv is not None:
        manifest = VideoManifest.from_csv(args.from_csv, root=args.root)
    elif args.avgzsl is not None:
        manifest = VideoManifest.from_avgzsl(
            args.avgzsl, args.dataset, args.features, video_root=args.video_root
        )
    else:
        manifest = VideoManifest.from_paths(args.paths, root=args.root)
    manifest.to_parquet(args.out)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"}
    options["paths"] = [str(p) for p in args.paths] if args.paths else None
    write_run_info(args.out.parent, {"manifest_build": options}, command="avzsl manifest build")
    print(f"wrote {args.out}: {len(manifest)} videos")
    print(manifest.summary().to_string(index=False))
    _print_problems(manifest.problems)
    return 1 if args.strict and any(p.severity == "error" for p in manifest.problems) else 0


def _show(args: argparse.Namespace) -> int:
    manifest = VideoManifest.read_parquet(args.manifest)
    print(f"{args.manifest}: {len(manifest)} videos, columns {list(manifest.table.columns)}")
    if manifest.info:
        print("info: " + ", ".join(f"{k}={v}" for k, v in manifest.info.items()))
    print(manifest.summary().to_string(index=False))
    if args.rows > 0:
        print(manifest.table.head(args.rows).to_string(index=False))
    problems = list(manifest.problems)
    if args.check_files:
        problems.extend(manifest.check_files())
    _print_problems(problems)
    return 0


def _print_problems(problems: list) -> None:
    if not problems:
        return
    print(f"{len(problems)} problem(s):")
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        print(f"  {problem.severity} [{problem.kind}] {problem.message}")
    if len(problems) > MAX_PROBLEMS_SHOWN:
        print(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
