"""Job scale: planning and resuming an extraction job of 100k and 1M videos (issue 19).

For each size: a tree of ``--videos FOLDER`` hard links (1,000 class folders, each video a link to its
class's copy of one tiny clip), then, each in its own process through the real CLI (``avzsl extract
--cluster none``) with a parameter-free extractor plug-in:

- **plan, empty store**: from the start of the command (its imports counted apart) to the first task (the
  runner plug-in stops the process there): the folder scan, the store set-up and leases, reading the
  (empty) index, the plan;
- **resume at 90 %**: the same on a store holding 90 % of the videos (whole tasks of 16, the missing 10 %
  chosen at random, as a killed run leaves them), written as a run writes it: a shard per task by the
  store's own writer (without fsync), the index parts in the shape the run's merges leave them;
- the same with ``--videos manifest.parquet`` (the manifest ``avzsl manifest build`` writes for that
  folder) instead of the folder;
- **resume run to the end**: the same command run to completion with a runner that returns 4 rows per
  video at once, so the cost is the job's own: the plan, 10 % of the tasks written (with fsync) and
  merged, and the end summary, which reads only the parts this run wrote.

Then, in this process on the 90 % store: ``FeatureStore.pooled()`` of every video, and two ratios measured
on the same data: the join-based ``plan_tasks`` against the per-video ``plan_tasks_per_video`` (the
definition it is tested equal to), and ``pooled()`` against the previous implementation (a full-length
mask per shard, kept here for the ratio). CPU-s = user + system time of the process; the machine is
shared, so wall times vary more than CPU times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pyarrow as pa

import pipeline.store.merge as merge_module
import pipeline.store.store as store_module
from pipeline.manifest import VideoManifest
from pipeline.store import FeatureStore, StoreLease
from pipeline.store.index import concat, list_parts, records_table, write_part
from pipeline.store.merge import merged_name
from pipeline.store.shard import ShardReader
from pipeline.synth.media import make_test_clip
from workflows.extract import ExtractConfig
from workflows.extract.client import prepare_stores
from workflows.extract.plan import plan_tasks, plan_tasks_per_video, source_stats

COMMAND = ".venv/bin/python -m benchmarks.job_scale"
REPO = Path(__file__).resolve().parents[1]
EXTRACTOR = "null"
BUILDER = "benchmarks.job_scale:build_null"
STOP_AT_FIRST_TASK = "benchmarks.job_scale:stop_at_first_task"
ZERO_ROWS = "benchmarks.job_scale:zero_rows"
REPORT_ENV = "AVZSL_JOB_SCALE_REPORT"
CLASSES = 1000
SHARD_SIZE = 16
ROWS, DIM = 4, 4


# ----------------------------------------------------------------------------- the extractor plug-in
@dataclass(frozen=True)
class NullSpec:
    name: str = EXTRACTOR
    modality: str = "visual"
    random_weights: bool = False

    def fingerprint(self) -> str:
        return "job-scale-null-v1"

    def to_dict(self) -> dict:
        return {"name": self.name, "modality": self.modality, "output_dim": DIM, "output_dtype": "float32"}


@dataclass
class NullExtractor:
    spec: NullSpec


def build_null(
    name: str, *, weights: str, device: str = "cpu", mode: str = "clean", **options
) -> NullExtractor:
    return NullExtractor(NullSpec())


@dataclass
class VideoJob:
    video_id: str
    path: str


@dataclass
class Result:
    video_id: str
    extractor: str
    status: str
    reason: str | None
    features: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray


def zero_rows(jobs: Iterable, extractors: Sequence[NullExtractor], **options) -> Iterator[Result]:
    """A runner with no extraction cost: 4 rows per video, their values its id's hash."""
    times = np.arange(ROWS, dtype=np.float64)
    for job in jobs:
        features = np.full((ROWS, DIM), zlib.crc32(job.video_id.encode()), np.float32)
        for extractor in extractors:
            yield Result(job.video_id, extractor.spec.name, "ok", None, features, times, times + 1.0)


