"""The ``avzsl`` command line: one sub-command per stage, each defined in ``workflows/commands/<name>.py``.

A command module exposes ``register(subparsers)``, which adds a parser named like the module and sets
``func`` to a callable taking the parsed namespace and returning an exit status. Adding a command is adding
one module. Only the module of the command being run is imported (stages pull in torch, Dask, transformers),
so ``avzsl probe`` starts fast; ``avzsl --help`` imports them all.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

import pipeline
from pipeline.config import ConfigError
from workflows import commands


class UsageError(Exception):
    """Bad command-line usage (exit status 2), as opposed to a failure while doing the work."""


def add_overrides_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """The ``--set KEY=VALUE`` option every config-driven command shares (``ConfigModel.with_overrides``)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config key, e.g. {example} (repeatable)",
    )


def command_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) one with just that sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="avzsl",
        description="Raw videos to audio-visual zero-shot classifiers (AV-GZSL).",
    )
    parser.add_argument("--version", action="version", version=f"avzsl {pipeline.__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [only] if only else command_names():
        importlib.import_module(f"{commands.__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    requested = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(requested if requested in command_names() else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.verbose < 2:  # Dask's own INFO lines (nannies starting, comms opening) drown ours
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # read by distributed at import
        for noisy in ("distributed", "bokeh", "tornado", "httpx", "huggingface_hub"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UsageError, ConfigError) as err:
        print(f"avzsl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
