"""``avzsl demo``: the whole job on a built-in synthetic dataset, with no data, weights or network."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from workflows.build import model_runs
from workflows.cli import add_overrides_argument
from workflows.report import RunResult, load_run, results_table
from workflows.runner import load_workflow, run_workflow


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="generate synthetic videos, extract, train DAAN + AVCA, report"
    )
    parser.add_argument("--out", help="output folder (default: demo-output)")
    add_overrides_argument(parser, "train.models.daan.epochs=5 (keys of workflows/demo.yaml)")
    parser.add_argument("--force", action="store_true", help="re-run every stage")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"workdir={args.out}"] if args.out else [])
    config = load_workflow("demo", overrides)
    began = time.perf_counter()
    run_workflow(config, force=args.force)
    workdir = Path(config.workdir)
    runs = [load_run(model_runs(workdir, name), name=name.upper()) for name in config.train.models]
    print()
    print(results_table(runs))
    for line in note_lines(runs):
        print(line)
    print(
        f"demo finished in {time.perf_counter() - began:.0f} s; report: {workdir / 'report' / 'report.html'}"
    )
    (workdir / "demo_summary.json").write_text(
        json.dumps({r.name: {"test": r.metrics, "chance": r.chance} for r in runs}, indent=2) + "\n"
    )
    return 0


def note_lines(runs: list[RunResult]) -> list[str]:
    """The runs' notes: those every run carries once, the others under the run they belong to."""
    shared = [note for note in runs[0].notes if all(note in r.notes for r in runs)] if runs else []
    own = [f"note ({r.name}): {note}" for r in runs for note in r.notes if note not in shared]
    return [f"note: {note}" for note in shared] + own
