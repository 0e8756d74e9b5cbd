"""A small stage engine: skip what did not change, say why, resume after an interruption.

A stage's fingerprint hashes its parameters, the source of the code it runs, the fingerprints of the stages it
depends on and, for stages that read files from outside the workflow (videos, published features), a cheap
fingerprint of those files. A stage whose fingerprint equals the one recorded after its last successful run, and
whose outputs still exist, is skipped. State is written only after a stage succeeds (atomically), so a killed
workflow re-runs exactly the stage it was in and whatever follows, and that stage resumes its own work.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config import atomic_write_text
from pipeline.errors import UserError

log = logging.getLogger("avzsl.workflow")

STATE_DIR = ".avzsl-state"
LATEST = "latest"  # in a folder of runs: the link to the run of the last stage run


class WorkflowError(UserError, RuntimeError):
    """A workflow that cannot run as asked (unknown stage, missing upstream output)."""


@dataclass(frozen=True)
class StageContext:
    """What a running stage gets: the workflow directory and the fingerprint it runs under."""

    workdir: Path
    fingerprint: str

    def run_dir(self, relative: str) -> Path:
        """The output folder of this fingerprint, ``relative/<fingerprint>``, which ``relative/latest`` names.

        Changing a parameter starts a new folder and keeps the earlier run; a folder left by an interrupted
        run of this exact fingerprint is resumed, and going back to earlier parameters reuses their run.
        """
        parent = self.workdir / relative
        folder = parent / self.fingerprint
        folder.mkdir(parents=True, exist_ok=True)
        link = parent / LATEST
        tmp = parent / f".{LATEST}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.fingerprint, target_is_directory=True)  # relative: the workdir may move
        tmp.replace(link)
        return folder


@dataclass(frozen=True)
class Stage:
    """One step of a workflow. ``run`` receives a :class:`StageContext` and writes ``outputs`` (relative paths)."""

    name: str
    run: Callable[[StageContext], None]
    params: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    code: tuple[
        str, ...
    ] = ()  # importable module or package names whose source defines this stage's behaviour
    external_inputs: Callable[[], str] | None = None  # fingerprint of files read from outside the workflow


@dataclass
class Decision:
    stage: str
    action: str  # "run" | "skip"
    reason: str


@dataclass
class RunSummary:
    decisions: list[Decision]
    seconds: dict[str, float]

    @property
    def ran(self) -> list[str]:
        return [d.stage for d in self.decisions if d.action == "run"]

    @property
    def skipped(self) -> list[str]:
        return [d.stage for d in self.decisions if d.action == "skip"]


def code_fingerprint(modules: tuple[str, ...]) -> str:
    """Hash of the source files of the named modules (a package contributes every .py file under it)."""
    digest = hashlib.sha256()
    for module in sorted(modules):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise WorkflowError(f"stage code module {module!r} cannot be found")
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for path in files:
            digest.update(str(path.relative_to(origin.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def files_fingerprint(paths: list[Path]) -> str:
    """Cheap fingerprint of external files: path, size and modification time (no content reads)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        stat = path.stat() if path.exists() else None
        digest.update(f"{path}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}\n".encode())
    return digest.hexdigest()[:16]


