"""A user error is one line that names the input and the fix, exit status 2, never a traceback (``-v`` keeps
it); ``avzsl run --dry-run`` checks every name and path a workflow gives; Ctrl-C stops quietly."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.synth.media import make_test_clip
from workflows.cli import main

TESTS = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for seed, name in enumerate(["cat/c0", "cat/c1", "dog/d0", "dog/d1"]):
        make_test_clip(root / f"{name}.mp4", seconds=1.0, width=32, height=32, fps=8.0, seed=seed)
    return root


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The error line: the last line of stderr, with no traceback before it (log lines may precede it)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"avzsl {command}: error: "), err
    return last


def extract(clips: Path, out: Path, *extra: str) -> list[str]:
    return [
        "extract",
        "--videos",
        str(clips),
        "--out",
        str(out),
        "--cluster",
        "none",
        "--no-progress",
        *extra,
    ]


def test_out_is_an_existing_file(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "features"
    out.write_text("not a folder")
    assert main(extract(clips, out, "--extractor", "vggish", "--weights", "random")) == 2
    line = one_line_error(capsys, "extract")
    assert f"{out}: is a file, not a folder" in line and "give a folder path" in line
    assert main(["train", "--config", "ucf_cls", "--out", str(out)]) == 2
    assert f"--out {out}: is a file" in one_line_error(capsys, "train")


def test_unknown_extractor(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(extract(clips, tmp_path / "out", "--extractor", "foo", "--weights", "random")) == 2
    line = one_line_error(capsys, "extract")
    assert "unknown extractor 'foo'; available: " in line and "vggish" in line


def test_missing_weights_file(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "vggish-10086976.pth"
    assert (
        main(extract(clips, tmp_path / "out", "--extractor", "vggish", "--weights", f"vggish={weights}")) == 2
    )
    line = one_line_error(capsys, "extract")
    assert f"{weights} does not exist" in line and "torchvggish" in line


def test_verbose_keeps_the_traceback(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-v", *extract(clips, tmp_path / "out", "--extractor", "foo", "--weights", "random")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("avzsl extract: error: unknown")


def test_read_only_output_folder(
    clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: make the OS refuse the way it would
        real_mkdir = Path.mkdir

        def refuse(self: Path, *args, **kwargs) -> None:
            if locked in self.parents:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refuse)
    else:
        locked.chmod(0o555)
    assert main(extract(clips, locked / "out", "--extractor", "vggish", "--weights", "random")) == 2
    line = one_line_error(capsys, "extract")
    assert f"{locked}: cannot write or read here (permission denied)" in line
    assert "choose a folder you can write to" in line


def test_workers_zero_is_refused(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(
            extract(clips, tmp_path / "out", "--extractor", "vggish", "--weights", "random", "--workers", "0")
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "avzsl extract: error: argument --workers: must be at least 1, got 0 (see avzsl extract --help)"
    ]


def test_argparse_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", "--out", "x"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "avzsl train: error: the following arguments are required: --config (see avzsl train --help)"
    ]


# ------------------------------------------------------------------------------- workflows and --dry-run
def test_dry_run_checks_names_and_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "demo", "--dry-run", "--set", f"workdir={tmp_path / 'w'}"]
    assert main([*args, "--set", "extract.visual.name=foo"]) == 2
    line = one_line_error(capsys, "run")
    assert "extract.visual.name: unknown extractor 'foo'; available: " in line
    missing = tmp_path / "c3d.pickle"
    bad = [
        "--set",
        "extract.visual={name: c3d, weights: " + str(missing) + "}",
        "--set",
        "extract.audio.options={hop: 1}",
    ]
    assert main([*args, *bad]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"extract.visual.weights: {missing} does not exist; give the local path of c3d.pickle" in err
    assert "extract.audio.options: vggish has no option(s) hop; allowed: " in err
    assert main([*args, "--set", "train.models.daan.model=tcaff"]) == 2
    line = one_line_error(capsys, "run")
    assert "train.models.daan.model: unknown model 'tcaff'; registered: avca, daan, tcaf" in line
    assert not (tmp_path / "w").exists()


def test_workflow_with_an_unknown_extractor_fails_before_any_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "w"
    assert main(["run", "demo", "--set", f"workdir={workdir}", "--set", "extract.audio.name=vggishh"]) == 2
    assert "extract.audio.name: unknown extractor 'vggishh'" in one_line_error(capsys, "run")
    assert not workdir.exists(), "nothing ran"


def test_dry_run_checks_the_videos_and_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    videos = tmp_path / "videos"
    args = [
        "run",
        "full",
        "--dry-run",
        "--set",
        f"workdir={tmp_path / 'w'}",
        "--set",
        f"videos.path={videos}",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"videos.path: {videos} is not a folder" in err and "videos.classes is not set" in err
    videos.mkdir()
    (tmp_path / "classes.csv").write_text("name,role\n")
    assert main([*args, "--set", f"videos.classes={tmp_path / 'classes.csv'}"]) == 0
    assert "run   data" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ Ctrl-C
def _terminal_job() -> None:
    """In the child before exec: a process group of its own, with Ctrl-C handled as a terminal's foreground job
    handles it. A job started in the background by a non-interactive shell (a CI script's ``cmd &``) inherits
    SIGINT ignored, and Python then leaves it ignored: the Ctrl-C under test would never arrive."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_on_a_local_dask_cluster_prints_no_traceback(clips: Path, tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group: only the client reacts, the workers stay quiet."""
    command = [str(VENV_BIN / "avzsl"), "extract", "--videos", str(clips), "--out", str(tmp_path / "out"),
               "--extractor", "visual", "--weights", "random", "--cluster", "local", "--workers", "1",
               "--shard-size", "1", "--builder", "extract_fakes:build",
               "--runner", "extract_fakes:extract_videos", "--no-progress"]  # fmt: skip
    marker = tmp_path / "a video started"
    # 4 videos, one per task, 10 s each: the Ctrl-C lands while the worker is busy, however loaded the machine
    env = dict(os.environ, FAKE_SLEEP_S="10", FAKE_STARTED_MARKER=str(marker))
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_terminal_job,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout))  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "".join(lines)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130, "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        reader.join()
    output = "".join(lines)
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert output.strip().splitlines()[-1] == "avzsl extract: interrupted"


def test_decode_children_leave_ctrl_c_to_their_parent(clips: Path) -> None:
    """A Ctrl-C that reaches a decode child mid-video does not kill it: the decode finishes normally."""
    from pipeline.decode import Outcome
    from pipeline.decode.guarded import open_guarded

    frames = 0
    with open_guarded(clips / "cat" / "c0.mp4", chunk_frames=1, prefetch_chunks=1, reuse=False) as decode:
        for chunk in decode.frames():
            if frames == 0:  # the child is in its decode loop now
                os.kill(decode._process.pid, signal.SIGINT)
            frames += len(chunk.frames)
    assert decode.report.outcome == Outcome.OK, decode.report
    assert frames == 8
