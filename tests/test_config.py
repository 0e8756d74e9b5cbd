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