def changed_values(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``["train.lr 0.001 -> 0.0005", ...]``: the leaves that differ between two nested parameter dicts."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        before, after = old.get(key, MISSING), new.get(key, MISSING)
        name = f"{prefix}{key}"
        if isinstance(before, dict) and isinstance(after, dict):
            out += changed_values(before, after, f"{name}.")
        elif before != after:
            out.append(f"{name} {_show(before)} -> {_show(after)}")
    return out


MISSING = object()


def _show(value: Any) -> str:
    return "(unset)" if value is MISSING else json.dumps(value, default=str)


class StageRunner:
    """Runs stages in the given (topological) order inside ``workdir``, skipping unchanged ones."""

    def __init__(self, workdir: str | Path, stages: list[Stage]):
        self.workdir = Path(workdir)
        self.stages = {stage.name: stage for stage in stages}
        if len(self.stages) != len(stages):
            raise WorkflowError("stage names must be unique")
        for stage in stages:
            unknown = [d for d in stage.depends_on if d not in self.stages]
            if unknown:
                raise WorkflowError(f"stage {stage.name!r} depends on unknown stage(s) {unknown}")
        self._fingerprints: dict[str, str] = {}

    # ----------------------------------------------------------------- fingerprints and recorded state
    def fingerprint(self, name: str) -> str:
        if name not in self._fingerprints:
            stage = self.stages[name]
            payload = {
                "params": stage.params,
                "code": code_fingerprint(stage.code) if stage.code else "",
                "deps": {dep: self.fingerprint(dep) for dep in stage.depends_on},
                "external": stage.external_inputs() if stage.external_inputs else "",
            }
            blob = json.dumps(payload, sort_keys=True, default=str).encode()
            self._fingerprints[name] = hashlib.sha256(blob).hexdigest()[:16]
        return self._fingerprints[name]

    def _state_path(self, name: str) -> Path:
        return self.workdir / STATE_DIR / f"{name.replace(':', '__').replace('/', '_')}.json"

    def recorded(self, name: str) -> dict[str, Any] | None:
        path = self._state_path(name)
        return json.loads(path.read_text()) if path.is_file() else None

    def _why_changed(self, name: str) -> str | None:
        """None when the stage is up to date, else a short human reason."""
        stage, state = self.stages[name], self.recorded(name)
        if state is None:
            return "never ran"
        missing = [o for o in stage.outputs if not (self.workdir / o).exists()]
        if missing:
            return f"outputs missing: {', '.join(missing)}"
        if state.get("fingerprint") == self.fingerprint(name):
            return None
        changes = changed_values(state.get("params", {}), stage.params)
        if changes:
            return "parameters changed: " + ", ".join(changes)
        if stage.code and state.get("code") != code_fingerprint(stage.code):
            return "code changed"
        upstream = [d for d in stage.depends_on if state.get("deps", {}).get(d) != self.fingerprint(d)]
        if upstream:
            return "inputs changed: " + ", ".join(upstream)
        return "external inputs changed"

    # ----------------------------------------------------------------- planning and running
    def plan(
        self, only: list[str] | None = None, start: str | None = None, force: bool = False
    ) -> list[Decision]:
        order = list(self.stages)
        for name in (only or []) + ([start] if start else []):
            if name not in self.stages:
                raise WorkflowError(f"unknown stage {name!r}; stages: {', '.join(order)}")
        forced_from = order.index(start) if start else None
        decisions: list[Decision] = []
        will_run: set[str] = set()
        for position, name in enumerate(order):
            if only is not None and name not in only:
                continue
            if force:
                decision = Decision(name, "run", "forced (--force)")
            elif forced_from is not None and position >= forced_from:
                decision = Decision(name, "run", f"forced (--from {start})")
            elif only is not None:
                decision = Decision(name, "run", "forced (--only)")
            else:
                reason = self._why_changed(name)
                upstream_running = [d for d in self.stages[name].depends_on if d in will_run]
                if reason is None and upstream_running:
                    reason = "inputs will change: " + ", ".join(upstream_running)
                decision = (
                    Decision(name, "skip", "unchanged") if reason is None else Decision(name, "run", reason)
                )
            if decision.action == "run":
                will_run.add(name)
            decisions.append(decision)
        return decisions

    def run(self, only: list[str] | None = None, start: str | None = None, force: bool = False) -> RunSummary:
        decisions = self.plan(only=only, start=start, force=force)
        seconds: dict[str, float] = {}
        for decision in decisions:
            if decision.action == "skip":
                log.info("skip %-22s %s", decision.stage, decision.reason)
                continue
            stage = self.stages[decision.stage]
            missing = [d for d in stage.depends_on if self.recorded(d) is None]
            if missing:
                raise WorkflowError(f"stage {stage.name!r} needs {', '.join(missing)} to have run first")
            log.info("run  %-22s %s", stage.name, decision.reason)
            began = time.perf_counter()
            stage.run(StageContext(self.workdir, self.fingerprint(stage.name)))
            seconds[stage.name] = time.perf_counter() - began
            absent = [o for o in stage.outputs if not (self.workdir / o).exists()]
            if absent:
                raise WorkflowError(f"stage {stage.name!r} finished without writing {', '.join(absent)}")
            self._record(stage)
            log.info("done %-22s %.1f s", stage.name, seconds[stage.name])
        return RunSummary(decisions, seconds)

    def _record(self, stage: Stage) -> None:
        state = {
            "fingerprint": self.fingerprint(stage.name),
            "params": stage.params,
            "code": code_fingerprint(stage.code) if stage.code else "",
            "deps": {dep: self.fingerprint(dep) for dep in stage.depends_on},
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write_text(self._state_path(stage.name), json.dumps(state, indent=2, default=str) + "\n")
