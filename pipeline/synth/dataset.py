"""Generate a synthetic audio-visual zero-shot dataset with the shape of an AV-GZSL benchmark.

Output folder::

    videos/<class name>/clip_000.mp4 ...   real H.264 + AAC clips, one sub-folder per class
    manifest.parquet                        VideoManifest: video_id, path, label, split, class_id, role
    class-split/                            the same split as AV-GZSL split files (all_class.txt, main_split/)
    classes.csv                             class_id, name, description, role, one column per attribute
    config.yaml, versions.json              what produced it

Splits follow docs/benchmark.md (see :func:`pipeline.manifest.assign_gzsl_splits`): seen classes' videos in
s1_train / s1_val_seen / s2_test_seen, stage-1 validation unseen classes in s1_val_unseen (and a held-out
part in s2_test_seen, since they are training classes in stage 2), final unseen classes in s2_test_unseen.
Every clip's frames and audio are a pure function of (seed, class, clip index), so on one machine the files
are byte-identical for any worker count; another CPU's encoder may write other bytes that decode to nearly
the same pixels (docs/synthetic-data.md).
"""

from __future__ import annotations

import csv
import io
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from pipeline.config import ConfigModel, atomic_write_text
from pipeline.manifest import LOADER_SPLITS, SPLIT_FOLDERS, SPLITS, VideoManifest, assign_gzsl_splits
from pipeline.provenance import write_run_info
from pipeline.synth.classes import ATTRIBUTES, SynthClass, design_classes
from pipeline.synth.media import write_av_clip
from pipeline.synth.render import draw_params, render_audio, render_frames

log = logging.getLogger(__name__)

VIDEO_DIR = "videos"
MANIFEST_FILE = "manifest.parquet"
CLASSES_FILE = "classes.csv"
CLASS_SPLIT_DIR = "class-split"


class SynthConfig(ConfigModel):
    """Size and difficulty of a synthetic dataset; the defaults generate in seconds."""

    classes: int = Field(12, ge=4, description="number of classes (>= 2 seen, >= 1 val- and test-unseen)")
    clips_per_class: int = Field(12, ge=1)
    seconds: float = Field(2.0, gt=0, le=600)
    width: int = Field(64, ge=16, le=4096)
    height: int = Field(64, ge=16, le=4096)
    fps: float = Field(25.0, gt=0, le=240)
    sample_rate: int = Field(16000, ge=8000, le=96000)
    unseen_fraction: float = Field(0.25, gt=0, lt=1, description="share of classes unseen at the final test")
    val_unseen_fraction: float = Field(0.25, gt=0, lt=1, description="share of classes unseen in stage-1 val")
    val_seen_fraction: float = Field(
        0.1, ge=0, lt=1, description="share of a seen class's videos in s1_val_seen"
    )
    test_seen_fraction: float = Field(
        0.15, ge=0, lt=1, description="share of a training class's videos in s2_test_seen"
    )
    variation: float = Field(
        1.0, ge=0, le=3, description="scale of per-clip randomness (0: one template per class)"
    )
    seed: int = 0
    workers: int = Field(1, ge=1, le=64, description="processes that render and encode clips")

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even (H.264 yuv420p)")
        return value


@dataclass(frozen=True)
class SynthDataset:
    """Where a generated dataset lives and what it holds."""

    root: Path
    manifest: VideoManifest
    classes: list[SynthClass]

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_FILE

    @property
    def classes_path(self) -> Path:
        return self.root / CLASSES_FILE


