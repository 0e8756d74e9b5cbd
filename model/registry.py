"""Model registry: each model module registers a builder with ``@register(ModelSpec(...))``.

Like the extractor registry: the trainer, the protocol and ``avzsl models list`` only ever go through
:func:`build_model` / :func:`get_spec` / :func:`rows`. Adding a model of the AVCA family (pairs of videos,
AVCA's composite loss, ``fuse`` / ``heads`` / ``embed`` / ``embed_classes``) is one module listed in
``_MODULES`` plus a config in ``model/configs/``; a model with its own objective also names it in its spec.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from torch import nn

if TYPE_CHECKING:
    from model.config import TrainConfig
    from model.data.gzsl import GZSLData

_MODULES = ("model.avca", "model.daan", "model.tcaf")
CONFIG_DIR = Path(__file__).parent / "configs"

InputKind = Literal["averaged", "temporal"]
Builder = Callable[["TrainConfig", "GZSLData"], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """What the trainer and ``avzsl models list`` need to know about a model, before building it.

    ``objective``: ``pairs`` = positive/negative pairs through ``fuse`` and ``heads`` with AVCA's composite
    loss (the AVCA family); ``classes`` = positives only, the model's own ``collate`` / ``loss`` (TCaF).
    ``config_sections``: the ``TrainConfig`` sections holding its hyper-parameters.
    """

    name: str
    summary: str
    inputs: tuple[InputKind, ...]
    objective: Literal["pairs", "classes"]
    decision_rules: tuple[str, ...]
    config_sections: tuple[str, ...]
    inputs_note: str = ""


@dataclass(frozen=True)
class _Entry:
    spec: ModelSpec
    builder: Builder


_REGISTRY: dict[str, _Entry] = {}


def register(spec: ModelSpec) -> Callable[[Builder], Builder]:
    """Decorator for a builder ``(TrainConfig, GZSLData) -> nn.Module``."""

    def wrap(builder: Builder) -> Builder:
        if spec.name in _REGISTRY and _REGISTRY[spec.name].builder is not builder:
            raise ValueError(f"model {spec.name!r} is registered twice")
        _REGISTRY[spec.name] = _Entry(spec, builder)
        return builder

    return wrap


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name].spec


def build_model(cfg: TrainConfig, data: GZSLData) -> nn.Module:
    """The configured model for this data; refuses a feature kind the model does not take."""
    spec = get_spec(cfg.model)
    kind: InputKind = "temporal" if data.temporal else "averaged"
    if kind not in spec.inputs:
        wanted = " or ".join(spec.inputs)
        raise ValueError(
            f"model {spec.name} takes {wanted} features but the data ({data.source}) is {kind}; "
            f"set data.temporal={str(not data.temporal).lower()} or choose another model"
        )
    return _REGISTRY[spec.name].builder(cfg, data)


def rows() -> list[dict[str, Any]]:
    """One row per model for ``avzsl models list``: its inputs, objective, default config and bundled configs."""
    from model.config import TrainConfig

    defaults = TrainConfig().to_dict()
    bundled = _bundled_by_model()
    out = []
    for name in names():
        spec = _REGISTRY[name].spec
        out.append(
            {
                "name": name,
                "summary": spec.summary,
                "inputs": " or ".join(spec.inputs) + (f" ({spec.inputs_note})" if spec.inputs_note else ""),
                "objective": spec.objective,
                "decision_rules": list(spec.decision_rules),
                "config": {section: defaults[section] for section in spec.config_sections},
                "bundled_configs": bundled.get(name, []),
            }
        )
    return out


def _bundled_by_model() -> dict[str, list[str]]:
    """Bundled config names per model (``train.model`` of each yaml in model/configs)."""
    found: dict[str, list[str]] = {}
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        model = (yaml.safe_load(path.read_text()) or {}).get("train", {}).get("model", "avca")
        found.setdefault(model, []).append(path.stem)
    return found
