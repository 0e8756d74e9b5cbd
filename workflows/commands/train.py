"""``avzsl train``: two-stage AV-GZSL training + test of one model; prints the S/U/HM/ZSL table."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from model.config import PRESETS
from workflows.cli import UsageError, add_overrides_argument, output_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train + evaluate a GZSL model (AVCA, DAAN) under the two-stage protocol",
        description="Train and evaluate under the AV-GZSL protocol. CONFIG is a run config YAML (data + train "
        "sections; a workflow records one per model as runs/<model>/latest/run.yaml) or a bundled benchmark "
        "config (ucf_main, ucf_cls, activitynet_main, activitynet_cls, vggsound_main, vggsound_cls). "
        "Re-running on the same --out resumes from the last checkpoint.",
    )
    parser.add_argument("--config", required=True, help="run config YAML or bundled config name")
    parser.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="reproduction preset: published (as the reference code runs; the bundled configs' own "
        "settings) or corrected (its known defects fixed); a --set of one of its switches wins "
        "(docs/avca.md)",
    )
    add_overrides_argument(parser, "train.model=daan or data.root=PATH")
    parser.add_argument("--out", required=True, type=Path, help="output directory of the run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.api import format_table, load_gzsl_data, load_run_config, resolve_config, train_and_evaluate

    refuse_workflow_config(resolve_config(args.config))
    cfg = load_run_config(args.config, args.preset, args.overrides)
    output_folder(args.out)
    data = load_gzsl_data(cfg.data)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(args.out / "run.yaml")
    metrics = train_and_evaluate(cfg.train, data, args.out)
    print(format_table(metrics))
    print(f"results: {args.out / 'metrics.json'}")
    return 0


def refuse_workflow_config(path: Path) -> None:
    """A workflow's ``config.yaml`` re-runs with ``avzsl run``, its models' ``run.yaml`` with ``avzsl train``."""
    from workflows.config import WorkflowConfig

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return  # RunConfig.from_yaml names the YAML error
    workflow_only = set(WorkflowConfig.model_fields) - {"train"}
    if not isinstance(data, dict) or not workflow_only & set(data):
        return
    runs = sorted(Path(str(data.get("workdir", "WORKDIR"))).glob("runs/*/latest/run.yaml"))
    example = runs[0] if runs else f"{data.get('workdir', 'WORKDIR')}/runs/<model>/latest/run.yaml"
    raise UsageError(
        f"--config {path}: a workflow config; re-run it with `avzsl run {path}`, or train one of its models "
        f"alone with the run config it recorded, e.g. --config {example}"
    )
