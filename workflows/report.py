"""Results report: a markdown and a self-contained HTML page with PNG figures that open anywhere.

A run directory (written by ``model.api.train_and_evaluate``) holds ``metrics.json`` and ``epochs.jsonl``.
The report shows the S/U/HM/ZSL table with chance levels and the notes every result must carry, then figures
sized to be read at 100 % zoom: the training losses on one grid with a shared epoch axis, validation S/U/HM
per epoch for both stages, the CSGM coefficient of each modality per epoch, the beta calibration curve, and
per-class test accuracy sorted, seen and unseen apart. Several runs are compared side by side.
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
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pipeline.config import ConfigError, atomic_write_text  # noqa: E402
from workflows.stages import LATEST  # noqa: E402

METRIC_KEYS = ("S", "U", "HM", "ZSL")
MAX_COLUMNS = 4
PANEL = (3.4, 2.5)  # inches per panel; figures are saved at DPI, so a panel is 340 x 250 px
DPI = 100
BAR_HEIGHT = 0.22  # inches per class in the per-class figure: 9-pt labels without overlap
STYLE = {"font.size": 10, "axes.titlesize": 10.5, "legend.fontsize": 9, "figure.titlesize": 12}
STAGES = {"stage1": ("stage 1", "-"), "stage2": ("stage 2", "--")}
MODALITY_COLOURS = {"audio": "tab:orange", "visual": "tab:blue"}
# epochs.jsonl keys drawn as training curves, in this order, with their panel titles (model/losses.py)
CURVES = {
    "loss": "loss (optimised)",
    "l_rec": "l_rec: reconstruction",
    "l_ct": "l_ct: cross-modal triplet",
    "l_w": "l_w: embedding triplets",
    "l_t": "l_t: theta triplets",
    "l_r": "l_r: feature reconstruction",
    "l_align": "l_align: audio-visual alignment",
    "lr": "learning rate",
}
CSGM_KEYS = {"audio": "k_audio", "visual": "k_visual"}  # mean gradient scale of each encoder (model/csgm.py)


@dataclass
class RunResult:
    """What the report needs from one training run, in percent."""

    name: str
    metrics: dict[str, float]
    chance: dict[str, float]
    epochs: list[dict[str, Any]] = field(default_factory=list)  # both stages, each record has "stage"
    beta_curve: list[dict[str, float]] = field(default_factory=list)
    beta_chosen: float | None = None  # the validation beta the test uses
    per_class: list[dict[str, Any]] = field(default_factory=list)  # {"class", "accuracy", "seen"}
    notes: list[str] = field(default_factory=list)
    preset: str = "-"  # the reproduction preset it ran with (published, corrected, custom; docs/avca.md)


def run_folder(path: str | Path) -> Path:
    """A run folder, or a folder of runs (a workflow's ``runs/<model>``), which means its ``latest`` run."""
    path = Path(path)
    if not (path / "metrics.json").is_file() and (path / LATEST / "metrics.json").is_file():
        return path / LATEST
    return path


def load_run(run_dir: str | Path, name: str | None = None) -> RunResult:
    """Read a run written by ``model.api.train_and_evaluate`` (or a workflow's ``runs/<model>``)."""
    given = Path(run_dir)
    run_dir = run_folder(given)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise ConfigError(f"{given}: no metrics.json; train and evaluate first (avzsl train --out {given})")
    data = json.loads(metrics_path.read_text())
    if "test" not in data:
        raise ConfigError(
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
    beta = data.get("beta", {})
    return RunResult(
        name=name or (given.name if given.name != LATEST else given.parent.name),
        metrics={k: float(data["test"][k]) for k in METRIC_KEYS},
        chance=chance,
        epochs=[{"stage": "stage1", **r} for r in records],
        beta_curve=[
            {k: 100 * v if k != "beta" else v for k, v in p.items()} for p in beta.get("val_curve", [])
        ],
        beta_chosen=beta.get("beta_val"),
        per_class=[
            {"class": c, "accuracy": a, "seen": c in seen} for c, a in per_class.get("gzsl", {}).items()
        ],
        notes=list(data.get("notes", [])),
        preset=data.get("preset", "-"),
    )


def results_table(runs: list[RunResult]) -> str:
    """Markdown table of the reproduction preset and S/U/HM/ZSL (percent) per run, with the chance level of
    the first run's split."""
    header = (
        "| run | preset | " + " | ".join(METRIC_KEYS) + " |\n|---|---|" + "---|" * len(METRIC_KEYS) + "\n"
    )
    rows = [
        f"| {r.name} | {r.preset} | " + " | ".join(f"{r.metrics[k]:.2f}" for k in METRIC_KEYS) + " |"
        for r in runs
    ]
    chance = runs[0].chance if runs else {}
    if chance:
        rows.append(
            "| *chance* | | " + " | ".join(f"{chance.get(k, float('nan')):.2f}" for k in METRIC_KEYS) + " |"
        )
    return header + "\n".join(rows) + "\n"


# ------------------------------------------------------------------------------------------------ figures
def _grid(panels: int, title: str, panel: tuple[float, float] = PANEL, epochs: bool = True):
    """A figure of ``panels`` axes in rows of at most ``MAX_COLUMNS``; ``epochs``: one shared epoch axis,
    labelled under the lowest panel of each column."""
    cols = min(panels, MAX_COLUMNS)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(panel[0] * cols, panel[1] * rows + 0.8),
        sharex=epochs,
        squeeze=False,
        layout="constrained",
    )
    flat = list(axes.flat)
    for ax in flat[panels:]:
        ax.remove()
    for index, ax in enumerate(flat[:panels]):
        ax.grid(alpha=0.3)
        if epochs:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if index + cols >= panels:  # nothing below this panel
                ax.tick_params(labelbottom=True)
                ax.set_xlabel("epoch")
    fig.suptitle(title)
    return fig, flat[:panels]


def _series(run: RunResult, stage: str, key: str) -> tuple[list[int], list[float]]:
    points = [(e["epoch"], e[key]) for e in run.epochs if e["stage"] == stage and key in e]
    return [p[0] for p in points], [p[1] for p in points]


def _run_colour(index: int) -> str:
    return f"C{index % 10}"


def curves_figure(runs: list[RunResult]) -> plt.Figure | None:
    """The training losses (and the learning rate), one panel each, every run and both stages."""
    keys = [k for k in CURVES if any(k in e for r in runs for e in r.epochs)]
    if not keys:
        return None
    fig, axes = _grid(len(keys), "Training losses per epoch (stage 1 solid, stage 2 dashed)")
    for ax, key in zip(axes, keys, strict=True):
        for index, run in enumerate(runs):
            for stage, (label, style) in STAGES.items():
                x, y = _series(run, stage, key)
                if x:
                    ax.plot(x, y, style, marker=".", color=_run_colour(index), label=f"{run.name}, {label}")
        ax.set_title(CURVES[key])
        if key == "lr":
            ax.set_yscale("log")
    _legend(fig, axes)
    return fig


def validation_figure(runs: list[RunResult]) -> plt.Figure | None:
    """Validation S, U and HM per epoch for both stages (stage 2 validates on its own training data)."""
    if not any(f"val_{k}" in e for r in runs for e in r.epochs for k in ("S", "U", "HM")):
        return None
    fig, axes = _grid(
        3,
        "Validation per epoch, percent (stage 2 dashed: its validation videos are part of its training "
        "data, so it only drives the learning-rate schedule)",
        panel=(4.4, 3.0),
    )
    for ax, key in zip(axes, ("S", "U", "HM"), strict=True):
        for index, run in enumerate(runs):
            for stage, (label, style) in STAGES.items():
                x, y = _series(run, stage, f"val_{key}")
                if x:
                    ax.plot(x, y, style, marker=".", color=_run_colour(index), label=f"{run.name}, {label}")
        ax.set_title(f"validation {key}")
    _legend(fig, axes)
    return fig


def csgm_figure(runs: list[RunResult]) -> plt.Figure | None:
    """The CSGM coefficient k of each modality per epoch (mean over the epoch's samples; 1 = unmodulated)."""
    with_csgm = [r for r in runs if any(k in e for e in r.epochs for k in CSGM_KEYS.values())]
    if not with_csgm:
        return None
    fig, axes = _grid(len(with_csgm), "CSGM coefficient k per modality (1 = unmodulated)", panel=(5.0, 3.2))
    for ax, run in zip(axes, with_csgm, strict=True):
        for modality, key in CSGM_KEYS.items():
            for stage, (label, style) in STAGES.items():
                x, y = _series(run, stage, key)
                if x:
                    ax.plot(
                        x,
                        y,
                        style,
                        marker=".",
                        color=MODALITY_COLOURS[modality],
                        label=f"{modality}, {label}",
                    )
        ax.set_title(run.name)
        ax.set_ylabel("mean k over the epoch's samples")
        ax.legend()
    return fig


def calibration_figure(runs: list[RunResult]) -> plt.Figure | None:
    """Validation S/U/HM against the calibration beta of each run, with the beta the test uses."""
    with_curve = [r for r in runs if r.beta_curve]
    if not with_curve:
        return None
    fig, axes = _grid(
        len(with_curve), "Calibrated stacking: validation S, U, HM against beta", (4.4, 3.0), epochs=False
    )
    for ax, run in zip(axes, with_curve, strict=True):
        betas = [p["beta"] for p in run.beta_curve]
        for key in ("S", "U", "HM"):
            ax.plot(betas, [p[key] for p in run.beta_curve], marker=".", label=key)
        if run.beta_chosen is not None:
            ax.axvline(
                run.beta_chosen, color="grey", linestyle=":", label=f"chosen beta {run.beta_chosen:.2g}"
            )
        ax.set_title(run.name)
        ax.set_xlabel("beta (added to seen-class distances)")
        ax.set_ylabel("percent")
        ax.legend()
    return fig


def per_class_figure(run: RunResult) -> plt.Figure | None:
    """Per-class test accuracy (GZSL), sorted, seen classes above unseen ones; one bar height per class."""
    groups = [
        (kind, metric, sorted((c for c in run.per_class if c["seen"] == seen), key=lambda c: -c["accuracy"]))
        for kind, metric, seen in (("seen", "S", True), ("unseen", "U", False))
    ]
    groups = [g for g in groups if g[2]]
    if not groups:
        return None
    counts = [len(items) for _, _, items in groups]
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(8.0, BAR_HEIGHT * sum(counts) + 1.0 + 0.6 * len(groups)),
        sharex=True,
        squeeze=False,
        height_ratios=counts,
        layout="constrained",
    )
    for ax, (kind, metric, items) in zip(axes[:, 0], groups, strict=True):
        values = [c["accuracy"] for c in items]
        ax.barh(range(len(items)), values, color=MODALITY_COLOURS["visual" if kind == "seen" else "audio"])
        for y, value in enumerate(values):
            ax.text(value + 1, y, f"{value:.0f}", va="center", fontsize=8.5)
        ax.set_yticks(range(len(items)), [str(c["class"]) for c in items])
        ax.set_ylim(len(items) - 0.5, -0.5)  # best class on top
        ax.set_xlim(0, 108)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"{kind} test classes ({len(items)}): mean {sum(values) / len(values):.1f} = {metric}")
    axes[-1, 0].set_xlabel("accuracy, percent (GZSL: every test class is a candidate)")
    fig.suptitle(f"{run.name}: per-class test accuracy, sorted")
    return fig


