"""The in-memory AV-GZSL dataset every model trains on: features joined on video_id, labels, class embeddings.

Sources (published h5/pkl layout, our feature stores, synthetic) all produce one :class:`StageData` per
split folder (``stage_1_train`` ...) plus the class list of each folder; :func:`assemble` turns those into
the four loader splits with exactly the semantics of the reference loaders (docs/benchmark.md "Loader splits").
Features live in pre-loaded tensors so that batches are gathered by index, never built per sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

log = logging.getLogger(__name__)

STAGE_FOLDERS = (
    "stage_1_train",
    "stage_1_val_seen",
    "stage_1_val_unseen",
    "stage_2_test_seen",
    "stage_2_test_unseen",
)

# loader split -> (folders read, seen class lists, unseen class lists)   (docs/benchmark.md)
LOADER_SPLITS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "train": (("stage_1_train",), ("stage_1_train",), ()),
    "val": (("stage_1_val_seen", "stage_1_val_unseen"), ("stage_1_val_seen",), ("stage_1_val_unseen",)),
    "train_val": (
        ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen"),
        ("stage_1_train", "stage_1_val_unseen"),
        (),
    ),
    "test": (("stage_2_test_seen", "stage_2_test_unseen"), ("stage_2_test_seen",), ("stage_2_test_unseen",)),
}


@dataclass
class StageData:
    """Videos of one split folder: ids, class ids, and per-video features (vectors or (T, D) sequences)."""

    video_ids: list[str]
    labels: np.ndarray
    audio: list[np.ndarray] | np.ndarray
    visual: list[np.ndarray] | np.ndarray

    def __post_init__(self) -> None:
        n = len(self.video_ids)
        if not (len(self.labels) == len(self.audio) == len(self.visual) == n):
            raise ValueError(
                f"stage data: {n} ids, {len(self.labels)} labels, {len(self.audio)} audio and "
                f"{len(self.visual)} visual rows; audio and visual must list the same videos"
            )


@dataclass
class SplitData:
    """One loader split: stacked features, optional padding masks (True = valid step), class sets."""

    name: str
    video_ids: list[str]
    labels: torch.Tensor
    audio: torch.Tensor
    visual: torch.Tensor
    seen: list[int]
    unseen: list[int]
    audio_mask: torch.Tensor | None = None
    visual_mask: torch.Tensor | None = None

    @property
    def classes(self) -> list[int]:
        return sorted(set(self.seen) | set(self.unseen))

    def __len__(self) -> int:
        return len(self.video_ids)

    def to(self, device: torch.device) -> SplitData:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return SplitData(
            self.name,
            self.video_ids,
            self.labels.to(device),
            self.audio.to(device),
            self.visual.to(device),
            self.seen,
            self.unseen,
            move(self.audio_mask),
            move(self.visual_mask),
        )


@dataclass
class GZSLData:
    """A benchmark ready for training: global class list (id = index), class embeddings, loader splits."""

    class_names: list[str]
    class_embeddings: torch.Tensor
    splits: dict[str, SplitData]
    source: str
    indexing: str = "corrected"
    temporal: bool = False
    dropped: list[dict[str, str]] = field(default_factory=list)
    lost_classes: list[dict[str, object]] = field(default_factory=list)  # see :func:`lost_classes`
    notes: list[str] = field(default_factory=list)  # what every result from this data must say

    @property
    def audio_dim(self) -> int:
        return int(self.splits["train"].audio.shape[-1])

    @property
    def visual_dim(self) -> int:
        return int(self.splits["train"].visual.shape[-1])

    def summary(self) -> dict[str, object]:
        return {
            "source": self.source,
            "indexing": self.indexing,
            "temporal": self.temporal,
            "classes": len(self.class_names),
            "embedding_dim": int(self.class_embeddings.shape[1]),
            "audio_dim": self.audio_dim,
            "visual_dim": self.visual_dim,
            "splits": {
                n: {"videos": len(s), "seen": len(s.seen), "unseen": len(s.unseen)}
                for n, s in self.splits.items()
            },
            "dropped_videos": len(self.dropped),
            "lost_classes": len(self.lost_classes),
        }


def class_ids(names: list[str], class_names: list[str], where: str) -> list[int]:
    """Map class names to ids case-insensitively (split files and all_class.txt differ in case)."""
    lookup = {c.lower(): i for i, c in enumerate(class_names)}
    missing = [n for n in names if n.lower() not in lookup]
    if missing:
        raise ValueError(f"{where}: classes not in the class list: {missing[:5]} (check all_class.txt)")
    return sorted({lookup[n.lower()] for n in names})


def assemble(
    stages: dict[str, StageData],
    class_lists: dict[str, list[int]],
    class_names: list[str],
    class_embeddings: torch.Tensor,
    source: str,
    indexing: str = "corrected",
    temporal: bool = False,
    dropped: list[dict[str, str]] | None = None,
    notes: list[str] | None = None,
) -> GZSLData:
    """Build the four loader splits from the split folders, masking videos of classes outside the split.

    Classes left without a video in a folder (every video of theirs dropped) are found and explained in
    ``notes``: which classes, which split, and how the metrics count them.
    """
    splits = {}
    for name, (folders, seen_lists, unseen_lists) in LOADER_SPLITS.items():
        seen = sorted({c for s in seen_lists for c in class_lists[s]})
        unseen = sorted({c for s in unseen_lists for c in class_lists[s]})
        allowed = set(seen) | set(unseen)
        ids, labels, audio, visual = [], [], [], []
        for folder in folders:
            stage = stages[folder]
            for k, label in enumerate(stage.labels.tolist()):
                if label in allowed:
                    ids.append(stage.video_ids[k])
                    labels.append(label)
                    audio.append(stage.audio[k])
                    visual.append(stage.visual[k])
        if not ids:
            raise ValueError(f"{source}: loader split {name!r} has no videos (folders {folders})")
        a, am = _stack(audio, temporal)
        v, vm = _stack(visual, temporal)
        splits[name] = SplitData(
            name, ids, torch.tensor(labels, dtype=torch.long), a, v, seen, unseen, am, vm
        )
    dropped = dropped or []
    lost = lost_classes(stages, class_lists, class_names, dropped)
    lost_notes = lost_class_notes(lost, class_lists)
    for note in lost_notes:
        log.warning("%s", note)
    return GZSLData(
        class_names,
        class_embeddings.float(),
        splits,
        source,
        indexing,
        temporal,
        dropped,
        lost,
        [*(notes or []), *lost_notes],
    )


# What a class without videos in a split folder means for training and for the metrics (model/metrics.py:
# S, U and ZSL average the recall of the classes that have videos; every class of a split stays a candidate).
LOST_CLASS_EFFECT = {
    "stage_1_train": "no training pairs are drawn for them in stage 1; they stay candidate classes",
    "stage_1_val_seen": "they stay candidates, but validation S averages only the seen classes with videos",
    "stage_1_val_unseen": "they stay candidates, but validation U averages only the unseen classes "
    "with videos",
    "stage_2_test_seen": "they stay candidates, but test S averages only the {left} seen classes with videos",
    "stage_2_test_unseen": "they stay candidates, but test U and ZSL average only the {left} unseen classes "
    "with videos",
}


def lost_classes(
    stages: dict[str, StageData],
    class_lists: dict[str, list[int]],
    class_names: list[str],
    dropped: list[dict[str, str]],
) -> list[dict[str, object]]:
    """The classes of a split folder's list with no video left there: ``{split, class, dropped, reasons}``."""
    out: list[dict[str, object]] = []
    for folder in STAGE_FOLDERS:
        present = set(stages[folder].labels.tolist())
        for c in class_lists[folder]:
            if c in present:
                continue
            name = class_names[c]
            records = [r for r in dropped if r.get("split") == folder and r.get("label") == name]
            reasons = sorted({r["reason"] for r in records})
            out.append({"split": folder, "class": name, "dropped": len(records), "reasons": reasons})
    return out


