"""BENCHMARKS.md: sections replaced in place, the summary table rebuilt from every section's rows, prose wrapped."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import WIDTH, SummaryRow, write_section


def test_summary_table_follows_the_sections(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    write_section("decode", "cmd a", "text", md, [SummaryRow("decode every frame", ">= 0.8x", "0.82x", True)])
    write_section("train", "cmd b", "more", md, [SummaryRow("epoch vs public", "<= 0.5", "0.57", False)])
    text = md.read_text()
    assert text.index(
        "| decode every frame | >= 0.8x | 0.82x | yes | `cmd a` ([decode](#decode)) |"
    ) < text.index("## decode")
    assert "| epoch vs public | <= 0.5 | 0.57 | **no** | `cmd b` ([train](#train)) |" in text
    # rewriting one section replaces its rows, keeps the other's, and leaves one summary table
    write_section("decode", "cmd a", "text", md, [SummaryRow("decode every frame", ">= 0.8x", "0.85x", True)])
    text = md.read_text()
    assert "0.82x" not in text and "0.85x" in text and "epoch vs public" in text
    assert text.count("<!-- summary -->") == 1 and text.count("## decode") == 1


def test_prose_is_wrapped_and_tables_are_not(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    table = "| a | b |\n|---|---|\n| " + "long cell " * 30 + "| 1 |"
    write_section("x", "cmd", "word " * 100 + "\n\n" + table, md)
    lines = md.read_text().splitlines()
    assert all(len(line) <= WIDTH for line in lines if not line.startswith(("|", "<!--")))
    assert table.splitlines()[2] in lines
