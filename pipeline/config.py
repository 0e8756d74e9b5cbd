"""One typed configuration system: pydantic v2 models, YAML in and out, errors that name the bad key.

Every config model of the project derives from :class:`ConfigModel`, so unknown keys are rejected
(a typo never silently falls back to a default) and every model round-trips through YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the source, the key and the fix."""


class ConfigModel(BaseModel):
    """Base of every avzsl config: strict keys, validated assignment, YAML serialisable."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, source)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> Self:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

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
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=10")
            set_dotted(data, key.strip(), yaml.safe_load(raw))
        return type(self).from_dict(data, source="overrides " + " ".join(overrides))


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``dotted='a.b'``, refusing keys that do not exist."""
    parts = dotted.split(".")
    node = data
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth]) or "<top level>"
            allowed = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
            raise ConfigError(f"unknown key {dotted!r}: {part!r} is not in {where}; allowed: {allowed}")
        if depth == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def format_validation_error(err: ValidationError, source: str) -> str:
    """Render pydantic errors as ``source: key.path: message`` lines with the allowed values."""
    lines = [f"{source}: invalid configuration ({err.error_count()} problem(s))"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<top level>"
        message = item["msg"]
        ctx = item.get("ctx") or {}
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the documented keys of this section)"
        elif "expected" in ctx:
            message = f"{message}; allowed: {ctx['expected']}"
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {key}: {message}{got_text}")
    return "\n".join(lines)


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
