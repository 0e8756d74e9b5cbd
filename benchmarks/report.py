"""Write one benchmark's section into BENCHMARKS.md, leaving the other sections untouched."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

from pipeline.config import atomic_write_text

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
# Set to e.g. "-h100" to write a run on another machine into its own sections instead of the main ones.
SUFFIX_ENV = "AVZSL_BENCH_SUFFIX"
HEADER = (
    "# avzsl benchmarks\n\n"
    "Every number below is a ratio or rate measured side by side in one run of the command shown in its\n"
    "section (the machines are shared and noisy, so absolute times vary between runs). `make bench` runs all.\n"
)


def machine_description() -> str:
    cpu = f"{platform.machine()}, {torch.get_num_threads()} torch threads"
    if torch.cuda.is_available():
        return f"{cpu}; GPU {torch.cuda.get_device_name(0)}"
    return f"{cpu}; no GPU"


def write_section(name: str, command: str, body_markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section ``name`` with ``body_markdown`` plus the reproducing command."""
    if suffix := os.environ.get(SUFFIX_ENV, ""):
        name, command = f"{name}{suffix}", f"{SUFFIX_ENV}={suffix} {command}"
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"{begin}\n## {name}\n\nReproduce: `{command}`  \nMeasured {stamp} on {machine_description()}.\n\n"
        f"{body_markdown.strip()}\n{end}"
    )
    text = path.read_text() if path.exists() else HEADER
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write_text(path, text)


def command_line(base: str, argv: list[str] | None) -> str:
    """``base`` plus the arguments this run was given, so a section reproduces the run that wrote it."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join([base, *map(shlex.quote, args)])


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
