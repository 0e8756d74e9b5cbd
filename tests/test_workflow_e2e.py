"""The whole job through ``avzsl run`` at reduced size: real synthetic videos, Dask extraction, DAAN + AVCA,
report; then the re-run rules: a changed training parameter retrains only, an added extractor extracts only
itself, an unchanged workflow runs nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from workflows.cli import main
from workflows.report import load_run
from workflows.runner import load_workflow, run_workflow

pytestmark = pytest.mark.slow

TINY = [
    "videos.synth.classes=6",
    "videos.synth.clips_per_class=4",
    "videos.synth.seconds=1.0",
    "videos.synth.workers=1",
    "extract.workers=1",
    "extract.shard_size=12",
    "train.models.daan.epochs=2",
    "train.models.daan.batches_per_epoch=3",
    "train.models.daan.batch_size=8",
    "train.models.avca.epochs=2",
    "train.models.avca.batches_per_epoch=3",
    "train.models.avca.batch_size=8",
    "train.models.tcaf.epochs=2",
    "train.models.tcaf.batches_per_epoch=3",
    "train.models.tcaf.batch_size=8",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo workflow at reduced size, run once through the CLI with a local Dask cluster."""
    workdir = tmp_path_factory.mktemp("demo")
    args = ["demo", "--out", str(workdir)] + [a for item in TINY for a in ("--set", item)]
    assert main(args) == 0
    return workdir


def test_demo_produces_every_output(demo_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in (
        "data/manifest.parquet",
        "data/probe.parquet",
        "embeddings/classes.npz",
        "report/report.html",
        "report/report.md",
        "runs/daan/latest/metrics.json",
        "runs/daan/latest/run.yaml",
        "runs/avca/latest/metrics.json",
        "config.yaml",
    ):
        assert (demo_run / path).is_file(), path
    stores = [json.loads((demo_run / "features" / n / "stores.json").read_text()) for n in ("vit", "vggish")]
    assert [list(s) for s in stores] == [["vit"], ["vggish"]]
    daan = load_run(demo_run / "runs" / "daan")
    assert daan.chance["U"] == pytest.approx(100 / 6)  # six classes at test time
    assert daan.name == "daan"
    assert any("RANDOMLY INITIALISED" in note for note in daan.notes), "the store headers say so"
    assert "RANDOMLY INITIALISED" in (demo_run / "report" / "report.md").read_text()
    assert main(["evaluate", "--run", str(demo_run / "runs" / "daan")]) == 0
    assert "note: audio and visual features from RANDOMLY INITIALISED extractors" in capsys.readouterr().out
    run_data = {
        m: yaml.safe_load((demo_run / f"runs/{m}/latest/run.yaml").read_text())["data"]
        for m in ("daan", "tcaf")
    }
    assert not run_data["daan"]["temporal"] and run_data["tcaf"]["temporal"]  # TCaF trains on the windows
    summary = json.loads((demo_run / "demo_summary.json").read_text())
    assert set(summary) == {"DAAN", "AVCA", "TCAF"} and all(
        0 <= v <= 100 for v in summary["DAAN"]["test"].values()
    )


def test_what_a_workflow_records_reruns(
    demo_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The recorded config.yaml re-runs with `avzsl run` (nothing changed: all skipped); each model's run.yaml
    with `avzsl train`, to the same numbers; `avzsl train` given the workflow config says which to use."""
    recorded = demo_run / "config.yaml"
    assert main(["run", str(recorded), "--dry-run", "--set", "extract.cluster=none"]) == 0
    plan = capsys.readouterr().out.splitlines()
    assert plan and all(line.startswith("skip") for line in plan), plan
    assert main(["train", "--config", str(recorded), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"re-run it with `avzsl run {recorded}`" in err[0]
    assert str(demo_run / "runs" / "avca" / "latest" / "run.yaml") in err[0]
    run_yaml = demo_run / "runs" / "daan" / "latest" / "run.yaml"
    assert main(["train", "--config", str(run_yaml), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    original = json.loads((demo_run / "runs" / "daan" / "latest" / "metrics.json").read_text())
    assert again["test"] == pytest.approx(original["test"], abs=1e-4)
    assert again["notes"] == original["notes"]


def test_unchanged_workflow_runs_nothing(demo_run: Path) -> None:
    config = load_workflow("demo", [*TINY, f"workdir={demo_run}", "extract.cluster=none"])
    summary = run_workflow(config)
    assert summary.ran == []


def test_changed_training_parameter_retrains_without_reextracting(demo_run: Path) -> None:
    config = load_workflow(
        "demo", [*TINY, f"workdir={demo_run}", "extract.cluster=none", "train.models.avca.lr=0.002"]
    )
    before = (demo_run / "runs" / "avca" / "latest").resolve()
    summary = run_workflow(config)
    assert summary.ran == ["train:avca", "report"]
    reasons = {d.stage: d.reason for d in summary.decisions}
    assert reasons["train:avca"] == "parameters changed: train.lr 0.001 -> 0.002", "only what changed"
    after = (demo_run / "runs" / "avca" / "latest").resolve()
    assert after != before and after.parent == before.parent
    assert yaml.safe_load((after / "config.yaml").read_text())["lr"] == 0.002
    assert yaml.safe_load((before / "config.yaml").read_text())["lr"] == 0.001, "the earlier run is kept"
    assert (before / "metrics.json").is_file()


def test_added_extractor_extracts_only_itself(demo_run: Path) -> None:
    extra = "extract.extra=[{name: vit, key: vit_cls, options: {fps: 1.0, pooling: cls}}]"
    config = load_workflow(
        "demo", [*TINY, f"workdir={demo_run}", "extract.cluster=none", "train.models.avca.lr=0.002", extra]
    )
    summary = run_workflow(config)
    assert summary.ran == ["extract:vit_cls"]
    assert (demo_run / "features" / "vit_cls" / "stores.json").is_file()


def test_run_dry_run_lists_decisions(demo_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "demo", "--dry-run", "--set", f"workdir={demo_run}", "--from", "embed"]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("skip") and "extract:vit" in line for line in lines)
    assert any(line.startswith("run") and "train:daan" in line and "--from embed" in line for line in lines)
