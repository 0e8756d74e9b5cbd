"""Results report: a markdown and a self-contained HTML page with PNG figures that open anywhere.

A run directory (written by ``model.api.train_and_evaluate``) holds ``metrics.json`` and ``epochs.jsonl``.
The report shows the S/U/HM/ZSL table with chance levels, training curves, S and U against the calibration beta,
per-class accuracy, and the modality contribution (CSGM coefficients) over training; several runs are compared
side by side in one table.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.config import atomic_write_text  # noqa: E402

METRIC_KEYS = ("S", "U", "HM", "ZSL")


@dataclass
class RunResult:
    """What the report needs from one training run, in percent."""

    name: str
    metrics: dict[str, float]
    chance: dict[str, float]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    beta_curve: list[dict[str, float]] = field(default_factory=list)
    per_class: list[dict[str, Any]] = field(default_factory=list)  # {"class", "accuracy", "seen"}
    notes: list[str] = field(default_factory=list)


def load_run(run_dir: str | Path, name: str | None = None) -> RunResult:
    """Read a run directory written by ``model.api.train_and_evaluate``; a missing ``metrics.json`` is an error."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no metrics.json; train and evaluate first (avzsl train --out {run_dir})"
        )
    data = json.loads(metrics_path.read_text())
    if "test" not in data:
        raise ValueError(
            f"{metrics_path}: no test results (a stage-1-only run); run both stages to report it"
        )
    epochs_path = run_dir / "epochs.jsonl"
    records = (
        [json.loads(line) for line in epochs_path.read_text().splitlines() if line.strip()]
        if epochs_path.is_file()
        else []
    )
    chance = {k: float(v) for k, v in data.get("chance", {}).items()}
    if "S" in chance and "U" in chance and "HM" not in chance:
        chance["HM"] = 2 * chance["S"] * chance["U"] / (chance["S"] + chance["U"])
    per_class = data.get("per_class", {})
    seen = set(per_class.get("seen", []))
    notes = list(data.get("notes", [])) + ([data["note"]] if data.get("note") else [])
    return RunResult(
        name=name or run_dir.name,
        metrics={k: float(data["test"][k]) for k in METRIC_KEYS},
        chance=chance,
        # stage-2 "validation" is computed on its own training data (TCaF#9): curves show stage 1 only
        epochs=[r for r in records if r.get("stage", "stage1") == "stage1"],
        beta_curve=[
            {k: 100 * v if k != "beta" else v for k, v in p.items()}
            for p in data.get("beta", {}).get("val_curve", [])
        ],
        per_class=[
            {"class": c, "accuracy": a, "seen": c in seen} for c, a in per_class.get("gzsl", {}).items()
        ],
        notes=notes,
    )


def results_table(runs: list[RunResult]) -> str:
    """Markdown table of S/U/HM/ZSL (percent) with the chance level of the first run's split."""
    header = "| run | " + " | ".join(METRIC_KEYS) + " |\n|---|" + "---|" * len(METRIC_KEYS) + "\n"
    rows = [
        "| " + r.name + " | " + " | ".join(f"{r.metrics[k]:.2f}" for k in METRIC_KEYS) + " |" for r in runs
    ]
    chance = runs[0].chance if runs else {}
    if chance:
        rows.append(
            "| *chance* | " + " | ".join(f"{chance.get(k, float('nan')):.2f}" for k in METRIC_KEYS) + " |"
        )
    return header + "\n".join(rows) + "\n"


