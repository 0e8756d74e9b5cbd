"""``avzsl evaluate``: print a run's S/U/HM/ZSL table, or re-test its final model on other data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workflows.cli import UsageError, add_overrides_argument, output_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="show or recompute the S/U/HM/ZSL table of a training run",
        description="Without --data/--set: print the run's stored test metrics. With --data (a run config "
        "YAML whose data section is used) and/or --set data.KEY=VALUE: re-test the run's stage-2 model at its "
        "stored beta on that data, write --out/metrics.json if --out is given.",
    )
    parser.add_argument(
        "--run",
        required=True,
        type=Path,
        help="directory written by avzsl train, or a workflow's runs/<model>",
    )
    parser.add_argument("--data", help="run config YAML (or bundled name) whose data section to evaluate on")
    add_overrides_argument(parser, "data.indexing=published")
    parser.add_argument(
        "--out", type=Path, help="where to write the re-evaluation (metrics.json + provenance)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.api import evaluate_run, format_table, load_gzsl_data, resolve_config
    from model.config import RunConfig
    from pipeline.config import atomic_write_text
    from pipeline.provenance import write_run_info
    from workflows.report import run_folder

    args.run = run_folder(args.run)
    if not args.run.is_dir():
        raise UsageError(f"--run {args.run}: not a directory")
    if not args.data and not args.overrides:
        print(format_table(evaluate_run(args.run)))
        return 0
    base = args.run / "run.yaml"
    if args.data:
        cfg = RunConfig.from_yaml(resolve_config(args.data), args.overrides)
    elif base.is_file():
        cfg = RunConfig.from_yaml(base, args.overrides)
    else:
        raise UsageError(f"{base}: not found; pass --data CONFIG to say which data to evaluate on")
    if args.out:
        output_folder(args.out)
    metrics = evaluate_run(args.run, load_gzsl_data(cfg.data))
    print(format_table(metrics))
    if args.out:
        write_run_info(args.out, cfg)
        atomic_write_text(args.out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return 0
