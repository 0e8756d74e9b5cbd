"""The project cites only itself: every ``docs/<note>.md`` named in code exists, and nothing points at notes
outside the repository or at a machine's paths."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "extractors", "model", "workflows", "benchmarks", "tests")
OUTSIDE = re.compile(r"REFERENCE §|REFERENCE\.md|DESIGN\.md|FINDINGS\.md|/work/|/home/\w|/root/")
DOC_CITATION = re.compile(r"docs/([\w.-]+\.md)")


def project_files() -> list[Path]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*") if p.suffix in (".py", ".yaml")]
    files += sorted((ROOT / "docs").glob("*.md")) + [
        ROOT / "README.md",
        ROOT / "Makefile",
        ROOT / "pyproject.toml",
    ]
    return [p for p in files if p != Path(__file__)]


def test_no_citation_points_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}"
        for path in project_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []


def test_every_cited_note_exists() -> None:
    cited = {name for path in project_files() for name in DOC_CITATION.findall(path.read_text())}
    assert cited, "the code cites its notes"
    assert sorted(name for name in cited if not (ROOT / "docs" / name).is_file()) == []


def test_the_check_sees_what_it_looks_for() -> None:
    assert OUTSIDE.search("follows REFERENCE §4.2") and OUTSIDE.search("see ../shared/DESIGN.md")
    assert not OUTSIDE.search("docs/extractors.md step 3")
    assert DOC_CITATION.findall("(docs/avca.md, docs/fast-paths.md)") == ["avca.md", "fast-paths.md"]
