"""The report renders: table with chance row, figures for every section that has data, self-contained HTML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workflows.report import load_run, results_table, write_report


def fake_run(folder: Path, name: str, hm: float) -> Path:
    folder.mkdir(parents=True)
    metrics = {
        "model": name,
        "test": {"S": 60.0, "U": hm / 2, "HM": hm, "ZSL": 40.0, "beta": 0.4},
        "chance": {"S": 10.0, "U": 10.0, "ZSL": 25.0},
        "beta": {
            "val_curve": [
                {"beta": b / 5, "S": 0.6 - b / 100, "U": 0.1 + b / 100, "HM": 0.2 + b / 100}
                for b in range(16)
            ]
        },
        "per_class": {
            "gzsl": {f"c{i}": i * 10.0 for i in range(5)},
            "seen": ["c0", "c1", "c2"],
            "unseen": ["c3", "c4"],
        },
        "notes": ["features from randomly initialised extractors"],
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    epochs = [
        {
            "stage": stage,
            "epoch": e,
            "loss": 1.0 / (e + 1),
            "val_HM": 10.0 + e,
            "csgm_audio": 0.9,
            "csgm_visual": 1.1,
        }
        for stage in ("stage1", "stage2")
        for e in range(4)
    ]
    (folder / "epochs.jsonl").write_text("\n".join(json.dumps(e) for e in epochs) + "\n")
    return folder


def test_report_renders_all_sections(tmp_path: Path) -> None:
    runs = [
        load_run(fake_run(tmp_path / "daan", "DAAN", 30.0), name="DAAN"),
        load_run(fake_run(tmp_path / "avca", "AVCA", 20.0), name="AVCA"),
    ]
    assert len(runs[0].epochs) == 4, "stage-2 records are not plotted"
    assert runs[0].beta_curve[0]["S"] == 60.0 and runs[0].per_class[0] == {
        "class": "c0",
        "accuracy": 0.0,
        "seen": True,
    }
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
