"""The ``avzsl`` command line: one sub-command per stage, each defined in ``workflows/commands/<name>.py``.

A command module exposes ``register(subparsers)``, which adds a parser named like the module and sets
``func`` to a callable taking the parsed namespace and returning an exit status. Adding a command is adding
one module. Only the module of the command being run is imported (stages pull in torch, Dask, transformers),
so ``avzsl probe`` starts fast; ``avzsl --help`` imports them all.

Errors are handled here, once: a :class:`~pipeline.errors.UserError` raised anywhere (a config, a path, a
name the user gave) and an ``OSError`` on a path become one line naming the input and the fix, exit status
2; ``-v`` adds the traceback. Commands do not catch errors themselves.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import pkgutil
import sys
import traceback
from pathlib import Path

import pipeline
from pipeline.errors import UserError
from workflows import commands

USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130


class UsageError(UserError):
    """Bad command-line usage (exit status 2), as opposed to a failure while doing the work."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line pointing at ``--help`` instead of the whole usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USER_ERROR_STATUS, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1 (``--workers``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def output_folder(path: Path, flag: str = "--out") -> Path:
    """Check that ``path`` can be an output folder (absent or a folder), before any work starts."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: is a file, not a folder; give a folder path")
    return path


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
    parser = ArgumentParser(
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
        return USER_ERROR_STATUS
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"avzsl {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    except UserError as err:
        return _fail(args, str(err))
    except OSError as err:
        if err.filename is None:  # not about a path the user gave: a bug or the system, keep the traceback
            raise
        return _fail(args, describe_os_error(err))


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.verbose:
        traceback.print_exc()
    print(f"avzsl {args.command}: error: {message}", file=sys.stderr)
    return USER_ERROR_STATUS


def describe_os_error(err: OSError) -> str:
    """One line for a failed file operation: the path the user can act on, what is wrong, what to do."""
    path = Path(os.fsdecode(err.filename))
    code = err.errno
    if code == errno.ENOTDIR:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        return f"{blocker}: is a file, not a folder (needed for {path}); give a folder path"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        existing = next((p for p in (path, *path.parents) if p.exists()), path)
        why = "read-only file system" if code == errno.EROFS else "permission denied"
        return (
            f"{existing}: cannot write or read here ({why}); "
            "choose a folder you can write to or fix its permissions"
        )
    if code == errno.ENOENT:
        return f"{path}: no such file or folder; check the path"
    if code == errno.EISDIR:
        return f"{path}: is a folder; give a file path"
    if code == errno.ENOSPC:
        return f"{path}: no space left on the device; free some space or write elsewhere"
    return f"{path}: {err.strerror}"


if __name__ == "__main__":  # ``python -m workflows.cli``: run the imported module, so error types are shared
    from workflows.cli import main as _main

    sys.exit(_main())