def lost_class_notes(lost: list[dict[str, object]], class_lists: dict[str, list[int]]) -> list[str]:
    """One line per split folder: the classes that lost every video, why, and how the metrics count them."""
    notes = []
    for folder in STAGE_FOLDERS:
        here = [r for r in lost if r["split"] == folder]
        if not here:
            continue
        names = ", ".join(str(r["class"]) for r in here)
        reasons = sorted({reason for r in here for reason in r["reasons"]})  # type: ignore[attr-defined]
        why = f"; e.g. {reasons[0]}" if reasons else ""
        effect = LOST_CLASS_EFFECT[folder].format(left=len(class_lists[folder]) - len(here))
        notes.append(f"{folder}: {len(here)} class(es) have no usable video ({names}{why}): {effect}")
    return notes


def _stack(rows: list[np.ndarray], temporal: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack vectors, or pad (T_i, D) sequences to the longest with a validity mask."""
    if not temporal:
        return torch.from_numpy(np.stack([np.asarray(r, dtype=np.float32).reshape(-1) for r in rows])), None
    lengths = [max(len(r), 1) for r in rows]
    dim = int(np.asarray(rows[0]).shape[-1])
    out = torch.zeros(len(rows), max(lengths), dim)
    mask = torch.zeros(len(rows), max(lengths), dtype=torch.bool)
    for i, r in enumerate(rows):
        r = np.asarray(r, dtype=np.float32).reshape(-1, dim)
        out[i, : len(r)] = torch.from_numpy(r)
        mask[i, : len(r)] = True
        if len(r) == 0:
            mask[i, 0] = True  # an empty sequence would give a NaN mean; it is a single zero step
    return out, mask
