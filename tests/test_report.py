"""The report renders: table with chance row, figures for every section that has data, self-contained HTML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.report import load_run, results_table, write_report


def fake_run(folder: Path, name: str, hm: float) -> Path:
    folder.mkdir(parents=True)
    metrics = {
        "name": name,
        "test": {"S": 60.0, "U": hm / 2, "HM": hm, "ZSL": 40.0},
        "chance": {"S": 10.0, "U": 10.0, "HM": 10.0, "ZSL": 25.0},
        "beta_curve": [{"beta": b / 5, "S": 60 - b, "U": 10 + b, "HM": 20 + b} for b in range(16)],
        "per_class": [{"class": f"c{i}", "accuracy": i * 10.0, "seen": i < 3} for i in range(5)],
        "notes": ["features from randomly initialised extractors"],
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    epochs = [{"epoch": e, "loss": 1.0 / (e + 1), "val_HM": 10.0 + e, "csgm_audio": 0.9, "csgm_visual": 1.1} for e in range(4)]
    (folder / "epochs.jsonl").write_text("\n".join(json.dumps(e) for e in epochs) + "\n")
    return folder


def test_report_renders_all_sections(tmp_path: Path) -> None:
    runs = [load_run(fake_run(tmp_path / "daan", "DAAN", 30.0)), load_run(fake_run(tmp_path / "avca", "AVCA", 20.0))]
    paths = write_report(runs, tmp_path / "report")
    markdown = paths["markdown"].read_text()
    assert "| DAAN | 60.00 | 15.00 | 30.00 | 40.00 |" in markdown
    assert "| *chance* | 10.00 | 10.00 | 10.00 | 25.00 |" in markdown
    assert "randomly initialised" in markdown
    for figure in ("training.png", "csgm.png", "beta_0.png", "per_class_1.png"):
        png = tmp_path / "report" / "figures" / figure
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        assert f"figures/{figure}" in markdown
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 6 and "<td>30.00</td>" in page


def test_table_without_chance_and_missing_run(tmp_path: Path) -> None:
    run = load_run(fake_run(tmp_path / "r", "R", 12.5))
    run.chance = {}
    assert "chance" not in results_table([run])
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        load_run(tmp_path / "absent")
