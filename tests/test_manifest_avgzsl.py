"""from_avgzsl on the REAL AV-GZSL split files: counts and ids as docs/benchmark.md gives them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.manifest import LOADER_SPLITS, SPLITS, ManifestError, VideoManifest

# (classes, videos) per split, docs/benchmark.md; only s2_test_unseen differs between main and cls.
COUNTS = {
    "UCF": [(30, 3174), (30, 353), (12, 1467), (42, 555)],
    "ActivityNet": [(99, 9204), (99, 1023), (51, 4307), (150, 1615)],
    "VGGSound": [(138, 70351), (138, 7817), (69, 3102), (207, 9032)],
}
TEST_UNSEEN = {
    ("UCF", "main"): (9, 1267),
    ("UCF", "cls"): (6, 845),
    ("ActivityNet", "main"): (50, 4199),
    ("ActivityNet", "cls"): (48, 4052),
    ("VGGSound", "main"): (69, 3450),
    ("VGGSound", "cls"): (64, 3200),
}
EXCLUDED = {
    "UCF": {"BandMarching", "BrushingTeeth", "Typing"},
    "ActivityNet": {"Brushingteeth", "Knitting"},
    "VGGSound": {"airplane", "helicopter", "sharpen knife", "thunder", "wind chime"},
}
ID_PATTERNS = {
    "UCF": r"v_[A-Za-z]+_g\d\d_c\d\d",
    "ActivityNet": r"[\w-]{11}_\d{1,2}",
    "VGGSound": r"[\w-]{11}_\d{6}",
}


@pytest.mark.parametrize(("dataset", "features"), sorted(TEST_UNSEEN))
def test_counts_equal_the_reference_table(avgzsl_root: Path, dataset: str, features: str) -> None:
    manifest = VideoManifest.from_avgzsl(avgzsl_root, dataset, features)
    summary = manifest.summary()
    assert summary["split"].tolist() == list(SPLITS)
    expected = COUNTS[dataset] + [TEST_UNSEEN[dataset, features]]
    assert list(zip(summary["classes"], summary["videos"], strict=True)) == expected
    excluded = {
        re.search(r"class '([^']+)'", p.message)[1] for p in manifest.problems if p.kind == "excluded_class"
    }
    assert excluded == (EXCLUDED[dataset] if features == "cls" else set())
    assert all(p.severity == "info" for p in manifest.problems)
    assert manifest.table["video_id"].str.fullmatch(ID_PATTERNS[dataset]).all()


def test_split_structure_follows_the_protocol(avgzsl_root: Path) -> None:
    table = VideoManifest.from_avgzsl(avgzsl_root, "UCF", "main").table
    classes = {s: set(table.loc[table["split"] == s, "label"]) for s in SPLITS}
    assert classes["s1_val_seen"] == classes["s1_train"]
    assert classes["s2_test_seen"] == classes["s1_train"] | classes["s1_val_unseen"]
    assert not classes["s2_test_unseen"] & classes["s2_test_seen"]
    stage2_train = table[table["split"].isin(LOADER_SPLITS["train_val"])]
    assert len(stage2_train) == 4994  # = stage_2_train.csv, docs/benchmark.md
    # label_code is the index in the case-sensitively sorted all_class.txt
    all_classes = sorted((avgzsl_root / "UCF/class-split/all_class.txt").read_text().split())
    lower = {c.lower(): i for i, c in enumerate(all_classes)}
    assert all(
        lower[label.lower()] == code for label, code in zip(table["label"], table["class_id"], strict=True)
    )


def test_benchmark_extras(avgzsl_root: Path) -> None:
    anet = VideoManifest.from_avgzsl(avgzsl_root, "ActivityNet", "cls").table
    assert (anet["youtube_id"] + "_" == anet["video_id"].str[: len("xxxxxxxxxxx_")]).all()
    vgg = VideoManifest.from_avgzsl(avgzsl_root / "VGGSound" / "class-split", "VGGSound", "cls").table
    row = vgg.iloc[0]
    assert row["video_id"] == f"{row['youtube_id']}_{row['start_seconds']:06d}"
    assert "others" not in set(vgg["category"])


def test_video_root_finds_files_and_reports_the_rest(avgzsl_root: Path, tmp_path: Path) -> None:
    for rel in ("a/v_ApplyEyeMakeup_g01_c01.avi", "b/c/v_Archery_g01_c01.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    manifest = VideoManifest.from_avgzsl(avgzsl_root / "UCF", "UCF", "cls", video_root=tmp_path)
    paths = manifest.table.set_index("video_id")["path"]
    assert paths["v_ApplyEyeMakeup_g01_c01"] == str(tmp_path / "a/v_ApplyEyeMakeup_g01_c01.avi")
    assert paths["v_Archery_g01_c01"] == str(tmp_path / "b/c/v_Archery_g01_c01.mp4")
    missing = [p for p in manifest.problems if p.kind == "missing_file"]
    assert len(missing) == len(manifest) - 2 and str(tmp_path) in missing[0].message


def test_bad_arguments_are_clear_errors(avgzsl_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="unknown AV-GZSL dataset"):
        VideoManifest.from_avgzsl(avgzsl_root, "Kinetics")
    with pytest.raises(ManifestError, match="unknown feature setting"):
        VideoManifest.from_avgzsl(avgzsl_root, "UCF", "clip")
    with pytest.raises(ManifestError, match="stage_1_train.csv"):
        VideoManifest.from_avgzsl(tmp_path, "UCF")
