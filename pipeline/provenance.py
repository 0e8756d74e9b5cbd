"""What produced an output: resolved config and library versions, written beside every result."""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.config import ConfigModel, atomic_write_text

TRACKED_PACKAGES = (
    "avzsl",
    "torch",
    "torchvision",
    "torchaudio",
    "av",
    "decord",
    "dask",
    "distributed",
    "transformers",
    "numpy",
)


def library_versions() -> dict[str, str]:
    """Versions of python and the libraries whose behaviour shapes our outputs."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_run_info(
    out_dir: str | Path, config: ConfigModel | dict[str, Any] | None, command: str = ""
) -> Path:
    """Write ``config.yaml`` (resolved) and ``versions.json`` into ``out_dir``; returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config is not None:
        if isinstance(config, ConfigModel):
            config.to_yaml(out / "config.yaml")
        else:
            import yaml

            atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    info = {
        "versions": library_versions(),
        "command": command or " ".join(sys.argv),
        "platform": platform.platform(),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(out / "versions.json", json.dumps(info, indent=2) + "\n")
    return out
