"""Stage engine: unchanged stages are skipped, changed ones re-run with their dependants, and the log says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workflows.stages import (
    Stage,
    StageContext,
    StageRunner,
    WorkflowError,
    changed_values,
    files_fingerprint,
)


def make_stages(
    calls: list[str], epochs: int = 1, extractors: tuple[str, ...] = ("c3d",), videos: Path | None = None
):
    def writer(name: str, output: str):
        def run(ctx: StageContext) -> None:
            calls.append(name)
            (ctx.workdir / output).write_text(name)

        return run

    stages = [
        Stage(
            "manifest",
            writer("manifest", "manifest.txt"),
            outputs=("manifest.txt",),
            external_inputs=(lambda: files_fingerprint([videos])) if videos else None,
        )
    ]
    for extractor in extractors:
        stages.append(
            Stage(
                f"extract:{extractor}",
                writer(f"extract:{extractor}", f"{extractor}.txt"),
                params={"extractor": extractor},
                depends_on=("manifest",),
                outputs=(f"{extractor}.txt",),
            )
        )
    extract_names = tuple(s.name for s in stages[1:])
    stages.append(
        Stage(
            "train",
            writer("train", "train.txt"),
            params={"epochs": epochs},
            depends_on=extract_names,
            outputs=("train.txt",),
            code=("workflows.stages",),
        )
    )
    stages.append(
        Stage("report", writer("report", "report.txt"), depends_on=("train",), outputs=("report.txt",))
    )
    return stages


def test_second_run_skips_everything(tmp_path: Path) -> None:
    calls: list[str] = []
    StageRunner(tmp_path, make_stages(calls)).run()
    assert calls == ["manifest", "extract:c3d", "train", "report"]
    calls.clear()
    summary = StageRunner(tmp_path, make_stages(calls)).run()
    assert calls == [] and summary.ran == []
    assert all(d.reason == "unchanged" for d in summary.decisions)


def test_changed_training_parameter_reruns_only_training_and_after(tmp_path: Path) -> None:
    calls: list[str] = []
    StageRunner(tmp_path, make_stages(calls, epochs=1)).run()
    calls.clear()
    summary = StageRunner(tmp_path, make_stages(calls, epochs=5)).run()
    assert calls == ["train", "report"]
    reasons = {d.stage: d.reason for d in summary.decisions}
    assert reasons["train"] == "parameters changed: epochs 1 -> 5"
    assert reasons["report"] == "inputs changed: train"
    assert reasons["extract:c3d"] == "unchanged"


def test_added_extractor_extracts_only_itself(tmp_path: Path) -> None:
    calls: list[str] = []
    StageRunner(tmp_path, make_stages(calls, extractors=("c3d",))).run()
    calls.clear()
    StageRunner(tmp_path, make_stages(calls, extractors=("c3d", "vggish"))).run()
    assert calls == ["extract:vggish", "train", "report"]


def test_changed_external_file_and_missing_output_rerun(tmp_path: Path) -> None:
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    calls: list[str] = []
    StageRunner(tmp_path, make_stages(calls, videos=video)).run()
    video.write_bytes(b"longer")
    calls.clear()
    StageRunner(tmp_path, make_stages(calls, videos=video)).run()
    assert calls == ["manifest", "extract:c3d", "train", "report"]
    (tmp_path / "report.txt").unlink()
    calls.clear()
    summary = StageRunner(tmp_path, make_stages(calls, videos=video)).run()
    assert calls == ["report"] and "outputs missing" in summary.decisions[-1].reason


def test_only_from_and_force(tmp_path: Path) -> None:
    calls: list[str] = []
    StageRunner(tmp_path, make_stages(calls)).run()
    calls.clear()
    StageRunner(tmp_path, make_stages(calls)).run(only=["train"])
    assert calls == ["train"]
    calls.clear()
    StageRunner(tmp_path, make_stages(calls)).run(start="train")
    assert calls == ["train", "report"]
    calls.clear()
    StageRunner(tmp_path, make_stages(calls)).run(force=True)
    assert calls == ["manifest", "extract:c3d", "train", "report"]
    with pytest.raises(WorkflowError, match="unknown stage"):
        StageRunner(tmp_path, make_stages(calls)).run(only=["trian"])


def test_interrupted_workflow_resumes_at_the_failed_stage(tmp_path: Path) -> None:
    calls: list[str] = []
    stages = make_stages(calls)

    def crash(ctx: StageContext) -> None:
        raise KeyboardInterrupt

    broken = [
        s if s.name != "train" else Stage("train", crash, s.params, s.depends_on, s.outputs, s.code)
        for s in stages
    ]
    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path, broken).run()
    assert calls == ["manifest", "extract:c3d"]
    calls.clear()
    StageRunner(tmp_path, make_stages(calls)).run()
    assert calls == ["train", "report"]
    state = json.loads((tmp_path / ".avzsl-state" / "train.json").read_text())
    assert state["params"] == {"epochs": 1}


def test_only_refuses_when_upstream_never_ran(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="needs"):
        StageRunner(tmp_path, make_stages([])).run(only=["train"])


def test_run_dir_keeps_one_folder_per_fingerprint_and_links_the_latest(tmp_path: Path) -> None:
    folder = StageContext(tmp_path, "aaa").run_dir("runs/x")
    (folder / "checkpoint").write_text("epoch 3")
    assert (tmp_path / "runs/x/latest/checkpoint").read_text() == "epoch 3"
    other = StageContext(tmp_path, "bbb").run_dir("runs/x")
    assert other != folder and not (other / "checkpoint").exists()
    assert (folder / "checkpoint").is_file(), "a changed parameter keeps the earlier run"
    assert (tmp_path / "runs/x/latest").resolve() == other.resolve()
    assert (StageContext(tmp_path, "aaa").run_dir("runs/x") / "checkpoint").is_file(), "same inputs resume"
    assert (tmp_path / "runs/x/latest").readlink() == Path("aaa"), "relative: the workdir may move"


def test_a_changed_nested_parameter_is_logged_alone() -> None:
    old = {"train": {"lr": 0.001, "epochs": 5, "daan": {"csgm": {"alpha": 0.3}}}, "data": {"root": "a"}}
    new = {"train": {"lr": 0.0005, "epochs": 5, "daan": {"csgm": {"alpha": 0.3}}}, "data": {"root": "a"}}
    assert changed_values(old, new) == ["train.lr 0.001 -> 0.0005"]
    new["train"]["daan"]["csgm"]["alpha"] = 0.5
    new["train"]["seed"] = 1
    assert changed_values(old, new) == [
        "train.daan.csgm.alpha 0.3 -> 0.5",
        "train.lr 0.001 -> 0.0005",
        "train.seed (unset) -> 1",
    ]
