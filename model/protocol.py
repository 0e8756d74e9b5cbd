"""The two-stage AV-GZSL protocol shared by every model (docs/benchmark.md).

Stage 1 trains on ``train`` and evaluates ``val`` every epoch (beta sweep, first maximiser); the best epoch
is the one with the highest val HM. Stage 2 re-initialises, trains on ``train_val`` for best_epoch + 1
epochs, and is tested with beta = mean of the three val betas of the best stage-1 model + 1e-10 (AVCA's
audio/video/both keys all return the visual result, so the three coincide). Every epoch writes an atomic
checkpoint; a run restarted on the same ``out_dir`` resumes from the last one and ends with the same
numbers as an uninterrupted run (all randomness is re-seeded per epoch).

Outputs: config.yaml + versions.json, stage{1,2}/checkpoints/, stage1/best.pt, stage2/final.pt,
epochs.jsonl (one line per epoch, CSGM coefficients included), metrics.json.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from model.config import TrainConfig, preset_of
from model.data.gzsl import GZSLData
from model.metrics import GZSLScores, gzsl_scores
from model.trainer import StageTrainer, distances
from pipeline.config import ConfigError, atomic_write_text
from pipeline.provenance import write_run_info

log = logging.getLogger(__name__)

EpochCallback = Callable[[str, int, dict[str, Any]], None]
BETA_OFFSET = 1e-10


def train_and_evaluate(
    config: TrainConfig, data: GZSLData, out_dir: str | Path, callback: EpochCallback | None = None
) -> dict[str, Any]:
    """Run (or resume) the whole protocol; returns the content written to metrics.json."""
    threads = torch.get_num_threads()
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _protocol(config, data, Path(out_dir), callback)
    finally:
        torch.set_num_threads(threads)


def _protocol(
    config: TrainConfig, data: GZSLData, out: Path, callback: EpochCallback | None
) -> dict[str, Any]:
    _check_resumable(out, config)
    write_run_info(out, config)
    atomic_write_text(out / "data.json", json.dumps(data.summary(), indent=2) + "\n")
    history: dict[str, list[dict[str, Any]]] = {"stage1": [], "stage2": []}

    s1 = _run_stage("stage1", 1, config, data, "train", config.epochs, out, history, callback)
    best_epoch = s1["best_epoch"]
    model_a = StageTrainer(config, data, "train", 1)
    model_a.model.load_state_dict(_load(out / "stage1" / "best.pt"))
    val_scores, val_curve = model_a.evaluate(data.splits["val"])
    metrics: dict[str, Any] = {
        "model": config.model,
        "preset": preset_of(config, data.indexing),
        "data": data.summary(),
        "units": "percent (per-class mean accuracy x 100)",
        "stage1": {"best_epoch": best_epoch, "epochs": config.epochs, "val": _table(val_scores)},
        "beta": {"grid": list(config.beta_grid), "val_curve": val_curve, "beta_val": val_scores.beta},
        "dropped_videos": data.dropped,
        "lost_classes": data.lost_classes,
        "notes": list(data.notes),
    }
    if note := beta_at_sweep_end(config.beta_grid, val_scores.beta):
        metrics["notes"].append(note)
    if config.stages == "stage1":
        metrics["notes"].append("stage 1 only: numbers are validation numbers")
        _write_json(out / "metrics.json", metrics)
        return metrics

    lr_replay = [r["lr"] for r in history["stage1"]] if config.stage2_lr_schedule == "replay" else None
    _run_stage("stage2", 2, config, data, "train_val", best_epoch + 1, out, history, callback, lr_replay)
    model_b = StageTrainer(config, data, "train_val", 2)
    model_b.model.load_state_dict(_load(out / "stage2" / "final.pt"))
    three = {"audio": val_scores.beta, "video": val_scores.beta, "both": val_scores.beta}
    beta_test = sum(three.values()) / 3 + BETA_OFFSET
    test_scores = evaluate_model(model_b, data, beta_test)
    metrics["beta"].update({"val_keys": three, "beta_test": beta_test})
    metrics.update(test_metrics(test_scores, data))
    _write_json(out / "metrics.json", metrics)
    return metrics


def beta_at_sweep_end(grid: tuple[float, float, int], beta: float) -> str | None:
    """A note when validation chose the sweep's largest beta: HM may still rise beyond it, so the sweep (the
    published one, 0 to 3) decided the calibration rather than the data."""
    lo, hi, count = grid
    if count < 2 or beta < hi:
        return None
    return (
        f"calibration chose beta {beta:g}, the largest of the sweep {lo:g}..{hi:g}: validation HM may rise "
        f"beyond it; widen the sweep (train.beta_grid, e.g. [{lo:g}, {2 * hi:g}, {2 * count - 1}]) to check"
    )


def evaluate_model(trainer: StageTrainer, data: GZSLData, beta: float) -> GZSLScores:
    """Test-split scores at a fixed beta."""
    split = data.splits["test"]
    dist = distances(
        trainer.model,
        split.to(trainer.device),
        trainer.class_emb,
        trainer.cfg.decision_rule,
        trainer.cfg.eval_batch_size,
    )
    return gzsl_scores(dist, split.labels.to(trainer.device), split.seen, split.unseen, beta)


def test_metrics(scores: GZSLScores, data: GZSLData) -> dict[str, Any]:
    split = data.splits["test"]
    names = data.class_names
    return {
        "test": _table(scores),
        "per_class": {
            "gzsl": {names[c]: 100 * r for c, r in sorted(scores.per_class.items())},
            "zsl": {names[c]: 100 * r for c, r in sorted(scores.per_class_zsl.items())},
            "seen": [names[c] for c in split.seen],
            "unseen": [names[c] for c in split.unseen],
        },
        "chance": {
            "S": 100 / len(split.classes),
            "U": 100 / len(split.classes),
            "ZSL": 100 / max(len(split.unseen), 1),
        },
    }


def _table(s: GZSLScores) -> dict[str, float]:
    return {"S": 100 * s.seen, "U": 100 * s.unseen, "HM": 100 * s.hm, "ZSL": 100 * s.zsl, "beta": s.beta}


def _run_stage(
    name: str,
    index: int,
    cfg: TrainConfig,
    data: GZSLData,
    split: str,
    epochs: int,
    out: Path,
    history: dict[str, list[dict[str, Any]]],
    callback: EpochCallback | None,
    lr_replay: list[float] | None = None,
) -> dict[str, Any]:
    stage_dir = out / name
    ckpt_dir = stage_dir / "checkpoints"
    done = stage_dir / "done.json"
    if done.is_file():
        summary = json.loads(done.read_text())
        history[name] = summary["history"]
        return summary
    trainer = StageTrainer(cfg, data, split, index)
    start, best = 0, {"epoch": -1, "hm": -1.0}
    last = _latest_checkpoint(ckpt_dir)
    if last is not None:
        state = torch.load(last, map_location=trainer.device, weights_only=True)
        trainer.load_state_dict(state["trainer"])
        start, best, history[name] = state["epoch"] + 1, state["best"], state["history"]
        log.info("%s: resuming after epoch %d from %s", name, state["epoch"], last)
    for epoch in range(start, epochs):
        if lr_replay is not None:
            for group in trainer.optimizer.param_groups:
                group["lr"] = lr_replay[min(epoch, len(lr_replay) - 1)]
        record: dict[str, Any] = {"stage": name, "epoch": epoch, **trainer.train_epoch(epoch)}
        val, _ = trainer.evaluate(data.splits["val"])
        record.update({f"val_{k}": v for k, v in _table(val).items()})
        if name == "stage2":
            record["val_note"] = "val is training data in stage 2 (TCaF#9): drives the LR schedule only"
        if lr_replay is None and cfg.lr_scheduler:
            trainer.scheduler.step(val.hm)
        if name == "stage1" and val.hm > best["hm"]:
            best = {"epoch": epoch, "hm": val.hm}
            _save(trainer.model.state_dict(), stage_dir / "best.pt")
        history[name].append(record)
        _save(
            {"trainer": trainer.state_dict(), "epoch": epoch, "best": best, "history": history[name]},
            ckpt_dir / f"epoch_{epoch:03d}.pt",
        )
        _prune(ckpt_dir, cfg.keep_checkpoints)
        _write_epochs(out, history)
        log.info(
            "%s epoch %d: loss %.4f val S %.2f U %.2f HM %.2f",
            name,
            epoch,
            record.get("loss", 0.0),
            record["val_S"],
            record["val_U"],
            record["val_HM"],
        )
        if callback is not None:
            callback(name, epoch, record)
    if name == "stage2":
        _save(trainer.model.state_dict(), stage_dir / "final.pt")
    summary = {"best_epoch": best["epoch"], "best_val_hm": best["hm"], "history": history[name]}
    _write_json(done, summary)
    return summary


def _check_resumable(out: Path, cfg: TrainConfig) -> None:
    previous = out / "config.yaml"
    if previous.is_file():
        old = yaml.safe_load(previous.read_text())
        if old != cfg.to_dict():
            raise ConfigError(
                f"{out}: holds a run with a different config.yaml; use another --out to start afresh"
            )


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = sorted(ckpt_dir.glob("epoch_*.pt")) if ckpt_dir.is_dir() else []
    return found[-1] if found else None


def _prune(ckpt_dir: Path, keep: int) -> None:
    for old in sorted(ckpt_dir.glob("epoch_*.pt"))[:-keep]:
        old.unlink()


def _save(obj: Any, path: Path) -> None:
    """torch.save atomically (temp + rename) so a crash never leaves a torn checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    tmp.replace(path)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _write_epochs(out: Path, history: dict[str, list[dict[str, Any]]]) -> None:
    lines = [json.dumps(r) for stage in ("stage1", "stage2") for r in history[stage]]
    atomic_write_text(out / "epochs.jsonl", "\n".join(lines) + "\n")


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