def _legend(fig: plt.Figure, axes: list[plt.Axes]) -> None:
    """One legend for the figure, above the panels (the same entries in every panel)."""
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if labels:
        fig.legend(
            [handles[label] for label in labels],
            labels,
            loc="outside lower center",
            ncols=min(len(labels), 4),
        )


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def figures(runs: list[RunResult]) -> list[tuple[str, str, plt.Figure]]:
    """(caption, file name, figure) of every figure the runs have data for, in report order."""
    with plt.rc_context(STYLE):
        made = [
            ("Training losses", "training.png", curves_figure(runs)),
            ("Validation S, U and HM per epoch", "validation.png", validation_figure(runs)),
            ("Modality contribution over training (CSGM)", "csgm.png", csgm_figure(runs)),
            ("Calibration: S, U and HM against beta", "calibration.png", calibration_figure(runs)),
        ]
        made += [
            (f"{run.name}: per-class test accuracy", f"per_class_{index}.png", per_class_figure(run))
            for index, run in enumerate(runs)
        ]
    return [(caption, name, fig) for caption, name, fig in made if fig is not None]


def write_report(runs: list[RunResult], out_dir: str | Path, title: str = "avzsl results") -> dict[str, Path]:
    """Write ``report.md`` (figures beside it) and a single-file ``report.html`` (figures inlined)."""
    if not runs:
        raise ValueError("write_report needs at least one run")
    out = Path(out_dir)
    with plt.rc_context(STYLE):
        saved = [(caption, _save(fig, out / "figures" / name)) for caption, name, fig in figures(runs)]
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
    for caption, path in saved:
        markdown += ["", f"## {caption}", "", f"![{caption}]({path.relative_to(out).as_posix()})"]
    atomic_write_text(out / "report.md", "\n".join(markdown) + "\n")
    atomic_write_text(out / "report.html", _html(title, table, notes, saved))
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
        "<style>body{font-family:sans-serif;max-width:1400px;margin:2em auto}table{border-collapse:collapse}"
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
