"""The report renders: table with chance row, figures for every section that has data, self-contained HTML;
each figure shows the data it promises (checked on the figure's artists, not its pixels)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from pipeline.config import ConfigError
from workflows.commands.demo import note_lines
from workflows.report import (
    MAX_COLUMNS,
    RunResult,
    calibration_figure,
    csgm_figure,
    curves_figure,
    load_run,
    per_class_figure,
    results_table,
    validation_figure,
    write_report,
)


def fake_run(folder: Path, name: str, hm: float) -> Path:
    folder.mkdir(parents=True)
    metrics = {
        "model": name,
        "test": {"S": 60.0, "U": hm / 2, "HM": hm, "ZSL": 40.0, "beta": 0.4},
        "chance": {"S": 10.0, "U": 10.0, "ZSL": 25.0},
        "beta": {
            "beta_val": 0.6,
            "val_curve": [
                {"beta": b / 5, "S": 0.6 - b / 100, "U": 0.1 + b / 100, "HM": 0.2 + b / 100}
                for b in range(16)
            ],
        },
        "per_class": {
            "gzsl": {f"c{i}": i * 10.0 for i in range(5)},
            "seen": ["c0", "c1", "c2"],
            "unseen": ["c3", "c4"],
        },
        "notes": ["features from randomly initialised extractors"],
        "preset": "published",
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    epochs = [
        {
            "stage": stage,
            "epoch": e,
            "loss": 1.0 / (e + 1),
            **{
                term: (i + 1) / (e + 1)
                for i, term in enumerate(("l_rec", "l_ct", "l_w", "l_t", "l_r", "l_align"))
            },
            "lr": 1e-3,
            "val_S": 50.0 + e,
            "val_U": 5.0 + e,
            "val_HM": 10.0 + e,
            "csgm_active": 1.0,
            "k_audio": 0.9 - 0.01 * e,
            "k_visual": 0.7 + 0.02 * e,
            "frac_audio_modulated": 0.2,
            "s_audio": 0.5,
            "r_visual": 0.01,
        }
        for stage in ("stage1", "stage2")
        for e in range(4 if stage == "stage1" else 2)
    ]
    (folder / "epochs.jsonl").write_text("\n".join(json.dumps(e) for e in epochs) + "\n")
    return folder


def test_report_renders_all_sections(tmp_path: Path) -> None:
    runs = [
        load_run(fake_run(tmp_path / "daan", "DAAN", 30.0), name="DAAN"),
        load_run(fake_run(tmp_path / "avca", "AVCA", 20.0), name="AVCA"),
    ]
    assert [e["stage"] for e in runs[0].epochs] == ["stage1"] * 4 + ["stage2"] * 2
    assert runs[0].beta_curve[0]["S"] == 60.0 and runs[0].per_class[0] == {
        "class": "c0",
        "accuracy": 0.0,
        "seen": True,
    }
    paths = write_report(runs, tmp_path / "report")
    markdown = paths["markdown"].read_text()
    assert "| DAAN | published | 60.00 | 15.00 | 30.00 | 40.00 |" in markdown
    assert "| *chance* | | 10.00 | 10.00 | 10.00 | 25.00 |" in markdown
    assert "randomly initialised" in markdown
    for figure in ("training.png", "validation.png", "csgm.png", "calibration.png", "per_class_1.png"):
        png = tmp_path / "report" / "figures" / figure
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        assert f"figures/{figure}" in markdown
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 6 and "<td>30.00</td>" in page


def test_table_without_chance_and_missing_run(tmp_path: Path) -> None:
    run = load_run(fake_run(tmp_path / "r", "R", 12.5))
    run.chance = {}
    assert "chance" not in results_table([run])
    metrics = tmp_path / "r" / "metrics.json"  # a run from before presets were recorded
    metrics.write_text(
        json.dumps({k: v for k, v in json.loads(metrics.read_text()).items() if k != "preset"})
    )
    assert "| r | - | 60.00 |" in results_table([load_run(tmp_path / "r")])
    with pytest.raises(ConfigError, match="no metrics.json"):
        load_run(tmp_path / "absent")


def _lines(ax: plt.Axes) -> dict[str, tuple[list[float], list[float]]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_csgm_figure_draws_the_coefficients_of_each_modality(tmp_path: Path) -> None:
    run = load_run(fake_run(tmp_path / "daan", "DAAN", 30.0), name="DAAN")
    fig = csgm_figure([run])
    (ax,) = fig.axes
    lines = _lines(ax)
    assert lines["audio, stage 1"] == ([0, 1, 2, 3], [pytest.approx(0.9 - 0.01 * e) for e in range(4)])
    assert lines["visual, stage 1"][1] == [pytest.approx(0.7 + 0.02 * e) for e in range(4)]
    assert lines["visual, stage 2"][0] == [0, 1]
    assert all(y != [1.0] * len(y) for _, y in lines.values()), (
        "the 0/1 csgm_active flag is not a coefficient"
    )
    plt.close(fig)


def test_curves_grid_has_at_most_four_columns_and_one_epoch_axis(tmp_path: Path) -> None:
    runs = [load_run(fake_run(tmp_path / n, n, 30.0), name=n) for n in ("DAAN", "AVCA")]
    fig = curves_figure(runs)
    grid = fig.axes[0].get_subplotspec().get_gridspec()
    assert grid.ncols <= MAX_COLUMNS and len(fig.axes) == 8  # loss, six terms, lr
    assert all(fig.axes[0].get_shared_x_axes().joined(fig.axes[0], ax) for ax in fig.axes)
    titles = [ax.get_title() for ax in fig.axes]
    assert not any(t.startswith(("val", "k_", "csgm", "s_", "r_", "frac")) for t in titles)
    l_ct = _lines(fig.axes[titles.index("l_ct: cross-modal triplet")])
    assert l_ct["AVCA, stage 1"][1] == [pytest.approx(2 / (e + 1)) for e in range(4)]
    assert l_ct["DAAN, stage 2"][0] == [0, 1]
    plt.close(fig)


def test_validation_figure_has_both_stages(tmp_path: Path) -> None:
    run = load_run(fake_run(tmp_path / "daan", "DAAN", 30.0), name="DAAN")
    fig = validation_figure([run])
    assert [ax.get_title() for ax in fig.axes] == ["validation S", "validation U", "validation HM"]
    s = _lines(fig.axes[0])
    assert s["DAAN, stage 1"][1] == [50.0, 51.0, 52.0, 53.0] and s["DAAN, stage 2"][1] == [50.0, 51.0]
    plt.close(fig)


def test_calibration_figure_draws_the_beta_curve_and_the_chosen_beta(tmp_path: Path) -> None:
    run = load_run(fake_run(tmp_path / "daan", "DAAN", 30.0), name="DAAN")
    fig = calibration_figure([run])
    lines = _lines(fig.axes[0])
    assert lines["HM"][0] == [pytest.approx(b / 5) for b in range(16)]
    assert lines["HM"][1] == [pytest.approx(20 + b) for b in range(16)]
    assert lines["chosen beta 0.6"][0] == [0.6, 0.6]
    plt.close(fig)


def test_per_class_figure_sorts_seen_and_unseen_apart_with_readable_labels(tmp_path: Path) -> None:
    run = load_run(fake_run(tmp_path / "daan", "DAAN", 30.0), name="DAAN")
    fig = per_class_figure(run)
    seen_ax, unseen_ax = fig.axes
    for ax, expected in ((seen_ax, ["c2", "c1", "c0"]), (unseen_ax, ["c4", "c3"])):
        assert [t.get_text() for t in ax.get_yticklabels()] == expected
        widths = [bar.get_width() for bar in ax.patches]
        assert widths == sorted(widths, reverse=True)
        assert min(t.get_fontsize() for t in ax.get_yticklabels()) >= 9
    assert "mean 10.0 = S" in seen_ax.get_title() and "mean 35.0 = U" in unseen_ax.get_title()
    plt.close(fig)


def test_a_folder_of_runs_means_its_latest_run(tmp_path: Path) -> None:
    fake_run(tmp_path / "runs" / "daan" / "0123abcd", "DAAN", 30.0)
    (tmp_path / "runs" / "daan" / "latest").symlink_to("0123abcd")
    run = load_run(tmp_path / "runs" / "daan")
    assert run.name == "daan" and run.metrics["HM"] == 30.0
    assert load_run(tmp_path / "runs" / "daan" / "latest").name == "daan"


def test_demo_prints_shared_notes_once_and_the_others_under_their_run() -> None:
    random = "features from RANDOMLY INITIALISED extractors"
    runs = [
        RunResult("DAAN", {}, {}, notes=[random, "calibration chose beta 3"]),
        RunResult("AVCA", {}, {}, notes=[random]),
    ]
    assert note_lines(runs) == [f"note: {random}", "note (DAAN): calibration chose beta 3"]
