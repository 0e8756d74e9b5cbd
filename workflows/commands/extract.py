"""``avzsl extract``: batch feature extraction into sharded stores, on Dask (local, scheduler, SLURM) or in-process."""

from __future__ import annotations

import argparse
import shlex
from typing import get_args

from pipeline.cluster import ClusterError, SlurmOptions, slurm_job_script
from pipeline.manifest import ManifestError
from pipeline.store import StoreBusy, StoreError
from workflows.cli import UsageError, positive_int
from workflows.extract import DecodeDevice, DecodeIsolation, ExtractConfig, format_summary, run_extract


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="extract features of many videos into feature stores (resumable; Dask)",
        description="Extract features into one store per extractor under --out. Re-running the same command "
        "resumes: finished videos are skipped, changed source files are redone.",
    )
    parser.add_argument(
        "--videos", nargs="+", required=True, help="manifest .parquet, .csv, a folder, or video paths"
    )
    parser.add_argument(
        "--extractor",
        dest="extractors",
        action="append",
        required=True,
        help="extractor name (repeatable)",
    )
    parser.add_argument("--out", required=True, help="output folder (one store per extractor inside)")
    parser.add_argument(
        "--cluster", default="local", help="local (default), none (in-process), slurm, or tcp://HOST:PORT"
    )
    parser.add_argument(
        "--workers", type=positive_int, help="worker processes (default: one per GPU, or per CPU core)"
    )
    parser.add_argument(
        "--threads-per-worker", type=int, default=1, help="torch threads per worker (default 1)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one worker per GPU)")
    parser.add_argument(
        "--weights", action="append", default=[], metavar="NAME=PATH|random", help="weights per extractor"
    )
    parser.add_argument("--mode", choices=("clean", "benchmark"), default="clean")
    parser.add_argument("--shard-size", type=int, default=16, help="videos per task and per shard")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--decode-timeout",
        dest="decode_timeout_s",
        type=float,
        default=600.0,
        help="seconds before a decode is cut off",
    )
    parser.add_argument(
        "--prefetch-videos",
        type=int,
        help="videos decoded at once per worker (decode threads); default 2 with CPU models, one per core "
        "(up to 8) with GPU models",
    )
    parser.add_argument(
        "--decode-isolation",
        choices=get_args(DecodeIsolation),
        default="process",
        help="process: each decode in a killable child with the time limit (default); none: in the worker "
        "itself, no time limit, for trusted inputs",
    )
    parser.add_argument(
        "--decode-device",
        choices=get_args(DecodeDevice),
        default="cpu",
        help="cpu: frames decoded by PyAV on the CPU (default); cuda: by the GPU's NVDEC, straight into GPU "
        "memory, for visual extractors on --device cuda (needs torchcodec; no decode time limit)",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="also redo videos recorded as failed or partial"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when any video failed (by default only videos left not done do: "
        "failures of bad inputs are listed, not fatal)",
    )
    parser.add_argument("--no-progress", action="store_true")
    slurm = parser.add_argument_group("SLURM (--cluster slurm, through dask-jobqueue)")
    slurm.add_argument("--slurm-queue")
    slurm.add_argument("--slurm-account")
    slurm.add_argument("--slurm-walltime", default="04:00:00")
    slurm.add_argument("--slurm-cores", dest="slurm_cores_per_job", type=int, default=4, help="cores per job")
    slurm.add_argument("--slurm-memory", dest="slurm_memory_per_job", default="16GB", help="memory per job")
    slurm.add_argument(
        "--slurm-gpus",
        dest="slurm_gpus_per_job",
        type=int,
        default=0,
        help="GPUs per job (one worker per GPU)",
    )
    slurm.add_argument("--slurm-jobs", type=int, default=1)
    slurm.add_argument(
        "--slurm-prologue",
        dest="slurm_job_script_prologue",
        action="append",
        default=[],
        help="shell line run before the worker",
    )
    slurm.add_argument("--print-job-script", action="store_true", help="print the SLURM job script and exit")
    advanced = parser.add_argument_group("advanced")
    advanced.add_argument(
        "--builder", help="module:function building extractors, instead of the extractor registry"
    )
    advanced.add_argument(
        "--runner", help="module:function running extractors over videos, instead of the standard runner"
    )
    parser.set_defaults(func=run, command_parser=parser)


def parse_weights(items: list[str]) -> dict[str, str]:
    """``NAME=PATH`` pairs; a bare ``random`` (or ``PATH``) applies to every extractor."""
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        if sep:
            if not name or not value:
                raise UsageError(f"--weights {item!r}: expected NAME=PATH or NAME=random")
            weights[name] = value
        else:
            weights["*"] = item
    return weights


def build_config(args: argparse.Namespace) -> ExtractConfig:
    """The job config from the parsed flags: each flag's ``dest`` is the config key it sets."""
    values = {key: value for key, value in vars(args).items() if key in ExtractConfig.model_fields}
    values["weights"] = parse_weights(args.weights)
    values["slurm"] = {
        key: getattr(args, f"slurm_{key}")
        for key in SlurmOptions.model_fields
        if hasattr(args, f"slurm_{key}")
    }
    return ExtractConfig.from_dict(values, source="avzsl extract")


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    if args.print_job_script:
        print(slurm_job_script(config.slurm, threads_per_worker=config.threads_per_worker))
        return 0
    try:
        summary = run_extract(config, progress=not args.no_progress)
    except (ClusterError, ManifestError, StoreBusy, StoreError) as err:
        raise UsageError(str(err)) from None
    print(format_summary(summary, resume_command(args)))
    return summary.exit_code


def resume_command(args: argparse.Namespace) -> str:
    """The ``avzsl extract`` command line that repeats this run (which resumes it), from the parsed flags."""
    words = ["avzsl", "extract"]
    for action in args.command_parser._actions:
        value = getattr(args, action.dest, None)
        flag = action.option_strings[-1] if action.option_strings else None
        if flag is None or value == action.default or value is None:
            continue
        if action.nargs == 0:  # store_true
            words.append(flag)
        elif isinstance(value, list):
            words += [flag, *value] if action.nargs == "+" else [w for v in value for w in (flag, str(v))]
        else:
            words += [flag, str(value)]
    return shlex.join(words)
