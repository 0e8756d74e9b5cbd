"""``avzsl train``: two-stage AV-GZSL training + test of AVCA or DAAN; prints the S/U/HM/ZSL table."""

from __future__ import annotations

import argparse
from pathlib import Path

from workflows.cli import UsageError, add_overrides_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train + evaluate a GZSL model (AVCA, DAAN) under the two-stage protocol",
        description="Train and evaluate under the AV-GZSL protocol. CONFIG is a YAML file or a bundled "
        "benchmark config (ucf_main, ucf_cls, activitynet_main, activitynet_cls, vggsound_main, vggsound_cls). "
        "Re-running on the same --out resumes from the last checkpoint.",
    )
    parser.add_argument("--config", required=True, help="run config YAML or bundled config name")
    add_overrides_argument(parser, "train.model=daan or data.root=PATH")
    parser.add_argument("--out", required=True, type=Path, help="output directory of the run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.api import format_table, load_gzsl_data, resolve_config, train_and_evaluate
    from model.config import RunConfig

    cfg = RunConfig.from_yaml(resolve_config(args.config)).with_overrides(args.overrides)
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a directory")
    data = load_gzsl_data(cfg.data)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(args.out / "run.yaml")
    metrics = train_and_evaluate(cfg.train, data, args.out)
    print(format_table(metrics))
    print(f"results: {args.out / 'metrics.json'}")
    return 0
