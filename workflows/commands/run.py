"""``avzsl run WORKFLOW``: run a workflow, re-running only the stages whose inputs, parameters or code changed."""

from __future__ import annotations

import argparse
from pathlib import Path

from workflows.cli import add_overrides_argument
from workflows.runner import load_workflow, run_workflow


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a workflow (workflows/*.yaml), skipping unchanged stages")
    parser.add_argument("workflow", help="a workflow YAML file, or the name of one in workflows/")
    add_overrides_argument(parser, "train.models.daan.epochs=5")
    parser.add_argument("--only", action="append", metavar="STAGE", help="run only this stage (repeatable)")
    parser.add_argument("--from", dest="start", metavar="STAGE", help="re-run this stage and every later one")
    parser.add_argument("--force", action="store_true", help="re-run every stage")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check every name and path the workflow gives, print what would run and why, run nothing",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_workflow(args.workflow, args.overrides)
    if args.dry_run:
        from workflows.build import build_stages
        from workflows.checks import check_workflow
        from workflows.stages import StageRunner

        check_workflow(config)
        runner = StageRunner(Path(config.workdir), build_stages(config))
        for decision in runner.plan(only=args.only, start=args.start, force=args.force):
            print(f"{decision.action:<5} {decision.stage:<24} {decision.reason}")
        return 0
    run_workflow(config, only=args.only, start=args.start, force=args.force)
    print(f"outputs in {config.workdir}")
    return 0
