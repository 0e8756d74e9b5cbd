"""GZSL data from our own feature stores: audio + visual stores joined on video_id with a manifest.

Written against the store read API (``pipeline.store.FeatureStore``): ``video_ids(status="ok")``,
``index()``, ``features(video_id) -> (T, D)`` and ``pooled(video_ids) -> (ids, (N, D))``.
:class:`InMemoryStore` implements the same API on arrays (synthetic benchmarks, tests). Videos that are
not ``ok`` in either store are dropped and recorded with the store's reason, never silently.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from model.data.alignment import check_windows
from model.data.embeddings import Indexing, class_embeddings, read_name_map
from model.data.gzsl import STAGE_FOLDERS, GZSLData, StageData, assemble, class_ids
from model.data.published import read_class_split

log = logging.getLogger(__name__)

# the manifest's split names (pipeline.manifest.SPLITS) -> split folder names
SHORT_SPLITS = {f"s{f[6]}_{f[8:]}": f for f in STAGE_FOLDERS}


class FeatureSource(Protocol):
    """The read side of a feature store that the dataset needs."""

    @property
    def random_weights(self) -> bool: ...  # features of a randomly initialised extractor (header flag)

    def video_ids(self, status: str = "ok") -> list[str]: ...

    def index(self) -> pd.DataFrame: ...

    def features(self, video_id: str) -> np.ndarray: ...

    def pooled(self, video_ids: list[str] | None = None) -> tuple[list[str], np.ndarray]: ...

    def timestamps(self, video_id: str) -> tuple[np.ndarray, np.ndarray]: ...  # start_s, end_s per row


class InMemoryStore:
    """A feature store held in memory: ``{video_id: (T, D)}`` plus ``{video_id: reason}`` for failures.

    Row i covers [i, i + 1) seconds unless ``timestamps`` gives a video's (start_s, end_s) per row.
    """

    def __init__(
        self,
        features: dict[str, np.ndarray],
        failed: dict[str, str] | None = None,
        random_weights: bool = False,
        timestamps: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self._features = {
            k: np.asarray(v, dtype=np.float32).reshape(-1, np.shape(v)[-1]) for k, v in features.items()
        }
        self._failed = dict(failed or {})
        self.random_weights = random_weights
        self._timestamps = dict(timestamps or {})

    def timestamps(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        if video_id in self._timestamps:
            start, end = self._timestamps[video_id]
            return np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
        start = np.arange(len(self._features[video_id]), dtype=np.float64)
        return start, start + 1.0

    def video_ids(self, status: str = "ok") -> list[str]:
        return sorted(self._features) if status == "ok" else sorted(self._failed)

    def index(self) -> pd.DataFrame:
        rows = [{"video_id": v, "status": "ok", "reason": ""} for v in self._features]
        rows += [{"video_id": v, "status": "failed", "reason": r} for v, r in self._failed.items()]
        return pd.DataFrame(rows, columns=["video_id", "status", "reason"])

    def features(self, video_id: str) -> np.ndarray:
        return self._features[video_id]

    def pooled(self, video_ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
        ids = list(video_ids) if video_ids is not None else self.video_ids()
        return ids, np.stack([self._features[v].mean(axis=0) for v in ids])


def open_store(path: str | Path) -> FeatureSource:
    """Open one of our feature stores (``pipeline.store``)."""
    from pipeline.store import FeatureStore

    return FeatureStore.open(path)


def load_from_stores(
    audio: FeatureSource,
    visual: FeatureSource,
    manifest: pd.DataFrame | str | Path,
    *,
    temporal: bool = False,
    class_split_dir: str | Path | None = None,
    setting: str = "main",
    embeddings: Literal["w2v", "minilm", "glove"] = "minilm",
    embedding_path: str | Path | None = None,
    name_map_csv: str | Path | None = None,
    indexing: Indexing = "corrected",
    window_tolerance_s: float = 1.0,
) -> GZSLData:
    """Join two stores on video_id using a manifest with ``video_id, label, split``.

    ``split`` is ``s1_train`` ... ``s2_test_unseen`` (as ``pipeline.manifest``) or the folder name
    ``stage_1_train`` ...; rows without a split are not used.

    Class lists per split folder come from ``class_split_dir`` (AV-GZSL layout) when given, else from the
    labels that occur in each split of the manifest.
    """
    table = pd.read_parquet(manifest) if isinstance(manifest, str | Path) else manifest
    missing = {"video_id", "label", "split"} - set(table.columns)
    if missing:
        raise ValueError(f"manifest: missing columns {sorted(missing)} (need video_id, label, split)")
    table = table.dropna(subset=["label", "split"])
    table = table.assign(split=table["split"].map(lambda s: SHORT_SPLITS.get(s, s)))
    bad = sorted(set(table["split"].dropna()) - set(STAGE_FOLDERS), key=str)
    if bad:
        raise ValueError(
            f"manifest: split values {bad[:5]} unknown; use {sorted(SHORT_SPLITS)} or the folder names {STAGE_FOLDERS}"
        )
    if class_split_dir is not None:
        class_names, class_lists = read_class_split(Path(class_split_dir), setting)
    else:
        class_names = sorted(set(table["label"]))
        class_lists = {
            s: class_ids(
                sorted(set(table.loc[table["split"] == s, "label"])), class_names, f"manifest split {s}"
            )
            for s in STAGE_FOLDERS
        }
    dropped = _not_ok(audio, "audio") | _not_ok(visual, "visual")
    ok_a, ok_v = set(audio.video_ids("ok")), set(visual.video_ids("ok"))
    records = []
    for v, s, label in zip(table.video_id, table.split, table.label, strict=True):
        if v in dropped:
            records.append({"video_id": v, "split": s, "label": label, "reason": dropped[v]})
        elif v not in ok_a or v not in ok_v:
            where = "audio" if v not in ok_a else "visual"
            records.append({"video_id": v, "split": s, "label": label, "reason": f"not in the {where} store"})
    skip = {r["video_id"] for r in records}
    if records:
        log.warning("%d manifest videos have no usable features; recorded in the run's metrics", len(records))
    stages = {}
    for stage in STAGE_FOLDERS:
        rows = table[(table["split"] == stage) & ~table["video_id"].isin(skip)]
        ids = rows["video_id"].astype(str).tolist()
        labels = np.array(class_ids_per_row(rows["label"].tolist(), class_names), dtype=np.int64)
        if temporal:  # sequences are paired step by step: their windows must cover the same time
            check_windows(ids, audio.timestamps, visual.timestamps, window_tolerance_s)
        stages[stage] = StageData(ids, labels, *(_read(src, ids, temporal) for src in (audio, visual)))
    name_map = read_name_map(name_map_csv) if name_map_csv else None
    matrix = class_embeddings(class_names, embeddings, embedding_path, name_map, indexing)
    notes = random_weights_notes({"audio": audio, "visual": visual})
    return assemble(stages, class_lists, class_names, matrix, "stores", indexing, temporal, records, notes)


def random_weights_notes(stores: dict[str, FeatureSource]) -> list[str]:
    """The label every result on features of randomly initialised extractors carries (store header flag)."""
    random = [modality for modality, store in stores.items() if store.random_weights]
    if not random:
        return []
    return [
        f"{' and '.join(random)} features from RANDOMLY INITIALISED extractors: not pretrained features, "
        "so these numbers say nothing about what the model achieves on real features"
    ]


def class_ids_per_row(labels: list[str], class_names: list[str]) -> list[int]:
    lookup = {c.lower(): i for i, c in enumerate(class_names)}
    try:
        return [lookup[str(lab).lower()] for lab in labels]
    except KeyError as err:
        raise ValueError(f"manifest label {err} is not in the class list") from None


def _not_ok(store: FeatureSource, modality: str) -> dict[str, str]:
    index = store.index()
    bad = index[index["status"] != "ok"]
    reasons = bad["reason"] if "reason" in bad.columns else [""] * len(bad)
    return {
        str(v): f"{modality} {st}: {r}".strip()
        for v, st, r in zip(bad["video_id"], bad["status"], reasons, strict=True)
    }


def _read(store: FeatureSource, ids: list[str], temporal: bool) -> list[np.ndarray] | np.ndarray:
    if not ids:
        return np.zeros((0, 1), dtype=np.float32)
    if temporal:
        return [np.asarray(store.features(v), dtype=np.float32) for v in ids]
    got, pooled = store.pooled(ids)
    if list(got) != ids:
        raise ValueError("feature store returned pooled rows in another order than requested")
    return np.asarray(pooled, dtype=np.float32)