def generate_dataset(config: SynthConfig, out_dir: str | Path) -> SynthDataset:
    """Write the dataset into ``out_dir`` (existing clips are overwritten) and return its description."""
    root = Path(out_dir)
    classes = design_classes(config.classes, config.unseen_fraction, config.val_unseen_fraction, config.seed)
    jobs = [
        (config, c.class_id, c.attributes, k, root / VIDEO_DIR / c.name / f"clip_{k:03d}.mp4")
        for c in classes
        for k in range(config.clips_per_class)
    ]
    if config.workers > 1:
        with ProcessPoolExecutor(max_workers=config.workers) as pool:
            list(pool.map(_write_clip, jobs, chunksize=max(1, len(jobs) // (4 * config.workers))))
    else:
        for job in jobs:
            _write_clip(job)
    stale = sorted(set((root / VIDEO_DIR).rglob("*.mp4")) - {job[-1] for job in jobs})
    if stale:
        log.warning(
            "%s: %d clips from an earlier run are not in this dataset (e.g. %s)", root, len(stale), stale[0]
        )
    manifest = _build_manifest(root, classes, config)
    manifest.to_parquet(root / MANIFEST_FILE)
    atomic_write_text(root / CLASSES_FILE, classes_csv(classes))
    write_class_split(manifest, root / CLASS_SPLIT_DIR)
    write_run_info(root, config, command="avzsl synth")
    return SynthDataset(root, manifest, classes)


def _write_clip(job: tuple[SynthConfig, int, dict[str, str], int, Path]) -> Path:
    config, class_id, attributes, clip, path = job
    rng = np.random.default_rng([config.seed, class_id, clip])
    params = draw_params(rng, config.variation)
    video_rng, audio_rng = rng.spawn(2)  # independent noise streams, whatever order they are consumed in
    n_frames = max(1, round(config.seconds * config.fps))
    frames = render_frames(
        attributes,
        params,
        video_rng,
        n_frames=n_frames,
        fps=config.fps,
        width=config.width,
        height=config.height,
    )
    audio = render_audio(
        attributes, params, audio_rng, seconds=config.seconds, sample_rate=config.sample_rate
    )
    return write_av_clip(path, frames, config.fps, audio=audio, sample_rate=config.sample_rate)


def _build_manifest(root: Path, classes: list[SynthClass], config: SynthConfig) -> VideoManifest:
    rows = [
        {
            "video_id": f"{c.name}/clip_{k:03d}",
            "path": str(root / VIDEO_DIR / c.name / f"clip_{k:03d}.mp4"),
            "label": c.name,
            "class_id": c.class_id,
            "role": c.role,
        }
        for c in classes
        for k in range(config.clips_per_class)
    ]
    table = pd.DataFrame(rows)
    table["split"] = assign_gzsl_splits(
        table["label"].tolist(),
        {c.name: c.role for c in classes},
        val_seen_fraction=config.val_seen_fraction,
        test_seen_fraction=config.test_seen_fraction,
        val_unseen_test_fraction=config.test_seen_fraction,
        seed=config.seed,
    )
    info = {"builder": "synth", "seed": config.seed, "classes": config.classes}
    return VideoManifest(table, info=info, source=str(root))


def write_class_split(manifest: VideoManifest, class_split_dir: Path, setting: str = "main") -> None:
    """The split as AV-GZSL split files (docs/benchmark.md, UCF CSV columns), for tools that read that layout.

    ``all_class.txt`` plus ``<setting>_split/stage_*.{txt,csv}``; ``stage_2_train`` is the union of the
    three stage-1 sets, as in the benchmark.
    """
    table = manifest.table
    atomic_write_text(
        class_split_dir / "all_class.txt", "".join(f"{c}\n" for c in sorted(set(table["label"])))
    )
    sets = {SPLIT_FOLDERS[s]: table[table["split"] == s] for s in SPLITS}
    sets["stage_2_train"] = table[table["split"].isin(LOADER_SPLITS["train_val"])]
    for stem, rows in sets.items():
        folder = class_split_dir / f"{setting}_split"
        atomic_write_text(folder / f"{stem}.txt", "".join(f"{c}\n" for c in sorted(set(rows["label"]))))
        frame = pd.DataFrame(
            {"filename": rows["video_id"], "label": rows["label"], "label_code": rows["class_id"]}
        )
        atomic_write_text(folder / f"{stem}.csv", frame.to_csv(index=False, lineterminator="\n"))


def classes_csv(classes: list[SynthClass]) -> str:
    """The class table: id, short name, description for text embeddings, role and attribute values."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class_id", "name", "description", "role", *ATTRIBUTES])
    for c in classes:
        writer.writerow([c.class_id, c.name, c.description, c.role, *(c.attributes[a] for a in ATTRIBUTES)])
    return buffer.getvalue()


def read_classes(path: str | Path) -> pd.DataFrame:
    """Read ``classes.csv`` back (as written by :func:`generate_dataset`)."""
    return pd.read_csv(path, dtype={"class_id": int}, keep_default_na=False)
