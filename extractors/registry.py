"""Extractor registry: ``@register`` a builder, then ``build_extractor(name, weights=...)`` anywhere.

Like torchvision's ``get_model``: each model module registers one builder and a function giving its default
spec (for ``avzsl extractors list``); adding a model is one small module listed in ``_MODULES``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from extractors.base import Extractor
from extractors.spec import MODES, ExtractorSpec
from pipeline.config import ConfigError

_MODULES = (
    "extractors.c3d",
    "extractors.vggish",
    "extractors.vit",
    "extractors.ast",
    "extractors.hf_generic",
)


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., Extractor]
    default_spec: Callable[[str], ExtractorSpec]  # mode -> spec without weights


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, default_spec: Callable[[str], ExtractorSpec]):
    """Decorator for a builder ``(weights, device, mode, **options) -> Extractor``."""

    def wrap(builder: Callable[..., Extractor]) -> Callable[..., Extractor]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"extractor {name!r} is registered twice")
        _REGISTRY[name] = _Entry(builder, default_spec)
        return builder

    return wrap


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_extractor(
    name: str, *, weights: str | Path, device: str = "cpu", mode: str = "clean", **options
) -> Extractor:
    """Build a registered extractor; ``weights`` is a local path/model folder or the explicit ``"random"``."""
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown extractor {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    if weights is None or str(weights) == "":
        raise ValueError(
            f"{name}: weights must be a local path/model folder or 'random' (explicit random init)"
        )
    return _REGISTRY[name].builder(weights=weights, device=device, mode=mode, **options)


def builder_options(name: str) -> set[str] | None:
    """The options (``--set extract.visual.options``) a registered builder accepts; None if any are."""
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown extractor {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    params = inspect.signature(_REGISTRY[name].builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params} - {"weights", "device", "mode"}


def list_specs(mode: str | None = None) -> list[ExtractorSpec]:
    """Default specs of every registered extractor (both modes unless one is named); no weights loaded."""
    _load_all()
    modes = (mode,) if mode else MODES
    return [_REGISTRY[name].default_spec(m) for name in sorted(_REGISTRY) for m in modes]
