"""``avzsl report RUN...``: the results report of one or several training runs, side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from workflows.cli import output_folder
from workflows.report import load_run, results_table, write_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="HTML + markdown report of training runs (side by side)")
    parser.add_argument(
        "runs", nargs="+", help="run directories (each with metrics.json), or a workflow's runs/<model>"
    )
    parser.add_argument("--out", default="report", help="output folder (default: ./report)")
    parser.add_argument("--title", default="avzsl results")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    runs = [load_run(path) for path in args.runs]
    paths = write_report(runs, output_folder(Path(args.out)), title=args.title)
    print(results_table(runs))
    print(f"report: {paths['html']} and {paths['markdown']}")
    return 0
