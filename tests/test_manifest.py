"""VideoManifest builders (folder, CSV, paths), problem reporting, parquet round trip, GZSL split helper, CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.manifest import (
    LOADER_SPLITS,
    SPLITS,
    ManifestError,
    ManifestProblem,
    VideoManifest,
    assign_gzsl_splits,
)
from workflows.cli import main


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    _touch(root, "dog/a.mp4", "dog/b.avi", "cat/a.mp4", "cat/park/a.mkv", "cat/notes.txt", "stray.mp4")
    return root


def test_from_folder_ids_are_relative_paths_not_stems(folder: Path) -> None:
    manifest = VideoManifest.from_folder(folder, split="s1_train")
    table = manifest.table.set_index("video_id")
    assert sorted(table.index) == ["cat/a", "cat/park/a", "dog/a", "dog/b"]
    assert table.loc["cat/park/a", "label"] == "cat" and table.loc["dog/b", "label"] == "dog"
    assert table.loc["cat/park/a", "path"] == str(folder / "cat/park/a.mkv")
    assert set(table["split"]) == {"s1_train"}
    problems = {p.kind: p for p in manifest.problems}  # every file left out is reported, with why
    assert sorted(problems) == ["not_media", "outside_class_folder"] and len(manifest.problems) == 2
    assert "stray.mp4" in problems["outside_class_folder"].message
    assert "notes.txt" in problems["not_media"].message and "'.txt'" in problems["not_media"].message


def test_from_folder_duplicate_ids_name_the_files(folder: Path) -> None:
    _touch(folder, "dog/a.webm")
    with pytest.raises(ManifestError, match=r"duplicate video_id.*dog/a") as err:
        VideoManifest.from_folder(folder)
    assert "a.webm" in str(err.value) and "a.mp4" in str(err.value)


def test_from_folder_without_videos_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ManifestError, match="no media files found"):
        VideoManifest.from_folder(tmp_path / "empty")
    with pytest.raises(ManifestError, match="folder not found"):
        VideoManifest.from_folder(tmp_path / "nope")


def test_from_csv_resolves_paths_and_reports_missing_files(tmp_path: Path) -> None:
    _touch(tmp_path, "clips/x.mp4", "clips/sub/y.mp4")
    csv = tmp_path / "list.csv"
    csv.write_text(
        "path,label,split,extra\nclips/x.mp4,run,s1_train,1\nclips/sub/y.mp4,jump,,2\nclips/z.mp4,run,s2_test_seen,3\n"
    )
    manifest = VideoManifest.from_csv(csv)
    assert manifest.video_ids == ["clips/x", "clips/sub/y", "clips/z"]
    assert manifest.table["path"][0] == str(tmp_path / "clips/x.mp4")
    assert manifest.entries()[1].split is None and manifest.entries()[1].label == "jump"
    assert manifest.table["extra"].tolist() == ["1", "2", "3"]
    assert [(p.kind, p.video_id) for p in manifest.problems] == [("missing_file", "clips/z")]
    assert "clips/z.mp4" in manifest.problems[0].message


def test_from_csv_with_root_and_explicit_ids(tmp_path: Path) -> None:
    _touch(tmp_path, "data/x.mp4")
    csv = tmp_path / "meta" / "list.csv"
    csv.parent.mkdir()
    csv.write_text("video_id,path,label\nclip-1,x.mp4,run\n")
    manifest = VideoManifest.from_csv(csv, root=tmp_path / "data")
    assert manifest.video_ids == ["clip-1"] and manifest.problems == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\na.mp4,x\n", "missing column 'path'"),
        ("path,class\na.mp4,x\n", "missing column 'label'"),
        ("path,label\na.mp4,x\na.mp4,y\n", "duplicate video_id"),
        ("video_id,path,label\n,a.mp4,x\n", "empty video_id"),
    ],
)
def test_from_csv_bad_input_names_the_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    with pytest.raises(ManifestError, match=message) as err:
        VideoManifest.from_csv(csv)
    assert str(csv) in str(err.value)


def test_from_paths_has_no_labels(tmp_path: Path) -> None:
    _touch(tmp_path, "a/one.mp4", "b/one.mp4")
    manifest = VideoManifest.from_paths(
        [tmp_path / "a/one.mp4", tmp_path / "b/one.mp4", tmp_path / "b/gone.mp4"]
    )
    assert manifest.video_ids == ["a/one", "b/one", "b/gone"]
    assert manifest.table["label"].isna().all() and manifest.table["split"].isna().all()
    assert [p.video_id for p in manifest.problems] == ["b/gone"]
    with pytest.raises(ManifestError, match="no video paths"):
        VideoManifest.from_paths([])


def test_check_files_sees_files_removed_later(folder: Path) -> None:
    manifest = VideoManifest.from_folder(folder)
    assert manifest.check_files() == []
    (folder / "dog" / "b.avi").unlink()
    problems = manifest.check_files()
    assert [(p.kind, p.video_id) for p in problems] == [("missing_file", "dog/b")]


def test_parquet_round_trip_keeps_rows_problems_and_extras(tmp_path: Path, folder: Path) -> None:
    manifest = VideoManifest.from_folder(folder)
    manifest.table["class_id"] = range(len(manifest))
    out = manifest.to_parquet(tmp_path / "out" / "m.parquet")
    back = VideoManifest.read_parquet(out)
    pd.testing.assert_frame_equal(back.table, manifest.table, check_dtype=False)
    assert back.problems == manifest.problems and back.info == {"builder": "folder"}
    assert [p.name for p in out.parent.iterdir()] == ["m.parquet"]  # no temp file left behind


def test_parquet_paths_inside_its_folder_move_with_it(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _touch(root, "videos/run/a.mp4")
    VideoManifest.from_folder(root / "videos").to_parquet(root / "manifest.parquet")
    moved = tmp_path / "moved"
    shutil.move(root, moved)
    back = VideoManifest.read_parquet(moved / "manifest.parquet")
    assert back.table["path"][0] == str(moved / "videos/run/a.mp4") and back.check_files() == []


def test_reading_a_bad_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found"):
        VideoManifest.read_parquet(tmp_path / "none.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(ManifestError, match="not a readable parquet"):
        VideoManifest.read_parquet(junk)
    pd.DataFrame({"video_id": ["a"], "path": ["a.mp4"]}).to_parquet(tmp_path / "thin.parquet")
    with pytest.raises(ManifestError, match=r"missing column\(s\) \['label', 'split'\]"):
        VideoManifest.read_parquet(tmp_path / "thin.parquet")


def test_select_by_loader_split() -> None:
    table = pd.DataFrame(
        {"video_id": list("abcde"), "path": list("abcde"), "label": list("xxyyz"), "split": list(SPLITS)}
    )
    manifest = VideoManifest(table, [ManifestProblem("missing_file", "c", "c gone")])
    val = manifest.select(LOADER_SPLITS["val"])
    assert val.video_ids == ["b", "c"] and [p.video_id for p in val.problems] == ["c"]
    assert manifest.select("s2_test_unseen").video_ids == ["e"]


def test_assign_gzsl_splits_follows_class_roles() -> None:
    labels = ["s1"] * 20 + ["s2"] * 20 + ["v"] * 10 + ["t"] * 10
    roles = {"s1": "seen", "s2": "seen", "v": "val_unseen", "t": "test_unseen"}
    splits = assign_gzsl_splits(labels, roles, val_seen_fraction=0.1, test_seen_fraction=0.2, seed=1)
    frame = pd.DataFrame({"label": labels, "split": splits})
    counts = frame.groupby(["label", "split"]).size().to_dict()
    assert counts == {
        ("s1", "s1_train"): 14, ("s1", "s1_val_seen"): 2, ("s1", "s2_test_seen"): 4,
        ("s2", "s1_train"): 14, ("s2", "s1_val_seen"): 2, ("s2", "s2_test_seen"): 4,
        ("v", "s1_val_unseen"): 8, ("v", "s2_test_seen"): 2,
        ("t", "s2_test_unseen"): 10,
    }  # fmt: skip
    assert splits == assign_gzsl_splits(labels, roles, val_seen_fraction=0.1, test_seen_fraction=0.2, seed=1)
    assert splits != assign_gzsl_splits(labels, roles, val_seen_fraction=0.1, test_seen_fraction=0.2, seed=2)
    with pytest.raises(ManifestError, match="role"):
        assign_gzsl_splits(["a"], {})


def test_cli_build_and_show(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m" / "manifest.parquet"
    assert main(["manifest", "build", "--from-folder", str(folder), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "4 videos" in text and "outside_class_folder" in text
    assert (out.parent / "versions.json").is_file() and (out.parent / "config.yaml").is_file()
    assert main(["manifest", "build", "--from-folder", str(folder), "--out", str(out), "--strict"]) == 1
    capsys.readouterr()
    (folder / "dog" / "a.mp4").unlink()
    assert main(["manifest", "show", str(out), "--check-files"]) == 0
    text = capsys.readouterr().out
    assert "missing_file" in text and "dog/a" in text
    assert main(["manifest", "show", str(tmp_path / "none.parquet")]) == 2
    assert "manifest not found" in capsys.readouterr().err
