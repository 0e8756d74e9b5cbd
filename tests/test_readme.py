"""The README's commands work as written: every ``avzsl`` command, sub-command, flag, choice and ``--set`` key
in its code (blocks and inline) exists in the parsers ``workflows.cli.build_parser`` builds, and the block it
marks as a test runs on a tiny synthetic set."""

from __future__ import annotations

import argparse
import glob
import re
import shlex
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from model.config import RunConfig
from workflows.cli import build_parser, main
from workflows.config import WorkflowConfig

README = Path(__file__).resolve().parents[1] / "README.md"
RUN_MARKER = "tests/test_readme.py"
FLAG = re.compile(r"^\[*(-{1,2}[a-z][a-z0-9-]*)")
SET_MODELS = {"run": WorkflowConfig, "demo": WorkflowConfig, "train": RunConfig, "evaluate": RunConfig}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(the text just before the block, the block) for every fenced block."""
    return [(m[1], m[2]) for m in re.finditer(r"([^\n]*)\n+```[a-z]*\n(.*?)```", text, re.S)]


def commands_in(block: str) -> list[str]:
    """``avzsl ...`` lines, with backslash and indented continuation lines joined."""
    commands: list[str] = []
    for line in block.splitlines():
        if commands and (commands[-1].endswith("\\") or (line.startswith(" ") and line.strip())):
            commands[-1] = commands[-1].rstrip("\\") + " " + line.strip()
        elif line.startswith("avzsl "):
            commands.append(line.strip())
    return [re.split(r"\s{2,}(?=[a-z])", c)[0] if "  " in c else c for c in commands]


def readme_commands() -> list[str]:
    text = README.read_text()
    found = [c for _, block in code_blocks(text) for c in commands_in(block)]
    found += re.findall(r"`(avzsl [^`]+)`", text)
    return found


def subparsers_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def key_exists(model: Any, dotted: str) -> bool:
    """Whether ``a.b.c`` is a key of the config model (``dict[str, Model]`` entries accept any name)."""
    node = model
    for part in dotted.split("."):
        args = [a for a in get_args(node) if a is not type(None)]
        if get_origin(node) is dict:
            node = args[1]
            continue
        if args and get_origin(node) is not dict:
            node = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), args[0])
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            return False
        node = node.model_fields[part].annotation
    return True


def check_command(command: str, root: argparse.ArgumentParser) -> list[str]:
    """Problems of one README command: unknown sub-commands, flags, choices or ``--set`` keys."""
    tokens = shlex.split(command, comments=True)[1:]
    parsers, path = [root], []
    while tokens and subparsers_of(parsers[0]) and not tokens[0].startswith(("-", "[")):
        names = tokens.pop(0).split("|")
        choices = subparsers_of(parsers[0])
        unknown = [n for n in names if n not in choices]
        if unknown:
            return [f"{command}: no sub-command {unknown} of `avzsl {' '.join(path)}`"]
        parsers, path = [choices[n] for n in names], [*path, names[0]]
    problems = []
    pieces = [piece for token in tokens for piece in token.split("|")]
    for position, piece in enumerate(pieces):
        match = FLAG.match(piece)
        if not match:
            continue
        flag = match[1]
        for parser in parsers:
            action = parser._option_string_actions.get(flag) or root._option_string_actions.get(flag)
            if action is None:
                problems.append(f"{command}: `avzsl {' '.join(path)}` has no flag {flag}")
                continue
            following = [p.strip("[]") for p in _alternatives(tokens, piece)]
            if action.choices and following and not set(following) <= set(action.choices):
                problems.append(f"{command}: {flag} accepts {sorted(action.choices)}, not {following}")
        if flag == "--set" and position + 1 < len(pieces):
            key = pieces[position + 1].partition("=")[0]
            model = SET_MODELS.get(path[0] if path else "")
            if model is not None and key != "key" and not key_exists(model, key):
                problems.append(f"{command}: --set {key} is not a key of {model.__name__}")
    return problems


def _alternatives(tokens: list[str], flag_piece: str) -> list[str]:
    """The values written after a flag (``--backend pyav|decord`` -> [pyav, decord]); [] for placeholders."""
    for index, token in enumerate(tokens):
        if flag_piece in token.split("|") and index + 1 < len(tokens):
            values = tokens[index + 1].rstrip("]").split("|")
            return [] if any(v.isupper() or v.startswith("-") or "..." in v for v in values) else values
    return []


def test_readme_has_commands_to_check() -> None:
    commands = readme_commands()
    assert len(commands) > 20
    assert any(c.startswith("avzsl store info|verify|repair|compact") for c in commands)
    assert any(c.startswith("avzsl manifest show") for c in commands)


def test_every_readme_command_flag_and_key_exists() -> None:
    root = build_parser()
    problems = [p for command in readme_commands() for p in check_command(command, root)]
    assert problems == []


def test_the_checker_catches_what_the_readme_used_to_get_wrong() -> None:
    root = build_parser()
    assert check_command("avzsl extract --videos V --extractor vit --out O --backend decord", root)
    assert check_command("avzsl store shrink STORE", root)
    assert check_command("avzsl probe PATH --backend ffmpeg", root)
    assert check_command("avzsl run full --set videos.pth=DIR", root)
    assert check_command("avzsl run full --set train.models.daan.epoch=3", root) != []
    assert check_command("avzsl run full --set train.models.daan.epochs=3", root) == []


def all_flags(parser: argparse.ArgumentParser) -> set[str]:
    flags = set(parser._option_string_actions)
    for sub in subparsers_of(parser).values():
        flags |= all_flags(sub)
    return flags


def test_flags_named_in_the_prose_exist() -> None:
    """Inline ``--flag`` spans outside a command line exist on some command."""
    spans = re.findall(r"`(--[a-z][a-z0-9-]*)[^`]*`", README.read_text())
    assert spans and set(spans) <= all_flags(build_parser())


@pytest.mark.slow
def test_the_marked_readme_block_runs_on_tiny_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (block,) = [block for before, block in code_blocks(README.read_text()) if RUN_MARKER in before]
    monkeypatch.chdir(tmp_path)
    for command in commands_in(block):
        argv = [
            expanded
            for token in shlex.split(command)[1:]
            for expanded in (sorted(glob.glob(token)) or [token])
        ]
        assert main(argv) == 0, f"{command}\n{capsys.readouterr().err}"
    out = capsys.readouterr().out
    assert "vggish: ok 8, partial 0, failed 0" in out
    assert (tmp_path / "tiny" / "folder.parquet").is_file()
