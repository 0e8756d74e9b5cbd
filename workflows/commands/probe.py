"""``avzsl probe PATH...``: one record per media file (status, duration, PTS frame rate, frames, streams).

Directories are walked for media files. Bad files are reported, not fatal: the exit status is non-zero
only for usage errors, so a dataset scan always completes and its output lists every file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from pipeline.decode import BACKENDS, ProbeResult, probe
from pipeline.manifest import MEDIA_EXTENSIONS
from workflows.cli import UsageError

COLUMNS = ("status", "duration_s", "fps", "frames", "has_audio", "codecs", "path", "error")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "probe",
        help="report streams, duration, true frame rate and a status for media files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="media files or directories (walked)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="also decode the first frame with this backend (decord runs in a guarded child process)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds allowed for --backend's check")
    parser.add_argument(
        "--deep",
        action="store_true",
        help="decode every packet and report corrupt regions (as slow as a full decode; finds damage in "
        "the middle of a file that the default packet scan cannot see)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout}")
    out = sys.stdout
    statuses: Counter[str] = Counter()
    rows = []
    for path in iter_media(args.paths):
        record = flat_record(probe(path, backend=args.backend, timeout_s=args.timeout, deep=args.deep))
        statuses[record["status"]] += 1
        if args.json:
            out.write(json.dumps(record) + "\n")
            out.flush()
        else:
            rows.append(record)
    if not args.json:
        out.write(format_table(rows))
    summary = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) or "no media files found"
    print(f"probed {sum(statuses.values())} file(s): {summary}", file=sys.stderr)
    return 0


def iter_media(paths: list[str]) -> Iterator[Path]:
    """Files as given (even missing ones: they are reported as not_found) and media files under folders."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS
            )
        else:
            yield path


def flat_record(result: ProbeResult) -> dict:
    """The fields users scan a dataset for, flat (one JSON object / table row per file)."""
    video, audio = result.video, result.audio
    codecs = "+".join(c for c in (video and video.codec, audio and audio.codec) if c)
    return {
        "path": result.path,
        "status": str(result.status),
        "duration_s": _round(result.duration_s),
        "fps": _round(video.fps if video else None),
        "container_fps": _round(video.container_fps if video else None),
        "frames": video.frame_count if video else None,
        "width": video.width if video else None,
        "height": video.height if video else None,
        "has_video": result.has_video,
        "has_audio": result.has_audio,
        "audio_rate": audio.sample_rate if audio else None,
        "audio_channels": audio.channels if audio else None,
        "codecs": codecs or None,
        "corrupt_regions": list(result.corrupt_regions),
        "error": result.error,
    }


def format_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cells = [[_cell(row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
