"""The packages depend one way: ``workflows`` -> ``extractors``, ``model`` -> ``pipeline`` (docs/architecture.md).

An AST walk over every module, function-local imports included, plus module paths written as strings
(``"extractors.registry:build_extractor"``), which hide a dependency from import tools.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("pipeline", "extractors", "model", "workflows")
# package -> the packages of ours it may import
ALLOWED = {
    "pipeline": {"pipeline"},
    "extractors": {"extractors", "pipeline"},
    "model": {"model", "pipeline"},
    "workflows": {"workflows", "pipeline", "extractors", "model"},
}
MODULE_STRING = re.compile(rf"^({'|'.join(OURS)})(\.\w+)+(:\w+)?$")


def is_module_path(text: str) -> bool:
    """``pkg.mod`` or ``pkg.mod:attr`` naming one of our modules (not a file name like ``model.safetensors``)."""
    if not MODULE_STRING.match(text):
        return False
    parts = text.partition(":")[0].split(".")
    return (ROOT.joinpath(*parts).with_suffix(".py")).is_file() or (
        ROOT.joinpath(*parts) / "__init__.py"
    ).is_file()


def imported_packages(source: str) -> list[tuple[int, str]]:
    """(line, top-level package of ours) for every import and module-path string in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and is_module_path(node.value):
            names = [node.value]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in OURS]
    return found


def wrong_way_imports(package: str) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, target in imported_packages(path.read_text())
        if target not in ALLOWED[package]
    ]


@pytest.mark.parametrize("package", OURS)
def test_imports_run_one_way(package: str) -> None:
    assert wrong_way_imports(package) == []


def test_the_check_sees_local_imports_and_module_strings() -> None:
    source = 'def f():\n    from workflows.cli import main\n\nRUNNER = "extractors.runner:extract_videos"\n'
    assert imported_packages(source) == [(2, "workflows"), (4, "extractors")]
    assert imported_packages('name = "model.safetensors"\nfrom pipeline import config\n') == [(2, "pipeline")]
