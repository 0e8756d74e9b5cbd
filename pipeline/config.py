"""One typed configuration system: pydantic v2 models, YAML in and out, errors that name the bad key.

Every config model of the project derives from :class:`ConfigModel`, so unknown keys are rejected
(a typo never silently falls back to a default) and every model round-trips through YAML.
"""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Any, Self, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used; the message names the source, the key and the fix."""


class ConfigModel(BaseModel):
    """Base of every avzsl config: strict keys, validated assignment, YAML serialisable."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, source, cls)) from None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> Self:
        """Read a YAML file; ``overrides`` (``key.sub=value``) apply to the file before it is validated, so
        a key the file leaves empty can be given on the command line (``--set videos.path=DIR``)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        if not overrides:
            return cls.from_dict(data, source=str(path))
        for key, value in parse_overrides(overrides):
            set_dotted(data, key, value, create=True)
        return cls.from_dict(data, source=f"{path} with " + " ".join(f"--set {o}" for o in overrides))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    def with_overrides(self, overrides: list[str]) -> Self:
        """Apply ``key.sub=value`` overrides (values parsed as YAML) and re-validate."""
        data = self.to_dict()
        for key, value in parse_overrides(overrides):
            set_dotted(data, key, value)
        return type(self).from_dict(data, source=" ".join(f"--set {o}" for o in overrides))


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["a.b=1", ...]`` -> ``[("a.b", 1), ...]``, values parsed as YAML."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=10")
        try:
            parsed.append((key.strip(), yaml.safe_load(raw)))
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({err.problem})") from None
    return parsed


def set_dotted(data: dict[str, Any], dotted: str, value: Any, create: bool = False) -> None:
    """Set ``data['a']['b'] = value`` for ``dotted='a.b'``.

    On a validated config's dump every key exists, so an absent one is refused here with the allowed keys.
    With ``create`` (a raw YAML file, which may leave sections out) absent sections are created and the
    model's validation then names any key it does not know.
    """
    parts = dotted.split(".")
    node = data
    for depth, part in enumerate(parts):
        if create and isinstance(node, dict) and node.get(part) is None and depth < len(parts) - 1:
            node[part] = {}
        if not isinstance(node, dict) or (part not in node and not create):
            where = ".".join(parts[:depth]) or "<top level>"
            allowed = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
            raise ConfigError(f"unknown key {dotted!r}: {part!r} is not in {where}; allowed: {allowed}")
        if depth == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    """Render pydantic errors as ``source: key.path: message`` with the allowed values or keys.

    Keys are dotted paths as written in the YAML file or after ``--set``. One problem is one line.
    """
    problems = []
    for item in err.errors():
        loc = tuple(str(p) for p in item["loc"])
        key = ".".join(loc)
        message = item["msg"]
        ctx = item.get("ctx") or {}
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1]) if model else None
            message = "unknown key (check the spelling" + (
                f"; allowed: {', '.join(allowed)})" if allowed else ")"
            )
            got_text = ""
        elif item["type"] == "value_error" and "error" in ctx:
            message, got_text = str(ctx["error"]), ""  # our validators' messages name their keys
            key = "" if not key or message.startswith(key) or f"{key}." in message else key
        elif "expected" in ctx and str(ctx["expected"]) not in message:
            message = f"{message}; allowed: {ctx['expected']}"
        problems.append(f"{key}: {message}{got_text}" if key else f"{message}{got_text}")
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return "\n".join([f"{source}: {len(problems)} problems", *(f"  {p}" for p in problems)])


def _allowed_keys(model: type[BaseModel], loc: tuple[str, ...]) -> list[str] | None:
    """The keys the section at ``loc`` accepts, following nested models and ``dict[str, Model]`` values."""
    node: Any = model
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            node = _unwrap_optional(node.model_fields[part].annotation)
        elif get_origin(node) is dict:  # ``models: dict[str, TrainConfig]``: ``part`` is an entry's name
            node = _unwrap_optional(get_args(node)[1])
        else:
            return None
    if isinstance(node, type) and issubclass(node, BaseModel):
        return sorted(node.model_fields)
    return None


def _unwrap_optional(annotation: Any) -> Any:
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if get_origin(annotation) in (Union, UnionType) and len(args) == 1 else annotation


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that readers see the old or the new content, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{_unique_suffix()}")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:  # a failed write (a full disk) leaves no temp file behind
        tmp.unlink(missing_ok=True)


def _unique_suffix() -> str:
    import os
    import uuid

    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