def _figure_training(runs: list[RunResult], path: Path) -> Path | None:
    keys = sorted(
        {
            k
            for r in runs
            for e in r.epochs
            for k, v in e.items()
            if k != "epoch" and isinstance(v, int | float)
        }
    )
    curves = [k for k in keys if not k.startswith("csgm")]
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3), squeeze=False)
    for ax, key in zip(axes[0], curves, strict=True):
        for run in runs:
            points = [(e["epoch"], e[key]) for e in run.epochs if key in e]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=run.name)
        ax.set_title(key)
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def _figure_csgm(runs: list[RunResult], path: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(5, 3))
    drawn = False
    for run in runs:
        for key in sorted({k for e in run.epochs for k in e if k.startswith("csgm")}):
            points = [(e["epoch"], e[key]) for e in run.epochs if key in e]
            ax.plot(*zip(*points, strict=True), marker=".", label=f"{run.name}: {key}")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_title("modality contribution (CSGM coefficients)")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _figure_beta(run: RunResult, path: Path) -> Path | None:
    if not run.beta_curve:
        return None
    fig, ax = plt.subplots(figsize=(5, 3))
    betas = [p["beta"] for p in run.beta_curve]
    for key in ("S", "U", "HM"):
        ax.plot(betas, [p[key] for p in run.beta_curve], marker=".", label=key)
    ax.set_title(f"{run.name}: validation S/U/HM against calibration beta")
    ax.set_xlabel("beta")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _figure_per_class(run: RunResult, path: Path) -> Path | None:
    if not run.per_class:
        return None
    items = sorted(run.per_class, key=lambda c: (not c.get("seen", False), str(c["class"])))
    fig, ax = plt.subplots(figsize=(max(5, 0.25 * len(items)), 3.2))
    colours = ["tab:blue" if c.get("seen") else "tab:orange" for c in items]
    ax.bar(range(len(items)), [c["accuracy"] for c in items], color=colours)
    ax.set_xticks(range(len(items)), [str(c["class"]) for c in items], rotation=90, fontsize=6)
    ax.set_title(f"{run.name}: per-class test accuracy (blue seen, orange unseen)")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(runs: list[RunResult], out_dir: str | Path, title: str = "avzsl results") -> dict[str, Path]:
    """Write ``report.md`` (figures beside it) and a single-file ``report.html`` (figures inlined)."""
    if not runs:
        raise ValueError("write_report needs at least one run")
    out = Path(out_dir)
    figures: list[tuple[str, Path]] = []
    for caption, made in (
        ("Training curves", _figure_training(runs, out / "figures" / "training.png")),
        ("Modality contribution over training", _figure_csgm(runs, out / "figures" / "csgm.png")),
    ):
        if made:
            figures.append((caption, made))
    for index, run in enumerate(runs):
        for caption, made in (
            (f"{run.name}: S and U against beta", _figure_beta(run, out / "figures" / f"beta_{index}.png")),
            (
                f"{run.name}: per-class accuracy",
                _figure_per_class(run, out / "figures" / f"per_class_{index}.png"),
            ),
        ):
            if made:
                figures.append((caption, made))
    notes = [f"- {run.name}: {note}" for run in runs for note in run.notes]
    table = results_table(runs)
    markdown = [
        f"# {title}",
        "",
        "Test results in percent (S, U: per-class mean accuracy on seen / unseen test "
        "classes with all classes as candidates; HM: their harmonic mean; ZSL: unseen classes only).",
        "",
        table,
    ]
    if notes:
        markdown += ["", "Notes:", *notes]
    for caption, path in figures:
        markdown += ["", f"## {caption}", "", f"![{caption}]({path.relative_to(out).as_posix()})"]
    atomic_write_text(out / "report.md", "\n".join(markdown) + "\n")
    atomic_write_text(out / "report.html", _html(title, table, notes, figures))
    return {"markdown": out / "report.md", "html": out / "report.html"}


def _html(title: str, table_markdown: str, notes: list[str], figures: list[tuple[str, Path]]) -> str:
    rows = [
        line.strip("|").split("|")
        for line in table_markdown.strip().splitlines()
        if not line.startswith("|---")
    ]
    cells = "".join(
        "<tr>"
        + "".join(
            f"<{'th' if i == 0 else 'td'}>{html.escape(c.strip())}</{'th' if i == 0 else 'td'}>" for c in row
        )
        + "</tr>"
        for i, row in enumerate(rows)
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><table>{cells}</table>",
    ]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n[2:])}</li>" for n in notes) + "</ul>")
    for caption, path in figures:
        encoded = base64.b64encode(path.read_bytes()).decode()
        parts.append(
            f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' src='data:image/png;base64,{encoded}'>"
        )
    parts.append("</body></html>")
    return "".join(parts)
