"""The synthetic zero-shot dataset: compositional classes, AV-GZSL-shaped splits, determinism, CLI."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from pipeline.config import ConfigError
from pipeline.manifest import SPLITS, VideoManifest
from pipeline.synth.classes import ATTRIBUTES, AUDIO_ATTRIBUTES, VISUAL_ATTRIBUTES, design_classes
from pipeline.synth.dataset import SynthConfig, generate_dataset, read_classes
from pipeline.synth.render import COLOURS, PITCH_HZ
from workflows.cli import main

SMALL = SynthConfig(classes=6, clips_per_class=4, seconds=0.6, width=32, height=32, fps=10.0)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    return generate_dataset(SMALL, tmp_path_factory.mktemp("synth"))


@pytest.mark.parametrize(("n", "seed"), [(4, 0), (6, 1), (12, 0), (12, 7), (40, 3)])
def test_unseen_classes_are_new_combinations_of_seen_values(n: int, seed: int) -> None:
    classes = design_classes(n, seed=seed)
    assert len(classes) == n and len({c.name for c in classes}) == n
    assert [c.class_id for c in classes] == list(range(n))
    assert [c.name for c in classes] == sorted(c.name for c in classes)
    seen = [c for c in classes if c.role == "seen"]
    unseen = [c for c in classes if c.role != "seen"]
    assert (
        seen
        and any(c.role == "val_unseen" for c in classes)
        and any(c.role == "test_unseen" for c in classes)
    )
    seen_values = {(a, c.attributes[a]) for c in seen for a in ATTRIBUTES}
    seen_combos = {tuple(c.attributes.values()) for c in seen}
    for c in unseen:
        assert set(c.attributes.items()) <= seen_values, f"{c.name} uses a value no seen class shows"
        assert tuple(c.attributes.values()) not in seen_combos
        assert c.description.startswith(f"a {c.attributes['colour']} {c.attributes['shape']}")


def test_each_modality_identifies_a_class_when_the_space_allows() -> None:
    classes = design_classes(12, seed=0)
    assert len({c.visual_key for c in classes}) == 12
    assert len({c.audio_key for c in classes}) == 12


def test_class_design_is_deterministic_per_seed() -> None:
    assert design_classes(12, seed=4) == design_classes(12, seed=4)
    assert design_classes(12, seed=4) != design_classes(12, seed=5)


def test_too_few_classes_for_the_protocol_is_an_error() -> None:
    with pytest.raises(ValueError, match="fewer than 2 seen"):
        design_classes(3)
    with pytest.raises(ConfigError, match="classes"):
        SynthConfig.from_dict({"classes": 3})
    with pytest.raises(ConfigError, match="even"):
        SynthConfig.from_dict({"width": 63})


def test_outputs_and_split_structure(small) -> None:
    root = small.root
    assert (root / "config.yaml").is_file() and (root / "versions.json").is_file()
    manifest = VideoManifest.read_parquet(small.manifest_path)
    assert len(manifest) == 6 * 4 and manifest.check_files() == []
    table = manifest.table
    assert set(table["split"]) <= set(SPLITS)
    assert all(
        vid == f"{label}/{Path(p).stem}"
        for vid, label, p in zip(table.video_id, table.label, table.path, strict=True)
    )
    roles = dict(zip(table["label"], table["role"], strict=False))
    by_split = {s: set(table.loc[table["split"] == s, "label"]) for s in SPLITS}
    seen = {c for c, r in roles.items() if r == "seen"}
    val_unseen = {c for c, r in roles.items() if r == "val_unseen"}
    test_unseen = {c for c, r in roles.items() if r == "test_unseen"}
    assert by_split["s1_train"] == seen and by_split["s1_val_seen"] == seen
    assert by_split["s1_val_unseen"] == val_unseen
    assert by_split["s2_test_seen"] == seen | val_unseen
    assert by_split["s2_test_unseen"] == test_unseen
    assert not test_unseen & (seen | val_unseen) and not val_unseen & seen


def test_classes_csv(small) -> None:
    classes = read_classes(small.classes_path)
    assert list(classes.columns) == ["class_id", "name", "description", "role", *ATTRIBUTES]
    assert classes["name"].tolist() == [c.name for c in small.classes]
    assert classes["description"].tolist() == [c.description for c in small.classes]
    manifest = small.manifest.table
    ids = dict(zip(classes["name"], classes["class_id"], strict=True))
    assert all(ids[label] == cid for label, cid in zip(manifest["label"], manifest["class_id"], strict=True))


def test_clips_carry_their_class_in_both_modalities(small) -> None:
    for c in small.classes:
        path = small.root / "videos" / c.name / "clip_000.mp4"
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        with av.open(str(path)) as container:
            audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        assert len(frames) == 6 and frames[0].shape == (32, 32, 3)
        # the shape's colour is present in every frame
        target = np.array(COLOURS[c.attributes["colour"]], np.float32)
        near = [np.mean(np.linalg.norm(f.astype(np.float32) - target, axis=-1) < 70) for f in frames]
        assert min(near) > 0.01, c.name
        # the strongest low partial is the class pitch (within the per-clip jitter)
        spectrum = np.abs(np.fft.rfft(audio[:8192] * np.hanning(8192)))
        freqs = np.fft.rfftfreq(8192, 1 / SMALL.sample_rate)
        band = (freqs > 150) & (freqs < 1100)
        peak = freqs[band][np.argmax(spectrum[band])]
        assert abs(peak / PITCH_HZ[c.attributes["pitch"]] - 1) < 0.06, (c.name, peak)


def test_clips_of_a_class_vary(small) -> None:
    c = small.classes[0]
    a, b = (small.root / "videos" / c.name / f"clip_00{k}.mp4" for k in (0, 1))
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        fa = next(ca.decode(video=0)).to_ndarray(format="rgb24")
        fb = next(cb.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(fa.astype(int) - fb.astype(int)).mean() > 2


def test_same_seed_same_bytes_for_any_worker_count(small, tmp_path: Path) -> None:
    again = generate_dataset(SMALL.model_copy(update={"workers": 2}), tmp_path)
    for vid, path in zip(small.manifest.table["video_id"], small.manifest.table["path"], strict=True):
        assert Path(path).read_bytes() == (tmp_path / "videos" / f"{vid}.mp4").read_bytes(), vid
    left = small.manifest.table.drop(columns="path")
    pd.testing.assert_frame_equal(left, again.manifest.table.drop(columns="path"))


def test_visual_and_audio_attribute_names_are_disjoint() -> None:
    assert not set(VISUAL_ATTRIBUTES) & set(AUDIO_ATTRIBUTES)


def test_cli_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    args = [
        "synth",
        str(out),
        "--classes",
        "4",
        "--clips-per-class",
        "2",
        "--seconds",
        "0.3",
        "--size",
        "32x16",
    ]
    assert main(args + ["--seed", "5"]) == 0
    manifest = VideoManifest.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 8 and manifest.check_files() == []
    with av.open(manifest.table["path"][0]) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (32, 16)
    assert "wrote 8 videos of 4 classes" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "bad"), "--size", "32by16"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_cli_writes_the_fault_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path), "--faults"]) == 0
    assert (tmp_path / "truncated.mp4").is_file() and "random_bytes" in capsys.readouterr().out
    assert (tmp_path / "versions.json").is_file()


def test_rerun_with_fewer_clips_warns_about_stale_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tiny = SynthConfig(classes=4, clips_per_class=2, seconds=0.2, width=16, height=16, fps=10.0)
    generate_dataset(tiny, tmp_path)
    with caplog.at_level("WARNING", logger="pipeline.synth.dataset"):
        again = generate_dataset(tiny.model_copy(update={"clips_per_class": 1}), tmp_path)
    assert len(again.manifest) == 4
    assert "4 clips from an earlier run" in caplog.text


def test_class_split_files_reproduce_the_manifest_split(small) -> None:
    class_split = small.root / "class-split"
    assert (class_split / "all_class.txt").read_text().split() == sorted(c.name for c in small.classes)
    again = VideoManifest.from_avgzsl(class_split, "UCF", "main")
    assert again.problems == []
    mine = small.manifest.table.set_index("video_id")[["label", "split", "class_id"]].sort_index()
    theirs = again.table.set_index("video_id")[["label", "split", "class_id"]].sort_index()
    pd.testing.assert_frame_equal(mine, theirs, check_dtype=False)