def stop_at_first_task(jobs: Iterable, extractors: Sequence[NullExtractor], **options) -> Iterator[Result]:
    """A runner that ends the process when the first task starts: everything before it is planning."""
    _write_report("first task")
    os._exit(0)
    yield  # a generator, as runners are


# ----------------------------------------------------------------------------- a measured run (child)
_PHASES: dict[str, float] = {}
_READS = {"parts": 0, "records": 0}
_START: dict[str, float] = {}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(name: str, function):
    def wrapper(*args, **kwargs):
        start = _cpu()
        try:
            return function(*args, **kwargs)
        finally:
            _PHASES[name] = _PHASES.get(name, 0.0) + _cpu() - start

    return wrapper


def _peak_rss_mb() -> float:
    """Peak resident memory of this process: VmHWM, since ru_maxrss also counts the parent's memory at the
    fork that started this process."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_report(stage: str, exit_code: int | None = None) -> None:
    report = {
        "stage": stage,
        "exit_code": exit_code,
        "cpu_s": _cpu() - _START["cpu"],
        "wall_s": time.perf_counter() - _START["wall"],
        "imports_cpu_s": _START["cpu"],
        "peak_rss_mb": _peak_rss_mb(),
        "phases": dict(_PHASES),
        "reads": dict(_READS),
    }
    Path(os.environ[REPORT_ENV]).write_text(json.dumps(report))


def child(runner: str, videos: str, out: str) -> None:
    """One ``avzsl extract`` run, with the CPU time of its phases and the index parts it reads counted."""
    import workflows.extract.client as client
    from workflows.cli import main as cli_main

    read_parts = store_module.read_parts

    def counted(parts, fingerprint=None):
        read = read_parts(parts, fingerprint)
        _READS["parts"] += len(read.read)
        _READS["records"] += read.records.num_rows
        return read

    store_module.read_parts = counted
    client.plan_tasks = _timed("plan", client.plan_tasks)
    client.load_manifest = _timed("manifest", client.load_manifest)
    client._summarise = _timed("summary", client._summarise)
    _START.update(cpu=_cpu(), wall=time.perf_counter())
    code = cli_main(["extract", "--videos", videos, "--out", out, "--cluster", "none", "--extractor", EXTRACTOR,
              "--weights", "none", "--builder", BUILDER, "--runner", runner, "--shard-size", str(SHARD_SIZE),
              "--no-progress"])  # fmt: skip
    _write_report("end", code)


def measured_run(runner: str, videos: Path, out: Path, scratch: Path) -> dict:
    report = scratch / "report.json"
    report.unlink(missing_ok=True)
    env = os.environ | {REPORT_ENV: str(report), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "benchmarks.job_scale", "--child", runner, str(videos), str(out)]
    subprocess.run(command, env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text())


# ----------------------------------------------------------------------------- the data
def video_tree(root: Path, videos: int) -> Path:
    """``videos`` hard links in :data:`CLASSES` class folders (kept under ``root`` between runs)."""
    tree = root / f"videos-{videos}"
    done = tree / ".complete"
    if done.exists():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    clip = make_test_clip(root / "clip.mp4", seconds=1.0, width=32, height=24, fps=4.0, seed=0)
    for c in range(CLASSES):
        folder = tree / f"class{c:04d}"
        folder.mkdir(parents=True)
        source = root / "sources" / f"class{c:04d}.mp4"  # a file holds at most 65,000 links on ext4
        if not source.exists():
            source.parent.mkdir(exist_ok=True)
            shutil.copyfile(clip, source)
        for i in range(videos // CLASSES):
            os.link(source, folder / f"v{i:06d}.mp4")
    done.write_text("")
    return tree


def job_config(videos: Path, out: Path) -> ExtractConfig:
    return ExtractConfig(videos=[str(videos)], extractors=[EXTRACTOR], out=str(out), cluster="none",
                         weights={"*": "none"}, builder=BUILDER, shard_size=SHARD_SIZE)  # fmt: skip


def synthesise(videos: Path, out: Path, done: float, seed: int = 0) -> FeatureStore:
    """A store holding ``done`` of the videos in whole tasks, as a run that merged its index writes it.

    Each task's shard is written by the store's own writer (without fsync); its index records are
    collected instead of written as a part, and the parts are then written in the shape the merges of a
    run leave (:func:`lsm_parts`), which saves writing and merging tens of thousands of small parts.
    """
    manifest = VideoManifest.from_folder(videos)
    ids, paths = manifest.video_id_array(), manifest.path_array()
    size, mtime = source_stats(paths)
    ids, paths = ids.to_pylist(), paths.to_pylist()
    tasks = list(range(0, len(ids), SHARD_SIZE))
    kept = sorted(random.Random(seed).sample(tasks, round(done * len(tasks))))
    store = prepare_stores(job_config(videos, out))[0][EXTRACTOR]
    times = np.arange(ROWS, dtype=np.float64)
    commits: list[pa.Table] = []
    collect = lambda path, records, fingerprint: commits.append(records_table(records))  # noqa: E731
    with (
        StoreLease(store.path),
        mock.patch("os.fsync"),
        mock.patch.object(store_module, "write_part", collect),
    ):
        for start in kept:
            writer = store.writer(f"shard-{start}")
            for i in range(start, min(start + SHARD_SIZE, len(ids))):
                features = np.full((ROWS, DIM), i, np.float32)  # distinct rows: distinct checksums
                writer.add(
                    ids[i], features, times, times + 1, "ok", None, paths[i], int(size[i]), float(mtime[i])
                )
            writer.commit()
        for level, members in lsm_parts(len(commits)):
            if level == 0:
                (commit,) = members
                name = commits[commit].column("part")[0].as_py()
            else:
                name = merged_name(level)
            write_part(store.index_dir / name, concat([commits[k] for k in members]), store.fingerprint)
    return FeatureStore.open(store.path)


def lsm_parts(commits: int) -> list[tuple[int, list[int]]]:
    """(level, commits it holds) of each index part after ``commits`` tasks, each followed by
    ``merge_index`` (which merges a level once it holds ``FAN_IN`` parts, lowest level first)."""
    levels: dict[int, list[list[int]]] = {}
    for commit in range(commits):
        levels.setdefault(0, []).append([commit])
        level = 0
        while len(levels[level]) >= merge_module.FAN_IN:
            levels.setdefault(level + 1, []).append([k for part in levels[level] for k in part])
            levels[level] = []
            level += 1
    return [(level, part) for level, parts in sorted(levels.items()) for part in parts]


def index_bytes(store: FeatureStore) -> tuple[int, int]:
    parts = list_parts(store.index_dir)
    return sum(p.stat().st_size for p in parts), len(parts)


# ----------------------------------------------------------------------------- old and new, same data
def pooled_per_shard_masks(store: FeatureStore) -> np.ndarray:
    """The previous ``pooled()`` algorithm: a mask over all videos per shard (quadratic), for the ratio."""
    index = store.index()
    ids = sorted(index.loc[index["status"] == "ok", "video_id"])
    selected = index.loc[ids]
    codes, shards = pd.factorize(selected["shard"].to_numpy())
    rows = selected["row"].to_numpy()
    out = np.empty((len(ids), DIM), dtype=np.float32)
    for code, shard in enumerate(shards):
        mask = codes == code
        out[mask] = ShardReader(store.shards_dir / shard).array("pooled")[rows[mask]]
    return out


def cpu_of(function, *args):
    start, wall = _cpu(), time.perf_counter()
    result = function(*args)
    return result, _cpu() - start, time.perf_counter() - wall


# ----------------------------------------------------------------------------- one size
def measure(videos: int, scratch: Path, done: float) -> dict:
    print(f"== {videos} videos", flush=True)
    tree = video_tree(scratch, videos)
    work = scratch / f"out-{videos}"
    shutil.rmtree(work, ignore_errors=True)
    result = {"videos": videos}
    result["fresh"] = measured_run(STOP_AT_FIRST_TASK, tree, work / "fresh", scratch)
    print("fresh plan", result["fresh"], flush=True)
    store, result["synthesis_s"], _ = cpu_of(synthesise, tree, work / "resume", done)
    result["index_bytes"], result["index_parts"] = index_bytes(store)
    result["resume"] = measured_run(STOP_AT_FIRST_TASK, tree, work / "resume", scratch)
    print("resume plan", result["resume"], flush=True)
    manifest_file = VideoManifest.from_folder(tree).to_parquet(scratch / f"manifest-{videos}.parquet")
    result["resume_manifest"] = measured_run(STOP_AT_FIRST_TASK, manifest_file, work / "resume", scratch)
    print("resume plan, manifest", result["resume_manifest"], flush=True)

    manifest = VideoManifest.from_folder(tree)
    stores = {EXTRACTOR: FeatureStore.open(store.path)}
    joined, result["plan_join_s"], _ = cpu_of(plan_tasks, manifest, stores, SHARD_SIZE)
    stores = {EXTRACTOR: FeatureStore.open(store.path)}
    per_video, result["plan_per_video_s"], _ = cpu_of(plan_tasks_per_video, manifest, stores, SHARD_SIZE)
    assert joined == per_video, "the join planned other tasks than the per-video rule"
    result["planned"] = sum(len(t.videos) for t in joined.tasks)
    (ids, pooled), result["pooled_s"], result["pooled_wall_s"] = cpu_of(FeatureStore.open(store.path).pooled)
    old, result["pooled_old_s"], _ = cpu_of(pooled_per_shard_masks, FeatureStore.open(store.path))
    np.testing.assert_array_equal(pooled, old)
    result["pooled_videos"] = len(ids)
    del manifest, stores, joined, per_video, pooled, old

    result["resume_run"] = measured_run(ZERO_ROWS, tree, work / "resume", scratch)
    print("resume run", result["resume_run"], flush=True)
    result["final_index_bytes"], result["final_index_parts"] = index_bytes(FeatureStore.open(store.path))
    shutil.rmtree(work, ignore_errors=True)
    return result


def tables(results: list[dict], done: float) -> str:
    from benchmarks.report import markdown_table  # imports torch: not in the measured processes

    def mb(n: float) -> str:
        return f"{n / 1e6:.1f} MB"

    rows = []
    for r in results:
        fresh, resume, run, listed = r["fresh"], r["resume"], r["resume_run"], r["resume_manifest"]
        rows.append([
            f"{r['videos']:,}",
            f"{fresh['cpu_s']:.1f} ({fresh['wall_s']:.1f} s wall)",
            f"{resume['cpu_s']:.1f} ({resume['wall_s']:.1f} s wall); from a manifest file "
            f"{listed['cpu_s']:.1f} ({listed['wall_s']:.1f} s wall)",
            f"{run['cpu_s']:.1f} ({run['wall_s']:.1f} s wall), exit status {run['exit_code']}",
            f"{fresh['peak_rss_mb']:.0f} / {resume['peak_rss_mb']:.0f} / {run['peak_rss_mb']:.0f} MB",
            f"{mb(r['final_index_bytes'])} ({r['final_index_bytes'] / r['videos']:.0f} B/video, "
            f"{r['final_index_parts']} parts)",
            f"{r['pooled_s']:.1f}",
        ])  # fmt: skip
    main = markdown_table(
        ["videos", "plan, empty store: CPU-s", f"resume at {done:.0%}: CPU-s to the first task",
         "resume run to the end: CPU-s", "peak RSS: plan / resume / resume run", "index on disk",
         "pooled() of every video: CPU-s"],
        rows,
    )  # fmt: skip
    phases = markdown_table(
        ["videos", "run", "manifest (folder scan or file)", "plan", "summary", "index parts read", "records read",
         "imports (before the job, not counted above)"],
        [
            [f"{r['videos']:,}", name, f"{run['phases'].get('manifest', 0):.2f}",
             f"{run['phases'].get('plan', 0):.2f}", f"{run['phases'].get('summary', 0):.2f}" if "summary"
             in run["phases"] else "-", run["reads"]["parts"], f"{run['reads']['records']:,}",
             f"{run['imports_cpu_s']:.1f}"]
            for r in results
            for name, run in (("plan, empty store", r["fresh"]), (f"resume at {done:.0%}", r["resume"]),
                              (f"resume at {done:.0%}, manifest file", r["resume_manifest"]),
                              ("resume run to the end", r["resume_run"]))
        ],
    )  # fmt: skip
    ratios = markdown_table(
        ["videos", "what", "before (same data, same run)", "now", "speed-up"],
        [
            row
            for r in results
            for row in (
                [f"{r['videos']:,}", f"plan of {r['planned']:,} videos to do: per-video rule vs join (CPU-s)",
                 f"{r['plan_per_video_s']:.1f}", f"{r['plan_join_s']:.2f}",
                 f"{r['plan_per_video_s'] / r['plan_join_s']:.1f}x"],
                [f"{r['videos']:,}", f"pooled() of {r['pooled_videos']:,} videos: a mask per shard vs one sort "
                 "(CPU-s)", f"{r['pooled_old_s']:.1f}", f"{r['pooled_s']:.2f}",
                 f"{r['pooled_old_s'] / r['pooled_s']:.1f}x"],
            )
        ],
    )  # fmt: skip
    return "\n\n".join([main, "CPU seconds by phase of each run:\n\n" + phases, ratios])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--done", type=float, default=0.9, help="share of the videos the resumed store holds")
    parser.add_argument("--scratch", type=Path, help="where the video trees go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the video trees for the next run")
    parser.add_argument("--child", nargs=3, metavar=("RUNNER", "VIDEOS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="avzsl-job-scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        results = [measure(videos, scratch, args.done) for videos in args.sizes]
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    load = os.getloadavg()
    body = (
        f"`avzsl extract --videos FOLDER --cluster none` on trees of hard links ({CLASSES:,} class folders), "
        f"tasks of {SHARD_SIZE} videos, a parameter-free extractor ({ROWS} rows of {DIM} per video); see the "
        "module docstring for what each run covers. Targets at 1M videos: plan and resume each under 10 CPU-s, "
        "peak RSS under 1 GB, index under 100 MB, one read of the index per run, `pooled()` linear. Hard links "
        "share their size and mtime, so those two index columns compress to almost nothing here; distinct values "
        "per video add about 12 bytes per video (docs/store.md).\n\n"
        + tables(results, args.done)
        + f"\n\nLoad average at the end (1, 5, 15 min): {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} on "
        f"{os.cpu_count()} cores shared with other jobs."
    )
    print(body)
    from benchmarks.report import command_line, write_section

    write_section("job-scale", command_line(COMMAND, argv), body, summary=summary_rows(results))


def summary_rows(results: list[dict]) -> list:
    """The issue's targets, for the largest size measured."""
    from benchmarks.report import SummaryRow

    r = max(results, key=lambda item: item["videos"])
    n = f"{r['videos']:,} videos"
    peak = max(r[run]["peak_rss_mb"] for run in ("fresh", "resume", "resume_run"))
    index_mb = r["final_index_bytes"] / 1e6
    return [
        SummaryRow(
            f"plan a fresh job, {n}", "< 10 CPU-s", f"{r['fresh']['cpu_s']:.1f}", r["fresh"]["cpu_s"] < 10
        ),
        SummaryRow(
            f"resume a 90 %-done job to its first task, {n}",
            "< 10 CPU-s",
            f"{r['resume']['cpu_s']:.1f}",
            r["resume"]["cpu_s"] < 10,
        ),
        SummaryRow(f"peak RSS of plan, resume and run, {n}", "< 1 GB", f"{peak:.0f} MB", peak < 1000),
        SummaryRow(f"index on disk, {n}", "< 100 MB", f"{index_mb:.1f} MB", index_mb < 100),
    ]


if __name__ == "__main__":
    import benchmarks.job_scale as module  # one instance: the plug-ins are loaded by this name in the run

    with contextlib.suppress(BrokenPipeError):
        module.main()
