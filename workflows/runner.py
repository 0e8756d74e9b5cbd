"""Load a workflow file, apply overrides, and run its stages (what ``avzsl run`` and ``avzsl demo`` call)."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config import ConfigError
from pipeline.provenance import write_run_info
from workflows.build import SharedCluster, build_stages
from workflows.checks import check_workflow
from workflows.config import WorkflowConfig
from workflows.stages import RunSummary, StageRunner

log = logging.getLogger("avzsl.workflow")

WORKFLOW_DIR = Path(__file__).resolve().parent


def resolve_workflow(name_or_path: str) -> Path:
    """A workflow file path, or the name of one in ``workflows/`` (``demo``, ``full``, ``ucf_cls`` ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (
        WORKFLOW_DIR / f"{name_or_path}.yaml",
        WORKFLOW_DIR / "benchmarks" / f"{name_or_path}.yaml",
    ):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in WORKFLOW_DIR.rglob("*.yaml"))
    raise ConfigError(f"workflow {name_or_path!r}: no such file and not one of {', '.join(known)}")


def load_workflow(name_or_path: str, overrides: list[str] | None = None) -> WorkflowConfig:
    """The workflow file with ``--set`` overrides applied before validation (they may fill required keys)."""
    return WorkflowConfig.from_yaml(resolve_workflow(name_or_path), overrides)


def run_workflow(
    config: WorkflowConfig, only: list[str] | None = None, start: str | None = None, force: bool = False
) -> RunSummary:
    check_workflow(config)
    workdir = Path(config.workdir)
    write_run_info(workdir, config)
    cluster = SharedCluster(config)
    try:
        runner = StageRunner(workdir, build_stages(config, cluster))
        summary = runner.run(only=only, start=start, force=force)
    finally:
        cluster.close()
    log.info(
        "workflow %s: ran %s; skipped %s",
        config.name,
        ", ".join(summary.ran) or "nothing",
        ", ".join(summary.skipped) or "nothing",
    )
    return summary
