"""Cluster selection: spec validation, the generated SLURM job script (no SLURM needed), GPU per worker."""

from __future__ import annotations

import logging
import sys
import time
from types import SimpleNamespace

import pytest

from pipeline.cluster import (
    ClusterError,
    SlurmOptions,
    connect,
    slurm_job_script,
    validate_spec,
    worker_device,
)
from workflows.cli import main as cli_main


def test_validate_spec_accepts_kinds_and_addresses() -> None:
    for spec in ("local", "none", "slurm", "tcp://10.0.0.1:8786"):
        assert validate_spec(spec) == spec
    with pytest.raises(ClusterError, match="tcp://HOST"):
        validate_spec("kubernetes")


def test_slurm_job_script_requests_gpus_and_one_thread_per_worker() -> None:
    options = SlurmOptions(
        queue="gpu",
        account="proj42",
        walltime="02:00:00",
        cores_per_job=8,
        memory_per_job="32GB",
        gpus_per_job=2,
        job_script_prologue=["source /opt/venv/bin/activate"],
    )
    script = slurm_job_script(options)
    assert script.startswith("#!/usr/bin/env bash")
    expected = ["#SBATCH -p gpu", "#SBATCH -A proj42", "#SBATCH -t 02:00:00", "#SBATCH --cpus-per-task=8",
                "#SBATCH --gres=gpu:2", "export OMP_NUM_THREADS=1", "source /opt/venv/bin/activate",
                "export DASK_DISTRIBUTED__WORKER__DAEMON=False"]  # fmt: skip
    for line in expected:
        assert line in script
    worker_line = script.strip().splitlines()[-1]
    assert worker_line.startswith(f"{sys.executable} -m distributed.cli.dask_worker tcp://")
    assert "--nworkers 2" in worker_line and "--nthreads 1" in worker_line  # one worker per GPU


def test_cli_prints_job_script(capsys: pytest.CaptureFixture) -> None:
    args = ["extract", "--videos", "x.mp4", "--extractor", "c3d", "--out", "o", "--cluster", "slurm",
            "--slurm-queue", "long", "--slurm-gpus", "1", "--print-job-script"]  # fmt: skip
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "#SBATCH -p long" in out and "--gres=gpu:1" in out and "--nthreads 1" in out


def test_worker_device_picks_gpu_from_worker_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import distributed
    import torch

    assert worker_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    for name, expected in ((1, "cuda:1"), ("SLURMCluster-3-2", "cuda:2"), (6, "cuda:2")):
        monkeypatch.setattr(distributed, "get_worker", lambda n=name: SimpleNamespace(name=n))
        assert worker_device("cuda") == expected
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert worker_device("cuda") == "cuda"


def _slow_to_tear_down() -> bool:
    """Leave an object whose destructor takes 6 s, as torch and a model make a worker's teardown slow."""

    class SlowToDestroy:
        def __del__(self, sleep=time.sleep) -> None:  # bound now: module globals are gone by then
            sleep(6)

    sys.avzsl_slow_object = SlowToDestroy()  # lives until the interpreter's teardown
    return True


@pytest.mark.slow
def test_local_cluster_workers_exit_without_being_killed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="distributed"), connect("local", workers=1) as client:
        assert client.submit(_slow_to_tear_down, pure=False).result()
    assert "still alive" not in caplog.text and "killing" not in caplog.text
