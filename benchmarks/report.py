"""Write one benchmark's section into BENCHMARKS.md, leaving the other sections untouched, and keep the
summary table at the top of the file in step with the sections.

A section may carry summary rows (what was measured, its target, the measured value, whether the target
is met); they are stored in the section as a comment and the table at the top is rebuilt from every
section's rows on each write, so it never drifts from the details below it. Prose is wrapped at
``WIDTH`` columns; tables keep one row per line.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
import textwrap
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from pipeline.config import atomic_write_text

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
# Set to e.g. "-h100" to write a run on another machine into its own sections instead of the main ones.
SUFFIX_ENV = "AVZSL_BENCH_SUFFIX"
WIDTH = 110
TITLE = "# avzsl benchmarks"
INTRO = (
    "Every number below is a ratio or rate measured side by side in one run of the command shown in its "
    "section (the machines are shared and noisy, so absolute times vary between runs). `make bench` runs "
    "every benchmark; the table below is rebuilt from the sections each time one is written."
)
SUMMARY_BEGIN, SUMMARY_END = "<!-- summary -->", "<!-- /summary -->"
ROW_TAG = re.compile(r"<!-- summary-row: (.*?) -->")


@dataclass(frozen=True)
class SummaryRow:
    """One line of the summary table: ``met`` is True, False, or None where there is no target."""

    what: str
    target: str
    measured: str
    met: bool | None = None


def machine_description() -> str:
    cpu = f"{platform.machine()}, {torch.get_num_threads()} torch threads"
    if torch.cuda.is_available():
        return f"{cpu}; GPU {torch.cuda.get_device_name(0)}"
    return f"{cpu}; no GPU"


def write_section(
    name: str,
    command: str,
    body_markdown: str,
    path: Path = BENCHMARKS_MD,
    summary: list[SummaryRow] | None = None,
) -> None:
    """Replace (or append) the section ``name`` with ``body_markdown`` plus the reproducing command."""
    if suffix := os.environ.get(SUFFIX_ENV, ""):
        name, command = f"{name}{suffix}", f"{SUFFIX_ENV}={suffix} {command}"
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = "".join(f"<!-- summary-row: {json.dumps(asdict(row))} -->\n" for row in summary or [])
    section = (
        f"{begin}\n{rows}## {name}\n\nReproduce: `{command}`  \nMeasured {stamp} on {machine_description()}.\n\n"
        f"{wrap_prose(body_markdown.strip())}\n{end}"
    )
    text = path.read_text() if path.exists() else f"{TITLE}\n"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write_text(path, with_summary(text))


def with_summary(text: str) -> str:
    """``text`` with its title, introduction and summary table rebuilt from the sections' summary rows."""
    sections = text[text.index("<!-- bench:") :] if "<!-- bench:" in text else ""
    table = summary_table(sections)
    return (
        f"{TITLE}\n\n{wrap_prose(INTRO)}\n\n{SUMMARY_BEGIN}\n{table}\n{SUMMARY_END}\n\n{sections}".rstrip()
        + "\n"
    )


def summary_table(sections: str) -> str:
    rows = []
    for section in re.finditer(r"<!-- bench:(\S+) -->\n(.*?)<!-- /bench:\1 -->", sections, re.S):
        name = section[1]
        command = re.search(r"^Reproduce: `(.*?)`", section[2], re.M)
        where = f"`{command[1]}` ([{name}](#{anchor(name)}))" if command else f"[{name}](#{anchor(name)})"
        for tag in ROW_TAG.finditer(section[2]):
            row = SummaryRow(**json.loads(tag[1]))
            met = {True: "yes", False: "**no**", None: "-"}[row.met]
            rows.append([row.what, row.target, row.measured, met, where])
    if not rows:
        return "No summary rows yet: each benchmark adds its own when it writes its section."
    return markdown_table(["what", "target", "measured", "met", "command (section)"], rows)


def anchor(name: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", name.lower()).replace(" ", "-")


def wrap_prose(markdown: str) -> str:
    """Wrap paragraphs and list items at ``WIDTH``; tables, code and comments stay as they are."""
    out = []
    for paragraph in re.split(r"\n{2,}", markdown):
        lines = paragraph.splitlines()
        if "```" in paragraph or any(line.lstrip().startswith(("|", "<!--", "#")) for line in lines):
            out.append(paragraph)
        elif LIST_ITEM.match(lines[0]):
            out.append("\n".join(_wrap_item(item) for item in _items(lines)))
        else:
            trailing = "  " if paragraph.endswith("  ") else ""
            out.append(textwrap.fill(" ".join(lines), WIDTH, break_on_hyphens=False) + trailing)
    return "\n\n".join(out)


LIST_ITEM = re.compile(r"^(\s*)([-*]|\d+\.) ")


def _items(lines: list[str]) -> list[str]:
    """List lines joined into one line per item (continuation lines appended to their item)."""
    items: list[str] = []
    for line in lines:
        if LIST_ITEM.match(line) or not items:
            items.append(line.rstrip())
        else:
            items[-1] += " " + line.strip()
    return items


def _wrap_item(item: str) -> str:
    match = LIST_ITEM.match(item)
    indent = len(match[1]) if match else 0
    marker = len(match[2]) + 1 if match else 0
    return textwrap.fill(
        item.strip(),
        WIDTH,
        initial_indent=" " * indent,
        subsequent_indent=" " * (indent + marker),
        break_on_hyphens=False,
    )


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
