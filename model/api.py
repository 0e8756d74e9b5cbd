"""Public API for the workflow engine and the CLI: build data, train + evaluate, re-evaluate a run.

data = load_gzsl_data(DataConfig(source="published", root=..., dataset="UCF", setting="cls"))
metrics = train_and_evaluate(TrainConfig(model="daan"), data, Path("runs/ucf-cls-daan"))

Models are built through the registry (``model/registry.py``); ``list_models()`` gives one row per
registered model (inputs, objective, default config, bundled configs) for ``avzsl models list``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from model.config import DataConfig, RunConfig, TrainConfig, preset_of
from model.data.gzsl import GZSLData
from model.data.published import load_published
from model.data.stores import InMemoryStore, load_from_stores, open_store
from model.data.synthetic import make_synthetic
from model.protocol import evaluate_model, test_metrics, train_and_evaluate
from model.registry import rows as list_models
from model.trainer import StageTrainer
from pipeline.config import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"

__all__ = [
    "DataConfig",
    "GZSLData",
    "InMemoryStore",
    "RunConfig",
    "TrainConfig",
    "bundled_configs",
    "evaluate_run",
    "format_table",
    "list_models",
    "load_from_stores",
    "load_gzsl_data",
    "load_published",
    "load_run_config",
    "make_synthetic",
    "resolve_config",
    "train_and_evaluate",
]


def load_gzsl_data(cfg: DataConfig) -> GZSLData:
    """Build the dataset from the configured source (published layout, our stores, or synthetic)."""
    if cfg.source == "synthetic":
        s = cfg.synthetic
        return make_synthetic(
            s.n_seen,
            s.n_val_unseen,
            s.n_test_unseen,
            s.videos_per_class,
            s.audio_dim,
            s.visual_dim,
            s.embedding_dim,
            noise=s.noise,
            temporal_steps=s.temporal_steps,
            seed=s.seed,
        )
    if cfg.source == "published":
        if not cfg.root:
            raise ConfigError("data.root is not set: pass --set data.root=PATH/avgzsl_benchmark_datasets")
        return load_published(
            cfg.root,
            cfg.dataset,
            cfg.setting,
            temporal=cfg.temporal,
            features_dir=cfg.features_dir,
            class_split_root=cfg.class_split_root,
            embeddings=cfg.embeddings,
            embedding_path=cfg.embedding_path,
            indexing=cfg.indexing,
        )
    missing = [k for k in ("audio_store", "visual_store", "manifest") if not getattr(cfg, k)]
    if missing:
        raise ConfigError(f"data.source=stores needs {', '.join('data.' + k for k in missing)}")
    return load_from_stores(
        open_store(cfg.audio_store),
        open_store(cfg.visual_store),
        cfg.manifest,
        temporal=cfg.temporal,
        class_split_dir=cfg.class_split_dir,
        setting=cfg.setting,
        embeddings=cfg.embeddings,
        embedding_path=cfg.embedding_path,
        name_map_csv=cfg.name_map_csv,
        indexing=cfg.indexing,
        window_tolerance_s=cfg.window_tolerance_s,
    )


def bundled_configs() -> list[str]:
    """Names of the per-benchmark configs shipped with the package (``ucf_main``, ``vggsound_cls`` ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(name_or_path: str) -> Path:
    """A config path, or the name of a bundled benchmark config."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise ConfigError(
        f"config {name_or_path!r}: no such file and not a bundled config ({', '.join(bundled_configs())})"
    )


def load_run_config(
    name_or_path: str, preset: str | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """A run config file or bundled benchmark config with ``overrides`` (``key=value``), and reproduction
    preset ``preset`` if given (``published``: as the reference code runs; ``corrected``: its defects
    fixed; docs/avca.md). The preset follows an overridden ``train.model``; an override wins over it."""
    cfg = RunConfig.from_yaml(resolve_config(name_or_path), overrides)
    if not preset:
        return cfg
    cfg = cfg.with_preset(preset)
    return cfg.with_overrides(overrides) if overrides else cfg


def evaluate_run(run_dir: str | Path, data: GZSLData | None = None) -> dict[str, Any]:
    """Re-evaluate a finished run's stage-2 model at its stored test beta, on its own or other data."""
    run = Path(run_dir)
    metrics_path, final = run / "metrics.json", run / "stage2" / "final.pt"
    if not metrics_path.is_file():
        raise ConfigError(f"{run}: no metrics.json; run `avzsl train` to completion first")
    metrics = json.loads(metrics_path.read_text())
    if data is None:
        return metrics
    if not final.is_file():
        raise ConfigError(f"{run}: no stage2/final.pt (a stage-1-only run cannot be re-tested)")
    cfg = TrainConfig.from_yaml(run / "config.yaml")
    trainer = StageTrainer(cfg, data, "train_val", 2)
    trainer.model.load_state_dict(torch.load(final, map_location="cpu", weights_only=True))
    beta = metrics["beta"]["beta_test"]
    return {
        "model": cfg.model,
        "preset": preset_of(cfg, data.indexing),
        "data": data.summary(),
        "beta": {"beta_test": beta},
        **test_metrics(evaluate_model(trainer, data, beta), data),
        "lost_classes": data.lost_classes,
        "notes": list(data.notes),
    }


def format_table(metrics: dict[str, Any]) -> str:
    """The S / U / HM / ZSL table (percent) of a metrics dict, plus chance levels."""
    key = "test" if "test" in metrics else None
    row = metrics[key] if key else metrics["stage1"]["val"]
    where = "test" if key else "val (stage 1 only)"
    preset = metrics.get("preset", "custom")
    lines = [
        f"{'model':<8} {'preset':<10} {'split':<20} {'S':>7} {'U':>7} {'HM':>7} {'ZSL':>7}  beta",
        f"{metrics['model']:<8} {preset:<10} {where:<20} {row['S']:7.2f} {row['U']:7.2f} {row['HM']:7.2f}"
        f" {row['ZSL']:7.2f}  {metrics['beta'].get('beta_test', row['beta']):.3g}",
    ]
    if "chance" in metrics:
        c = metrics["chance"]
        lines.append(f"{'chance':<8} {'':<10} {'':<20} {c['S']:7.2f} {c['U']:7.2f} {'':>7} {c['ZSL']:7.2f}")
    lines += [f"note: {note}" for note in metrics.get("notes", [])]
    return "\n".join(lines)
