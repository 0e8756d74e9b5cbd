"""Where extraction tasks run: in-process, a Dask LocalCluster, an existing scheduler, or SLURM.

``connect(spec, ...)`` yields a ``distributed.Client`` (or ``None`` for in-process runs) and tears the
cluster down afterwards. Workers are processes with one thread each (models and decoders are not
thread-safe, and a process can be killed and replaced); on a GPU box there is one worker per GPU and
each worker picks its GPU from its name (see :func:`worker_device`). Workers must not be daemonic
processes, because decoding runs in a killable child process per video (see :data:`DAEMON_KEY`).

A LocalCluster shuts down cleanly: see :mod:`pipeline.quick_exit`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
from collections.abc import Iterator

from pipeline.config import ConfigModel
from pipeline.cores import usable_cores
from pipeline.errors import UserError

CLUSTER_KINDS = ("local", "none", "slurm")  # or a scheduler address tcp://HOST:PORT
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Nanny-started workers are daemonic by default, and a daemonic process may not have children: the
# guarded decode (a killable child process per video) needs workers started non-daemonic.
DAEMON_KEY = "distributed.worker.daemon"
DAEMON_ENV = "DASK_DISTRIBUTED__WORKER__DAEMON"


class ClusterError(UserError, ValueError):
    """A cluster spec that cannot be used (unknown kind, unreachable scheduler)."""


class SlurmOptions(ConfigModel):
    """One SLURM job = ``processes_per_job`` Dask workers (one per GPU when ``gpus_per_job`` > 0)."""

    queue: str | None = None
    account: str | None = None
    walltime: str = "04:00:00"
    cores_per_job: int = 4
    memory_per_job: str = "16GB"
    gpus_per_job: int = 0
    processes_per_job: int | None = None  # default: gpus_per_job, or 1 without GPUs
    jobs: int = 1
    job_extra_directives: list[str] = []
    job_script_prologue: list[str] = []  # e.g. ["source /path/to/venv/bin/activate"]
    log_directory: str | None = None

    @property
    def processes(self) -> int:
        return self.processes_per_job or max(self.gpus_per_job, 1)


def validate_spec(spec: str) -> str:
    if spec in CLUSTER_KINDS or spec.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        return spec
    raise ClusterError(
        f"--cluster {spec!r}: expected local, none, slurm or a scheduler address like tcp://HOST:8786"
    )


def default_workers(device: str, threads_per_worker: int = 1) -> int:
    """One worker per GPU for CUDA, else one per ``threads_per_worker`` CPU cores."""
    if device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            raise ClusterError("--device cuda: no CUDA device is visible; use --device cpu")
        return count
    return max(1, usable_cores() // max(threads_per_worker, 1))


def slurm_cluster(options: SlurmOptions, *, threads_per_worker: int = 1):
    """A dask-jobqueue SLURMCluster (starts a scheduler here; submits nothing until scaled)."""
    from dask_jobqueue import SLURMCluster

    extra = list(options.job_extra_directives)
    if options.gpus_per_job:
        extra.append(f"--gres=gpu:{options.gpus_per_job}")
    env = [f"export {name}={threads_per_worker}" for name in THREAD_ENV] + [f"export {DAEMON_ENV}=False"]
    return SLURMCluster(
        queue=options.queue,
        account=options.account,
        walltime=options.walltime,
        cores=options.processes * threads_per_worker,  # Dask threads: one task at a time per worker
        job_cpu=options.cores_per_job,  # what SLURM allocates (decoding children use the rest)
        processes=options.processes,
        memory=options.memory_per_job,
        job_extra_directives=extra,
        job_script_prologue=[*env, *options.job_script_prologue],
        python=sys.executable,
        log_directory=options.log_directory,
        scheduler_options={"dashboard_address": ":0"},
    )


def slurm_job_script(options: SlurmOptions, *, threads_per_worker: int = 1) -> str:
    """The sbatch script each SLURM job would run (for review, or to submit by hand)."""
    cluster = slurm_cluster(options, threads_per_worker=threads_per_worker)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


@contextlib.contextmanager
def connect(
    spec: str,
    *,
    workers: int | None = None,
    device: str = "cpu",
    threads_per_worker: int = 1,
    slurm: SlurmOptions | None = None,
) -> Iterator[object | None]:
    """Yield a Dask client for ``spec`` (``None`` for ``none``); closes what it started on exit."""
    validate_spec(spec)
    if spec == "none":
        yield None
        return
    import dask
    from distributed import Client, LocalCluster

    if spec == "local":
        count = workers or default_workers(device, threads_per_worker)
        env = {name: str(threads_per_worker) for name in THREAD_ENV}
        with dask.config.set({DAEMON_KEY: False}):  # read by the nannies at every (re)start of a worker
            cluster = LocalCluster(
                n_workers=count,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
                env=env,
                preload=[__name__],  # dask_setup below
            )
            with cluster, Client(cluster) as client:
                from pipeline.quick_exit import QuickExit

                client.register_plugin(QuickExit(), name="avzsl-quick-exit")
                try:
                    yield client
                except KeyboardInterrupt:
                    client.run(_quiet_interrupted_worker, on_error="ignore")
                    raise
        return
    if spec == "slurm":
        options = slurm or SlurmOptions()
        with slurm_cluster(options, threads_per_worker=threads_per_worker) as cluster:
            cluster.scale(jobs=options.jobs if workers is None else -(-workers // options.processes))
            with Client(cluster) as client:
                yield client
        return
    try:
        client = Client(spec, timeout="20s")
    except OSError as err:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {spec}: {err}; is `dask scheduler` running?"
        ) from None
    with client:
        check_workers_can_fork(client)
        yield client


def dask_setup(worker: object) -> None:
    """Run in each local worker as it starts (``preload``): the worker ignores Ctrl-C.

    Ctrl-C reaches every process of the terminal's process group; workers that handle it each print a
    traceback while the client, which does handle it, is already shutting them down.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _quiet_interrupted_worker() -> None:
    """After Ctrl-C a busy worker is closed mid-task; its complaints about the closing scheduler are noise."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def check_workers_can_fork(client) -> None:
    """Refuse workers that run as daemonic processes: they cannot start the guarded decode child."""
    daemonic = sorted(str(w) for w, flag in client.run(_is_daemonic).items() if flag)
    if daemonic:
        raise ClusterError(
            f"{len(daemonic)} Dask worker(s) run as daemonic processes (e.g. {daemonic[0]}), which cannot start "
            f"the decode child process; start them with {DAEMON_ENV}=False in their environment "
            "(or `dask worker --no-nanny`)"
        )


def _is_daemonic() -> bool:
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)


def worker_device(device: str) -> str:
    """The device for this worker: ``cuda`` becomes ``cuda:<i>`` from the number ending the worker's name.

    A worker that sees one GPU (e.g. CUDA_VISIBLE_DEVICES set per worker) keeps plain ``cuda``.
    """
    if device != "cuda":
        return device
    import torch

    count = torch.cuda.device_count()
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        name = get_worker().name  # LocalCluster: 0..n-1; jobqueue / `dask worker --nworkers`: "<name>-<i>"
        match = re.search(r"(\d+)$", str(name))
        if match and count > 1:
            return f"cuda:{int(match[1]) % count}"
    return "cuda"
