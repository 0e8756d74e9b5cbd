"""Every bundled workflow file loads, and a benchmark workflow trains with its bundled config's settings."""

from __future__ import annotations

import pytest

from model.api import resolve_config
from model.config import RunConfig, preset_of
from workflows.build import build_stages
from workflows.runner import WORKFLOW_DIR, load_workflow

WORKFLOWS = sorted(
    p.relative_to(WORKFLOW_DIR).with_suffix("").as_posix() for p in WORKFLOW_DIR.rglob("*.yaml")
)
BENCHMARKS = [name.split("/", 1)[1] for name in WORKFLOWS if name.startswith("benchmarks/")]


def test_there_is_a_benchmark_workflow_per_dataset_setting_and_model_family() -> None:
    for dataset in ("ucf", "activitynet", "vggsound"):
        for setting in ("main", "cls"):
            assert {f"{dataset}_{setting}", f"{dataset}_{setting}_tcaf"} <= set(BENCHMARKS)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_bundled_workflow_loads(name: str, tmp_path) -> None:
    # the workflows for the user's own videos need the one setting they document: videos.path
    config = load_workflow(str(WORKFLOW_DIR / f"{name}.yaml"), [f"videos.path={tmp_path}"])
    assert config.train.models


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_workflow_trains_with_its_bundled_config(name: str) -> None:
    config = load_workflow(name)
    base = RunConfig.from_yaml(resolve_config(config.base))
    assert config.kind == "published" and config.published == base.data
    for key, model in config.train.models.items():
        expected = base.train.model_copy(update={"model": model.model})
        assert model == expected, key
        if model.model == "tcaf":
            assert config.published.temporal and config.train.temporal(key)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_workflow_trains_every_model_once_per_preset(name: str) -> None:
    """One stage and one folder of runs per model and preset, each run with its preset's switches."""
    config = load_workflow(name)
    assert config.presets == ["published", "corrected"]
    stages = {s.name: s for s in build_stages(config) if s.name.startswith("train:")}
    runs = [f"{model}-{preset}" for model in config.train.models for preset in config.presets]
    assert list(stages) == [f"train:{run}" for run in runs]
    for run in runs:
        stage = stages[f"train:{run}"]
        assert stage.outputs == (f"runs/{run}/latest/metrics.json",)
        trained = RunConfig.from_dict(stage.params)
        assert preset_of(trained.train, trained.data.indexing) == run.rsplit("-", 1)[1]
