"""The config system: strict keys, YAML round trip, overrides, and error messages that name the bad key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest

from pipeline.config import ConfigError, ConfigModel
from pipeline.provenance import write_run_info
from workflows.cli import main


class Optimiser(ConfigModel):
    lr: float = 1e-3
    kind: Literal["adam", "sgd"] = "adam"


class Experiment(ConfigModel):
    name: str = "run"
    epochs: int = 10
    optimiser: Optimiser = Optimiser()


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = Experiment(name="x", epochs=3, optimiser=Optimiser(lr=0.5, kind="sgd"))
    config.to_yaml(tmp_path / "c.yaml")
    assert Experiment.from_yaml(tmp_path / "c.yaml") == config


def test_unknown_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("epochs: 3\noptimizer:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        Experiment.from_yaml(tmp_path / "c.yaml")
    assert "optimizer" in str(err.value) and "unknown key" in str(err.value) and "c.yaml" in str(err.value)


def test_bad_literal_lists_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        Experiment.from_dict({"optimiser": {"kind": "rmsprop"}}, source="cfg")
    message = str(err.value)
    assert "optimiser.kind" in message and "'adam'" in message and "'sgd'" in message


def test_overrides_parse_yaml_values_and_refuse_unknown_keys() -> None:
    config = Experiment().with_overrides(["epochs=5", "optimiser.lr=0.25"])
    assert config.epochs == 5 and config.optimiser.lr == 0.25
    with pytest.raises(ConfigError, match="optimiser.lrate"):
        Experiment().with_overrides(["optimiser.lrate=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        Experiment().with_overrides(["epochs"])


def test_non_mapping_and_missing_files_are_clear(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        Experiment.from_yaml(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="not found"):
        Experiment.from_yaml(tmp_path / "absent.yaml")


def test_run_info_records_config_and_versions(tmp_path: Path) -> None:
    write_run_info(tmp_path, Experiment(epochs=2), command="avzsl test")
    assert Experiment.from_yaml(tmp_path / "config.yaml").epochs == 2
    info = json.loads((tmp_path / "versions.json").read_text())
    assert {"python", "torch", "av", "decord", "dask"} <= set(info["versions"])
    assert info["command"] == "avzsl test"


def test_cli_without_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: avzsl" in capsys.readouterr().out


def test_overrides_apply_before_validation_and_may_fill_required_keys(tmp_path: Path) -> None:
    from workflows.config import WorkflowConfig
    from workflows.runner import load_workflow

    config = load_workflow("full", [f"videos.path={tmp_path}", "train.models.daan.epochs=3"])
    assert config.videos.path == str(tmp_path) and config.train.models["daan"].epochs == 3
    config = load_workflow("extract", [f"videos.path={tmp_path}", "extract.cluster=tcp://host:8786"])
    assert config.extract.cluster == "tcp://host:8786"
    with pytest.raises(ConfigError) as err:
        WorkflowConfig.from_yaml(Path("workflows/full.yaml").resolve())
    message = str(err.value)
    assert "videos.path is required" in message and "--set videos.path=" in message
    assert "data." not in message, "keys are named as the file writes them"
    assert len(message.splitlines()) == 1


def test_unknown_override_names_the_key_and_the_allowed_ones(tmp_path: Path) -> None:
    from workflows.runner import load_workflow

    with pytest.raises(ConfigError) as err:
        load_workflow("full", [f"videos.path={tmp_path}", "videos.pth=x"])
    assert (
        "videos.pth: unknown key (check the spelling; allowed: classes, path, source, split_seed, synth)"
        in str(err.value)
    )
    with pytest.raises(ConfigError, match=r"train\.models\.daan\.epoch: unknown key .*allowed: .*epochs"):
        load_workflow("full", [f"videos.path={tmp_path}", "train.models.daan.epoch=3"])
    with pytest.raises(ConfigError, match="--set 'videos.path': expected KEY=VALUE"):
        load_workflow("full", ["videos.path"])


def test_documented_extract_workflow_writes_its_manifest_without_class_roles(tmp_path: Path) -> None:
    """`avzsl run extract --set videos.path=DIR` (workflows/extract.yaml): extracting needs no class roles."""
    videos = tmp_path / "videos"
    for name in ("cat/a.mp4", "dog/b.mp4"):
        (videos / name).parent.mkdir(parents=True, exist_ok=True)
        (videos / name).write_bytes(b"")
    args = ["run", "extract", "--set", f"videos.path={videos}", "--set", f"workdir={tmp_path / 'w'}"]
    assert main([*args, "--only", "data"]) == 0
    classes = (tmp_path / "w" / "data" / "classes.csv").read_text().splitlines()
    assert classes[0] == "name,role,description" and classes[1].startswith("cat,")
