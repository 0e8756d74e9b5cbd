"""``avzsl probe``: one record per file for samples and the fault corpus; only usage errors fail."""

from __future__ import annotations

import json

import pytest

from pipeline.synth.faults import make_fault_corpus
from workflows.cli import main


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    make_fault_corpus(folder)
    (folder / "notes.txt").write_text("not media: skipped when walking the folder")
    return folder


def test_json_lines_for_a_folder_and_a_missing_file(corpus_dir, capsys):
    assert main(["probe", "--json", str(corpus_dir), str(corpus_dir / "missing.mp4")]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in records}
    assert set(by_name) == {
        "ok.mp4",
        "truncated.mp4",
        "no_audio.mp4",
        "no_video.mp4",
        "random_bytes.mp4",
        "zero_length.mp4",
        "short_0_3s.mp4",
        "vfr.mp4",
        "missing.mp4",
    }
    expected = {
        "ok.mp4": "ok",
        "truncated.mp4": "partial",
        "no_audio.mp4": "no_audio",
        "no_video.mp4": "no_video",
        "random_bytes.mp4": "undecodable",
        "zero_length.mp4": "empty_file",
        "short_0_3s.mp4": "ok",
        "vfr.mp4": "ok",
        "missing.mp4": "not_found",
    }
    assert {name: r["status"] for name, r in by_name.items()} == expected
    ok = by_name["ok.mp4"]
    assert (ok["frames"], ok["fps"], ok["has_audio"], ok["codecs"], ok["error"]) == (
        50,
        25.0,
        True,
        "h264+aac",
        None,
    )
    assert by_name["no_audio.mp4"]["has_audio"] is False and by_name["no_audio.mp4"]["frames"] == 50
    assert by_name["random_bytes.mp4"]["error"]


def test_table_for_the_samples(sample_videos, capsys):
    paths = [str(p) for p in sample_videos.values()]
    assert main(["probe", *paths]) == 0
    out, err = capsys.readouterr()
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["status", "duration_s", "fps", "frames"]
    assert len(rows) == 2 and all(row.startswith("ok") for row in rows)
    assert "19.6743" in out and "355" in out and "420" in out
    assert "probed 2 file(s): 2 ok" in err


def test_decord_backend_check(sample_videos, capsys):
    path = str(sample_videos["v_GGSY1Qvo990"])
    assert main(["probe", "--json", "--backend", "decord", path]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["probe"])
    assert exit_info.value.code == 2
    assert main(["probe", "--timeout", "0", "x.mp4"]) == 2
    assert "--timeout" in capsys.readouterr().err
