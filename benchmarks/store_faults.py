"""Fault injection at job scale: each fault a store meets, the recovery a user follows, and what is lost.

A clean extraction of ``--videos`` clips (the real runner with decode children, the parameter-free
``framestats`` extractor, shards of 4 videos) is the reference. Every trial starts from a copy of it (or
from the sources), injects one fault, follows the documented recovery (the command column) and compares
every video's features and timestamps with the reference: ``data lost`` counts the videos whose features
are missing or differ at the end (it must be 0). ``survived`` counts the trials that ended with every
video right and the run saying so (exit status, report). See docs/store.md for the guarantees.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

import pipeline.store.shard as shard_module
from benchmarks.report import SummaryRow, command_line, markdown_table, write_section
from pipeline.decode import Outcome, probe
from pipeline.manifest import VideoManifest
from pipeline.store import FeatureStore, StoreBusy, StoreLease, compact_store, repair_store, verify_store
from pipeline.store.shard import ShardReader
from pipeline.synth.faults import make_fault_corpus
from pipeline.synth.media import make_test_clip
from workflows.extract import ExtractConfig, run_extract

COMMAND = ".venv/bin/python -m benchmarks.store_faults"
REPO = Path(__file__).resolve().parents[1]
EXTRACTOR = "framestats"
SAME = "avzsl extract (the same command)"
SHARD_SIZE = 4


@dataclass
class Row:
    fault: str
    tried: int
    survived: int
    lost: int
    command: str
    note: str = ""


class Lab:
    """The clips, their manifest, the reference run, and fresh copies of it to break."""

    def __init__(self, root: Path, videos: int, seed: int):
        self.root, self.rng = root, random.Random(seed)
        self.sources = root / "videos"
        for i in range(videos):
            make_test_clip(
                self.sources / f"class{i % 4}/v{i:03d}.mp4", seconds=2.0, width=64, height=48, seed=i
            )
        self.manifest = VideoManifest.from_folder(self.sources).to_parquet(root / "manifest.parquet")
        self.tasks = -(-videos // SHARD_SIZE)
        self.count = 0
        summary = run_extract(self.config(root / "reference"), progress=False)
        assert summary.exit_code == 0, summary
        self.reference = features_of(root / "reference")

    def config(self, out: Path, manifest: Path | None = None, **overrides) -> ExtractConfig:
        values = {
            "videos": [str(manifest or self.manifest)],
            "extractors": [EXTRACTOR],
            "out": str(out),
            "cluster": "none",
            "weights": {"*": "none"},
            "builder": "benchmarks.scale:build_frame_stats",
            "shard_size": SHARD_SIZE,
        }
        return ExtractConfig(**(values | overrides))

    def fresh(self) -> Path:
        """A copy of the reference output to break."""
        self.count += 1
        return Path(shutil.copytree(self.root / "reference", self.root / f"trial{self.count}"))

    def lost(self, out: Path) -> int:
        """Videos whose features or timestamps are missing or differ from the reference."""
        got = features_of(out)
        return sum(not _same(self.reference[v], got.get(v)) for v in self.reference)


def features_of(out: Path) -> dict[str, tuple]:
    store = FeatureStore.open(next(out.glob(f"{EXTRACTOR}-*")))
    ids = store.video_ids("ok")
    return {v: (store.features(v), *store.timestamps(v)) for v in ids}


def _same(a: tuple | None, b: tuple | None) -> bool:
    return a is not None and b is not None and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def store_of(out: Path) -> FeatureStore:
    return FeatureStore.open(next(out.glob(f"{EXTRACTOR}-*")))


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- sources and inputs
def missing_sources(lab: Lab, deleted: int = 10) -> Row:
    sources = Path(shutil.copytree(lab.sources, lab.root / "moved-sources"))
    manifest = VideoManifest.from_folder(sources).to_parquet(lab.root / "moved.parquet")
    out = lab.root / "moved-out"
    run_extract(lab.config(out, manifest), progress=False)
    gone = lab.rng.sample(sorted(sources.rglob("*.mp4")), deleted)
    for path in gone:
        path.unlink()
    again = run_extract(lab.config(out, manifest), progress=False)
    compact_store(store_of(out))
    kept = deleted - lab.lost(out)
    ok = again.exit_code == 0 and len(again.missing_sources) == deleted
    return Row("source files deleted after extraction", deleted, kept if ok else 0, lab.lost(out),
               f"{SAME}; avzsl store compact OUT", "each listed as a missing source")  # fmt: skip


def dropped_inputs(lab: Lab) -> Row:
    root = Path(shutil.copytree(lab.sources, lab.root / "mixed"))
    corpus = make_fault_corpus(lab.root / "corpus")
    for i in range(4):
        shutil.copy(corpus["no_video"], root / f"class{i}/song{i}.m4a")  # audio only
        (root / f"class{i}/notes{i}.txt").write_text("notes")
    shutil.copy(lab.sources / "class0/v000.mp4", root / "stray.mp4")
    summary = run_extract(lab.config(lab.root / "mixed-out", root, extractors=[EXTRACTOR]), progress=False)
    index = store_of(lab.root / "mixed-out").index()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    reported = "\n".join(summary.skipped_files)
    accounted = sum(
        p.relative_to(root).with_suffix("").as_posix() in index.index or str(p) in reported for p in files
    )
    return Row("files under --videos: audio-only, text, outside class folders", len(files), accounted,
               len(files) - accounted, "avzsl extract --videos FOLDER", "in the job or listed with the reason")  # fmt: skip


def corrupt_middles(lab: Lab, clips: int = 5) -> Row:
    found = 0
    for i in range(clips):
        path = make_test_clip(lab.root / f"mid/c{i}.mp4", seconds=4.0, width=160, height=120, seed=i)
        data = bytearray(path.read_bytes())
        at = len(data) // 3 + lab.rng.randrange(len(data) // 3)
        data[at : at + 2000] = np.random.default_rng(i).integers(0, 256, 2000, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
        found += probe(path, deep=True).status is Outcome.PARTIAL
    return Row("2 KB of garbage in the middle of a file", clips, found, clips - found, "avzsl probe --deep PATH",
               "reported partial with its corrupt regions")  # fmt: skip


# ----------------------------------------------------------------------------- the index
def index_flips(lab: Lab, trials: int) -> Row:
    survived = lost = detected = 0
    for _ in range(trials):
        out = lab.fresh()
        part = lab.rng.choice(sorted(store_of(out).index_dir.glob("*.parquet")))
        flip(part, lab.rng.randrange(part.stat().st_size))
        detected += bool(store_of(out).damaged_parts)
        summary = run_extract(lab.config(out), progress=False)  # repairs a damaged part, then plans
        trial_lost = lab.lost(out)
        lost += trial_lost
        survived += summary.exit_code == 0 and trial_lost == 0
    return Row("one byte flipped in an index part", trials, survived, lost, SAME,
               f"{detected} detected and repaired from shard headers, the rest hit unread bytes")  # fmt: skip


def index_truncations(lab: Lab, trials: int) -> Row:
    survived = lost = 0
    for _ in range(trials):
        out = lab.fresh()
        part = lab.rng.choice(sorted(store_of(out).index_dir.glob("*.parquet")))
        part.write_bytes(part.read_bytes()[: lab.rng.randrange(part.stat().st_size)])
        summary = run_extract(lab.config(out), progress=False)
        trial_lost = lab.lost(out)
        lost += trial_lost
        survived += summary.exit_code == 0 and summary.planned_videos == 0 and trial_lost == 0
    return Row("an index part truncated", trials, survived, lost, SAME, "nothing recomputed")


def compacted_index_lost(lab: Lab, trials: int) -> Row:
    survived = lost = 0
    for i in range(trials):
        out = lab.fresh()
        compact_store(store_of(out))
        (part,) = store_of(out).index_dir.glob("*.parquet")
        if i % 2:
            part.unlink()
        else:
            flip(part, lab.rng.randrange(part.stat().st_size))
        report = repair_store(store_of(out))
        trial_lost = lab.lost(out)
        lost += trial_lost
        survived += not report.lost and trial_lost == 0
    return Row("the single index part of a compacted store deleted or flipped", trials, survived, lost,
               "avzsl store repair OUT", "the whole index rebuilt from shard headers")  # fmt: skip


# ----------------------------------------------------------------------------- shards
def shard_flips(lab: Lab, trials: int) -> Row:
    survived = lost = detected = 0
    for _ in range(trials):
        out = lab.fresh()
        shard = lab.rng.choice(sorted(store_of(out).shards_dir.glob("*.safetensors")))
        flip(shard, lab.rng.randrange(shard.stat().st_size))
        detected += any(p.severity == "error" for p in verify_store(store_of(out)))
        repair_store(store_of(out))
        summary = run_extract(lab.config(out), progress=False)
        trial_lost = lab.lost(out)
        lost += trial_lost
        survived += summary.exit_code == 0 and trial_lost == 0
    return Row("one byte flipped anywhere in a shard", trials, survived, lost,
               f"avzsl store verify OUT; avzsl store repair OUT; {SAME}", f"{detected} of {trials} found by verify")  # fmt: skip


def shard_losses(lab: Lab, trials: int) -> Row:
    survived = lost = 0
    for i in range(trials):
        out = lab.fresh()
        shard = lab.rng.choice(sorted(store_of(out).shards_dir.glob("*.safetensors")))
        victims = len(ShardReader(shard).video_ids)
        if i % 2:
            shard.unlink()
        else:
            shard.write_bytes(shard.read_bytes()[: lab.rng.randrange(shard.stat().st_size)])
            repair_store(store_of(out))
        summary = run_extract(lab.config(out), progress=False)
        trial_lost = lab.lost(out)
        lost += trial_lost
        survived += summary.planned_videos == victims and trial_lost == 0
    return Row("a shard deleted or truncated", trials, survived, lost, f"(truncated: avzsl store repair OUT;) {SAME}",
               "exactly its videos redone")  # fmt: skip


# ----------------------------------------------------------------------------- the run
def disk_full_at_creation(lab: Lab) -> Row:
    out = lab.root / "full-create"
    with _patched(shard_module.os, "fsync", _no_space), contextlib.suppress(OSError):
        run_extract(lab.config(out), progress=False)
    leftovers = [p for p in out.rglob(".*.tmp-*")]
    summary = run_extract(lab.config(out), progress=False)
    ok = summary.exit_code == 0 and not leftovers
    return Row("disk full while the store is created", 1, int(ok and lab.lost(out) == 0), lab.lost(out), SAME,
               "no temp file left; the empty folder is initialised again")  # fmt: skip


def disk_full_mid_run(lab: Lab, trials: int) -> Row:
    survived = lost = 0
    for _ in range(trials):
        out = lab.root / f"full-{lab.rng.randrange(10**9)}"
        after = lab.rng.randrange(lab.tasks - 1)  # shard writes that still fit
        write, calls = shard_module.atomic_write, []

        def fills_up(path: Path, writer, write=write, calls=calls, after=after) -> None:
            calls.append(path)
            if len(calls) > after:
                raise OSError(errno.ENOSPC, "No space left on device")
            write(path, writer)

        with _patched(shard_module, "atomic_write", fills_up):
            stopped = run_extract(lab.config(out), progress=False)
        resumed = run_extract(lab.config(out), progress=False)
        trial_lost = lab.lost(out)
        lost += trial_lost
        survived += stopped.exit_code == 1 and resumed.exit_code == 0 and trial_lost == 0
    return Row("disk full in the middle of a run", trials, survived, lost, f"{SAME} (printed by the stopped run)",
               "the stopped run exits 1 and prints it")  # fmt: skip


def killed_runs(lab: Lab, trials: int) -> Row:
    survived = lost = 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for _ in range(trials):
        out = lab.root / f"killed-{lab.rng.randrange(10**9)}"
        command = [str(Path(sys.executable).parent / "avzsl"), "extract", "--videos", str(lab.manifest),
                   "--extractor", EXTRACTOR, "--weights", "none", "--out", str(out), "--cluster", "none",
                   "--shard-size", str(SHARD_SIZE), "--builder", "benchmarks.scale:build_frame_stats", "--no-progress"]  # fmt: skip
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wanted = lab.rng.randrange(1, lab.tasks)  # committed tasks before the kill
        deadline = time.monotonic() + 120
        while (
            proc.poll() is None and time.monotonic() < deadline and len(list(out.glob("*/index/*"))) < wanted
        ):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        trial_lost = lab.lost(out)
        lost += trial_lost
        survived += done.returncode == 0 and trial_lost == 0
    return Row(
        "SIGKILL of the extraction process", trials, survived, lost, SAME, "bit-identical to the clean run"
    )


def killed_decoders(lab: Lab) -> Row:
    """An out-of-memory killer: SIGKILL a random decode child every 50 ms while the job runs."""
    out, stop, kills = lab.root / "oom", threading.Event(), []

    def killer() -> None:
        me = psutil.Process()
        while not stop.wait(0.05):
            children = [p for p in me.children(recursive=True) if p.ppid() != me.pid]  # the forkserver's
            if children:
                victim = lab.rng.choice(children)
                with contextlib.suppress(psutil.Error):
                    victim.kill()
                    kills.append(victim.pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        first = run_extract(lab.config(out), progress=False)
    finally:
        stop.set()
        thread.join()
    crashed = first.status[EXTRACTOR]["not_done"]
    resumed = run_extract(lab.config(out), progress=False)
    undecodable = first.failed[EXTRACTOR].get("undecodable", 0)
    ok = resumed.exit_code == 0 and undecodable == 0 and lab.lost(out) == 0
    return Row("decode children SIGKILLed (an out-of-memory killer)", len(kills), len(kills) if ok else 0,
               lab.lost(out), SAME, f"{crashed} video(s) crashed twice, redone by the resume; none undecodable")  # fmt: skip


# ----------------------------------------------------------------------------- the lease
def _slowly(function: Callable) -> Callable:
    def call(*args, **kwargs):
        time.sleep(random.random() * 0.005)  # a loaded machine between judging a lease and taking it
        return function(*args, **kwargs)

    return call


def _contend(path: str, barrier, results, trials: int) -> None:
    psutil.pid_exists, psutil.Process = _slowly(psutil.pid_exists), _slowly(psutil.Process)
    for _ in range(trials):
        barrier.wait()
        lease = StoreLease(path, heartbeat_s=3600)
        try:
            lease.acquire()
            held = True
        except StoreBusy:
            held = False
        results.put(held)
        barrier.wait()
        if held:
            lease.release()
        barrier.wait()


def lease_race(lab: Lab, trials: int, processes: int = 8) -> Row:
    folder = lab.root / "lease"
    folder.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "started": 0})
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(processes + 1), ctx.Queue()
    workers = [
        ctx.Process(target=_contend, args=(str(folder), barrier, results, trials)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    holders = []
    for _ in range(trials):
        (folder / ".lease").write_text(stale)
        barrier.wait()
        barrier.wait()
        holders.append(sum(results.get(timeout=60) for _ in range(processes)))
        barrier.wait()
    for worker in workers:
        worker.join()
    doubles = sum(h > 1 for h in holders)
    return Row(f"{processes} processes take over one stale lease at once", trials, holders.count(1), doubles,
               "avzsl extract (concurrent runs)", "data lost = trials with two holders")  # fmt: skip


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _patched(owner, name: str, value):
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _no_space(*args) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=40, help="clips in the job (the issue used 40)")
    parser.add_argument("--trials", type=int, default=20, help="trials of each byte-flip fault")
    parser.add_argument("--lease-trials", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the faults' own warnings (damaged parts, random weights) are expected
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp), args.videos, args.seed)
        rows = [
            missing_sources(lab),
            index_flips(lab, args.trials),
            index_truncations(lab, max(1, args.trials // 4)),
            compacted_index_lost(lab, 4),
            shard_flips(lab, args.trials),
            shard_losses(lab, max(2, args.trials // 4)),
            disk_full_at_creation(lab),
            disk_full_mid_run(lab, 4),
            killed_runs(lab, 3),
            killed_decoders(lab),
            dropped_inputs(lab),
            lease_race(lab, args.lease_trials),
            corrupt_middles(lab),
        ]
    table = markdown_table(
        ["fault", "tried", "survived", "data lost", "recovery command", "note"],
        [[r.fault, r.tried, r.survived, r.lost, f"`{r.command}`", r.note] for r in rows],
    )
    body = (
        f"{args.videos} clips (2 s, 64x48), the real runner with decode children, the parameter-free "
        "`framestats` extractor, shards of 4 videos. Each trial breaks a copy of a clean run, follows the "
        "recovery command and compares every video's features and timestamps with the clean run: `data lost` "
        "is the number of videos missing or different at the end (must be 0); `survived` counts trials that "
        f"also ended with the run reporting the right state (exit status, listings). Total "
        f"{time.perf_counter() - started:.0f} s. Guarantees: docs/store.md.\n\n{table}"
    )
    lost = sum(r.lost for r in rows)
    survived, tried = sum(r.survived for r in rows), sum(r.tried for r in rows)
    summary = [
        SummaryRow(f"store faults: videos lost over {len(rows)} kinds of fault", "0", str(lost), lost == 0),
        SummaryRow(
            "store faults: trials ending in the right state",
            f"{tried} of {tried}",
            f"{survived} of {tried}",
            survived == tried,
        ),
    ]
    write_section("store-faults", command_line(COMMAND, argv), body, summary=summary)
    print(table)
    return 0 if all(r.lost == 0 and r.survived == r.tried for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
