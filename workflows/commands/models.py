"""``avzsl models list [--json]``: every registered model, the features it takes and its configuration."""

from __future__ import annotations

import argparse
import json

import yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the GZSL models (AVCA, DAAN, TCaF) and their configs")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "list", help="print each model: inputs (averaged or temporal), objective, config, bundled configs"
    )
    show.add_argument("--json", action="store_true", help="machine-readable output (one JSON list)")
    show.add_argument("--config", action="store_true", help="also print each model's default config")
    show.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.api import list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(format_model(row, with_config=args.config))
    return 0


def format_model(row: dict, with_config: bool = False) -> str:
    lines = [
        f"{row['name']}: {row['summary']}",
        f"  inputs: {row['inputs']}",
        f"  objective: {row['objective']}; decision rules: {', '.join(row['decision_rules'])}",
        f"  config sections: train.{', train.'.join(row['config'])}",
        f"  bundled configs: {', '.join(row['bundled_configs']) or '-'} (avzsl train --config NAME)",
    ]
    if with_config:
        text = yaml.safe_dump({"train": row["config"]}, sort_keys=False)
        lines += ["    " + line for line in text.splitlines()]
    return "\n".join(lines)
