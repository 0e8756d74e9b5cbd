"""The folder scan behind ``--videos FOLDER``: one ``os.scandir`` per folder, the same result as pathlib.

``pathlib_scan`` is the plain definition (``sorted(root.rglob("*"))`` and ``is_file()``, one Path per
file); the scan must find the same media files in the same order and report the same skipped files, on a
tree with every kind of entry a user folder holds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.manifest import MEDIA_EXTENSIONS, ManifestProblem, VideoManifest, scan_folder


def pathlib_scan(root: Path) -> tuple[list[Path], list[ManifestProblem]]:
    media, skipped = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix.lower() in MEDIA_EXTENSIONS and not path.name.startswith("."):
            media.append(path)
            continue
        why = "a hidden file" if path.name.startswith(".") else f"extension {path.suffix or '(none)'!r}"
        message = f"{path}: skipped, not a media file ({why}; media: {', '.join(sorted(MEDIA_EXTENSIONS))})"
        skipped.append(ManifestProblem("not_media", path.relative_to(root).as_posix(), message, "warning"))
    return media, skipped


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    files = [
        "cat/a.mp4", "cat/b.MP4", "cat/sub/deep/c.webm", "cat/.hidden.mp4", "cat/notes.txt", "cat/x.",
        "cat/archive.tar.gz", "cat/..mp4", "cat-b/d.mkv", "cat b/e.wav", "cat.x/f.mp4", "dog/g.mp3",
        "dog/h.mp4.part", "dog/README", "top.mp4", "top.txt", "Zebra/z.avi", "a/b/c/d/e.ogv", "dog/i j.mov",
    ]  # fmt: skip
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "links").mkdir()
    os.symlink(root / "cat/a.mp4", root / "links/to-file.mp4")
    os.symlink(root / "cat", root / "links/to-folder")  # not entered, as rglob does not
    os.symlink(root / "nowhere.mp4", root / "links/broken.mp4")
    (root / "empty").mkdir()
    return root


def test_the_scan_finds_what_pathlib_finds_in_the_same_order(tree: Path) -> None:
    for root in (tree, Path(os.path.relpath(tree)), Path(f"{tree}/")):
        assert scan_folder(root) == pathlib_scan(root)


def test_the_scan_from_the_current_folder(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    assert scan_folder(Path(".")) == pathlib_scan(Path("."))


def test_a_manifest_from_a_folder_keeps_its_rows_and_problems(tree: Path) -> None:
    manifest = VideoManifest.from_folder(tree, split="s1_train")
    media, skipped = pathlib_scan(tree)
    inside = [p for p in media if len(p.relative_to(tree).parts) >= 2]
    assert manifest.table["path"].tolist() == [str(p) for p in inside]
    assert manifest.video_ids == [p.relative_to(tree).with_suffix("").as_posix() for p in inside]
    assert manifest.table["label"].tolist() == [p.relative_to(tree).parts[0] for p in inside]
    assert set(manifest.table["split"]) == {"s1_train"}
    assert [p.video_id for p in manifest.problems if p.kind == "outside_class_folder"] == ["top"]
    assert [p for p in manifest.problems if p.kind == "not_media"] == skipped


PATHS = [
    "/data/videos/cat/a.mp4", "cat/a.mp4", "./cat/a.mp4", "cat/../dog/b.mp4", "cat//a.mp4", "cat/a.mp4/",
    "/data/videos", "/data/videos/", "/data/videos-2/x.mp4", "/data/other/x.mp4", "//data/videos/x.mp4",
    "/data/videos/./x.mp4", "/data/videos/../videos/x.mp4", "..", ".", "", None, "...", "a/.../b.mp4",
    "/data/vidéos/ü.mp4", "/data/videos/ü ß.mp4", "x.mp4", "/", "a/.",
]  # fmt: skip


@pytest.mark.parametrize("base", ["/data/videos", "/", "/data/vidéos"])
def test_paths_relative_to_the_manifest_and_back_as_pathlib_gives_them(
    base: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import pyarrow as pa

    from pipeline.manifest import _absolute_from, _relative_to, absolute_paths, relative_paths

    monkeypatch.chdir(tmp_path)
    paths = pa.array(PATHS, pa.string())
    expected = [None if p is None else _relative_to(p, Path(base)) for p in PATHS]
    assert relative_paths(paths, Path(base)).to_pylist() == expected
    expected = [None if p is None else _absolute_from(p, Path(base)) for p in PATHS]
    assert absolute_paths(paths, Path(base)).to_pylist() == expected
