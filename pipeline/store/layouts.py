"""Export stores to, and import them from, the published AV-GZSL layouts and video_features npy files.

Layouts (docs/benchmark.md, docs/reference-defects.md):

- ``h5`` (AVCA, averaged): ``<modality>/<split>/<Class>.h5`` with ``data`` (N, D) float32 (the pooled
  mean per video) and ``video_urls`` (variable-length UTF-8 strings; byte strings accepted on import).
- ``pkl`` (TCaF, temporal): ``<modality>/<split>/<Class>.pkl``, a dict ``features`` (list of (T_i, D)
  arrays), ``video_names`` (list of bytes) and ``fps`` (list of ints).
- ``npy`` (video_features): ``<key>/<video_id>_<key>.npy`` (T, D), one folder per extractor as video_features
  writes them (``output/<feature_type>/``), plus ``<video_id>_timestamps_ms.npy`` (row
  start times in ms, as video_features writes) and ``<video_id>_window_s.npy`` ((T, 2) start/end seconds,
  ours, so a round trip keeps exact windows).

Exports need labels and splits, so they take a manifest (video_id, label, split), and write only videos
that every exported store has: the h5/pkl layouts take an audio and a visual store together, because the
AV-GZSL loaders read both trees and require the same videos in the same order. Each layout folder also gets
``avzsl_export.json`` (which extractor, weights and mode made each modality), which an import reads back.
An import writes the store plus ``manifest.parquet`` (video_id, path, label, split) inside the store
directory, so published features train without re-extraction. Layouts without timestamps import with NaN
start/end seconds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from pipeline.manifest import VideoManifest
from pipeline.store.lease import StoreLease
from pipeline.store.shard import fsync_file
from pipeline.store.store import FeatureStore, StoreError

LAYOUTS = ("h5", "pkl", "npy")
GROUPED_LAYOUTS = ("h5", "pkl")  # audio and video side by side, read together by the AV-GZSL loaders
LAYOUT_DIRS = {"h5": "averaged", "pkl": "non_averaged", "npy": "npy"}
IMPORT_MANIFEST = "manifest.parquet"
EXPORT_INFO = "avzsl_export.json"  # in each layout folder: what made each modality (random weights or not)
DEFAULT_FPS = 25  # what the published temporal files record (docs/benchmark.md)
VF_AUDIO_KEYS = ("vggish",)  # video_features' audio feature types; every other one is visual
NPY_AUXILIARY = ("timestamps_ms", "window_s", "fps")  # per-video files beside the features, not features
_IMPORT_SHARD_VIDEOS = 1000
STAGE2_TRAIN_FROM = ("s1_train", "s1_val_seen", "s1_val_unseen")


@dataclass
class ExportReport:
    out_dir: Path
    files: int = 0
    videos: int = 0  # manifest videos exported: those with features in every store
    missing: dict[str, list[str]] = field(default_factory=dict)  # store label -> manifest videos it lacks

    @property
    def dropped(self) -> list[str]:
        """Manifest videos left out because at least one store has no features for them."""
        return sorted(set().union(*self.missing.values()))


def modality_dir(store: FeatureStore) -> str:
    """AV-GZSL folder name for the store's modality: ``audio`` or ``video``."""
    modality = str(store.header.get("spec", {}).get("modality", "visual"))
    return "audio" if modality == "audio" else "video"


def store_label(store: FeatureStore) -> str:
    return f"{store.header.get('spec', {}).get('name', store.path.name)} ({modality_dir(store)})"


def export_stores(
    stores: list[FeatureStore],
    manifest: pd.DataFrame,
    out_dir: str | Path,
    layouts: tuple[str, ...] = LAYOUTS,
) -> ExportReport:
    """Write the manifest videos that have features in every store, in the requested layouts.

    The h5/pkl layouts hold one audio and one visual store side by side: the AV-GZSL loaders read both
    trees and assert that they list the same videos in the same order, so a video missing from either
    store is left out of both (``report.missing`` says which and why). The npy layout (video_features)
    takes any stores and writes each into a folder named after its extractor.
    """
    unknown = set(layouts) - set(LAYOUTS)
    if unknown:
        raise StoreError(f"unknown export layout(s) {sorted(unknown)}; choose from {LAYOUTS}")
    if not stores:
        raise StoreError("nothing to export: pass at least one store")
    by_modality = {modality_dir(store): store for store in stores}
    keys = [_npy_key(store) for store in stores]
    if "npy" in layouts and len(set(keys)) < len(keys):
        raise StoreError(f"the npy layout writes one folder per extractor; several stores are named {keys}")
    if set(layouts) & set(GROUPED_LAYOUTS) and (len(stores) != 2 or set(by_modality) != {"audio", "video"}):
        given = ", ".join(store_label(s) for s in stores)
        raise StoreError(
            f"the h5/pkl layouts hold audio and video together (the AV-GZSL loaders need the same videos in "
            f"both), so they need one audio and one visual store; got {given}. Use --layout npy for other sets"
        )
    report = ExportReport(Path(out_dir))
    wanted = set(manifest["video_id"])
    available = [_with_features(store) for store in stores]
    for store, have in zip(stores, available, strict=True):
        if wanted - have:
            report.missing[store_label(store)] = sorted(wanted - have)
    rows = manifest[manifest["video_id"].isin(wanted.intersection(*available))]
    report.videos = int(rows["video_id"].nunique())
    for layout in layouts:
        root = report.out_dir / LAYOUT_DIRS[layout]
        if layout != "npy":
            report.files += _write_grouped(by_modality, rows, root, layout)
            _write_export_info(root, stores)
            continue
        for store in stores:
            folder = root / _npy_key(store)
            for video_id in rows["video_id"].drop_duplicates():
                _write_npy(store, str(video_id), folder)
                report.files += 1
            _write_export_info(folder, [store])
    return report


def _with_features(store: FeatureStore) -> set[str]:
    index = store.index()
    return set(index.index[index["shard"].notna()])


def _write_grouped(by_modality: dict[str, FeatureStore], rows: pd.DataFrame, root: Path, layout: str) -> int:
    """One file per (modality, split, class); the audio and video file of a class are written one after
    the other, so both split folders list their files in the same order (AVCA iterates them unsorted)."""
    for column in ("label", "split"):
        if column not in rows.columns or rows[column].isna().any():
            raise StoreError(
                f"manifest: column {column!r} missing or empty; the h5/pkl layouts need label and split"
            )
    files = 0
    for (split, label), group in _with_stage2_train(rows).groupby(["split", "label"], sort=True):
        ids = [str(v) for v in group["video_id"]]
        for modality, store in sorted(by_modality.items()):
            target = root / modality / split_folder(str(split)) / f"{label}.{layout}"
            if layout == "h5":
                _write_h5(target, store.pooled(ids)[1], ids)
            else:
                _write_pkl(target, [store.features(v) for v in ids], ids, _fps(store))
            files += 1
    return files


def _write_export_info(root: Path, stores: list[FeatureStore]) -> None:
    """Record what made each exported modality, so an import keeps e.g. the random-weights label."""
    entries = []
    for store in stores:
        spec = store.header.get("spec", {})
        entries.append(
            {
                "modality": modality_dir(store),
                "extractor": spec.get("name"),
                "mode": spec.get("mode"),
                "weights_id": spec.get("weights_id"),
                "fingerprint": store.fingerprint,
                "random_weights": store.random_weights,
            }
        )
    text = json.dumps({"stores": entries}, indent=2, sort_keys=True) + "\n"
    _atomic(root / EXPORT_INFO, lambda tmp: tmp.write_text(text))


def import_layout(
    src: str | Path,
    store_path: str | Path,
    layout: str,
    *,
    modality: str | None = None,
    key: str | None = None,
) -> FeatureStore:
    """Read a published layout into a (new or matching) store and write its manifest beside the shards.

    ``src`` is the modality folder (``.../cls_features/audio``) for h5/pkl, or a folder of npy files.
    ``modality`` (audio|video) is taken from ``src``'s name for h5/pkl; for npy from our export's record,
    else from the key (video_features' ``vggish`` is audio, its other features visual). ``key`` names the npy
    feature (``<video_id>_<key>.npy``) and is inferred when the folder holds one kind only. Features that
    ``avzsl store export`` wrote keep what made them (random weights stay labelled as such).
    """
    src = Path(src)
    if layout not in LAYOUTS:
        raise StoreError(f"unknown import layout {layout!r}; choose from {LAYOUTS}")
    if not src.is_dir():
        raise StoreError(f"{src}: not a directory; pass the folder holding the {layout} files")
    if layout == "npy":
        key = key or _infer_npy_key(src)
        origin = _export_origin(src / EXPORT_INFO, extractor=key)
        if modality is None:
            modality = origin["modality"] if origin else ("audio" if key in VF_AUDIO_KEYS else "video")
        items = _read_npy(src, key)
    else:
        modality = modality or (src.name if src.name in ("audio", "video") else None)
        if modality not in ("audio", "video"):
            raise StoreError(f"{src}: cannot tell audio from video; pass modality='audio' or 'video'")
        origin = _export_origin(src.parent / EXPORT_INFO, modality=modality)
        items = _read_grouped(src, layout)
    return _fill_store(items, Path(store_path), layout, src, modality, key, origin)


def _export_origin(path: Path, **match: str) -> dict | None:
    """The record ``export_stores`` left for the store matching ``match``, or None (published files)."""
    if not path.is_file():
        return None
    try:
        entries = json.loads(path.read_text())["stores"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StoreError(f"{path}: unreadable export record ({err}); remove it or re-export") from None
    found = [e for e in entries if all(e.get(k) == v for k, v in match.items())]
    return found[0] if len(found) == 1 else None


def split_folder(split: str) -> str:
    """Manifest split name -> AV-GZSL folder name (``s1_train`` -> ``stage_1_train``); others unchanged."""
    match = re.fullmatch(r"s(\d)_(\w+)", split)
    return f"stage_{match[1]}_{match[2]}" if match else split


def manifest_split(folder: str) -> str:
    """AV-GZSL folder name -> manifest split name (``stage_1_train`` -> ``s1_train``); others unchanged."""
    match = re.fullmatch(r"stage_(\d)_(\w+)", folder)
    return f"s{match[1]}_{match[2]}" if match else folder


def _with_stage2_train(rows: pd.DataFrame) -> pd.DataFrame:
    """Add the published ``stage_2_train`` folder: every stage-1 video (docs/benchmark.md loader splits)."""
    stage1 = rows[rows["split"].isin(STAGE2_TRAIN_FROM)]
    if stage1.empty or "s2_train" in set(rows["split"]):
        return rows
    return pd.concat([rows, stage1.assign(split="s2_train")], ignore_index=True)


# ----------------------------------------------------------------------------- writers
def _write_h5(path: Path, data: np.ndarray, ids: list[str]) -> None:
    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("data", data=np.asarray(data, dtype=np.float32))
            handle.create_dataset("video_urls", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())

    _atomic(path, write)


def _write_pkl(path: Path, features: list[np.ndarray], ids: list[str], fps: int) -> None:
    payload = {"features": features, "video_names": [v.encode() for v in ids], "fps": [fps] * len(ids)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            pickle.dump(payload, handle, protocol=4)

    _atomic(path, write)


def _npy_key(store: FeatureStore) -> str:
    return str(store.header.get("spec", {}).get("name", "features"))


def _write_npy(store: FeatureStore, video_id: str, root: Path) -> None:
    features = store.features(video_id)
    start, end = store.timestamps(video_id)
    key = _npy_key(store)
    for suffix, array in (
        (key, features),
        ("timestamps_ms", start * 1000.0),
        ("window_s", np.stack([start, end], axis=1)),
    ):
        _atomic(root / f"{video_id}_{suffix}.npy", lambda tmp, a=array: _save_npy(tmp, a))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle, so numpy does not append ".npy" to the temp name
        np.save(handle, array)


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        fsync_file(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _fps(store: FeatureStore) -> int:
    spec = store.header.get("spec", {})
    return int(round(float(spec.get("fps") or DEFAULT_FPS)))


# ----------------------------------------------------------------------------- readers
@dataclass
class _Item:
    video_id: str
    features: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    label: str | None
    split: str | None
    source: Path


def _read_grouped(src: Path, layout: str) -> Iterator[_Item]:
    files = sorted(src.glob(f"*/*.{layout}"))
    if not files:
        raise StoreError(f"{src}: no <split>/<Class>.{layout} files found")
    for path in files:
        split, label = manifest_split(path.parent.name), path.stem
        if layout == "h5":
            with h5py.File(path, "r") as handle:
                data = np.asarray(handle["data"])
                names = [_text(v) for v in handle["video_urls"][()]]
            arrays = [row[None, :] for row in data]
        else:
            with open(path, "rb") as handle:
                payload = pickle.load(handle)  # the published pkl layout; only open files you trust
            arrays = [np.asarray(a) for a in payload["features"]]
            names = [_text(v) for v in payload["video_names"]]
        if len(arrays) != len(names):
            raise StoreError(f"{path}: {len(arrays)} feature entries but {len(names)} video names")
        for name, features in zip(names, arrays, strict=True):
            if features.ndim == 1:
                features = features[None, :]
            nan = np.full(features.shape[0], np.nan)
            yield _Item(name, features, nan, nan.copy(), label, split, path)


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _infer_npy_key(src: Path) -> str:
    """The one feature key of ``<video_id>_<key>.npy`` files beside their auxiliary files (fps, times)."""
    keys = set()
    for path in src.rglob("*_*.npy"):
        stem = path.name[: -len(".npy")]
        if not any(stem.endswith(f"_{aux}") for aux in NPY_AUXILIARY):
            keys.add(stem.rsplit("_", 1)[1])
    if len(keys) != 1:
        raise StoreError(
            f"{src}: cannot infer the feature key from {sorted(keys) or 'no <video>_<key>.npy files'}; "
            "pass --key"
        )
    return keys.pop()


def _read_npy(src: Path, key: str) -> Iterator[_Item]:
    files = sorted(src.rglob(f"*_{key}.npy"))
    if not files:
        raise StoreError(f"{src}: no *_{key}.npy files found")
    for path in files:
        video_id = str(path.relative_to(src))[: -len(f"_{key}.npy")]
        features = np.load(path)
        window = path.with_name(path.name[: -len(f"{key}.npy")] + "window_s.npy")
        stamps = path.with_name(path.name[: -len(f"{key}.npy")] + "timestamps_ms.npy")
        if window.exists():
            pair = np.load(window)
            start, end = pair[:, 0], pair[:, 1]
        elif stamps.exists():
            start, end = np.load(stamps) / 1000.0, np.full(features.shape[0], np.nan)
        else:
            start = end = np.full(features.shape[0], np.nan)
        yield _Item(video_id, features, start, end, None, None, path)


def _fill_store(
    items: Iterator[_Item],
    store_path: Path,
    layout: str,
    src: Path,
    modality: str,
    key: str | None,
    origin: dict | None,
):
    first = next(items, None)
    if first is None:
        raise StoreError(f"{src}: no videos found")
    spec = {
        "name": key or (origin or {}).get("extractor") or f"imported-{layout}",
        "modality": "audio" if modality == "audio" else "visual",
        "imported_from": {"layout": layout, "source": src.name, "exported_by_avzsl": origin},
        "output_dim": int(first.features.shape[1]),
        "output_dtype": first.features.dtype.name,
        "random_weights": bool(origin and origin.get("random_weights")),
    }
    fingerprint = "import-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    store = FeatureStore.create(store_path, spec, fingerprint)
    with StoreLease(store.path):  # no extraction or other import writes this store meanwhile
        labels = _write_items(store, itertools.chain([first], items), layout)
        rows = pd.DataFrame(labels, columns=["video_id", "path", "label", "split"])
        info = {"builder": "import", "layout": layout, "source": str(src)}
        VideoManifest(rows, info=info, source=str(src)).to_parquet(store.path / IMPORT_MANIFEST)
    return store


def _write_items(store: FeatureStore, items: Iterator[_Item], layout: str) -> list[dict]:
    """Store each video once (checking repeats are identical); one manifest row per video, its first split."""
    seen: dict[str, str] = {}
    labels: dict[str, dict] = {}
    writer, batch = store.writer(f"import-{layout}-0"), 0
    for item in items:  # the disjoint split folders sort before stage_2_train, so a video keeps its own split
        row = {"video_id": item.video_id, "path": None, "label": item.label, "split": item.split}
        labels.setdefault(item.video_id, row)
        digest = hashlib.sha1(np.ascontiguousarray(item.features).tobytes()).hexdigest()
        if item.video_id in seen:  # the same video in several splits (stage_2_train repeats stage 1)
            if seen[item.video_id] != digest:
                raise StoreError(
                    f"{item.source}: video {item.video_id!r} has different features in another file"
                )
            continue
        seen[item.video_id] = digest
        stat = item.source.stat()
        writer.add(item.video_id, item.features, item.start_s, item.end_s, "ok", None, str(item.source),
                   stat.st_size, stat.st_mtime)  # fmt: skip
        if len(writer) >= _IMPORT_SHARD_VIDEOS:
            writer.commit()
            batch += 1
            writer = store.writer(f"import-{layout}-{batch}")
    writer.commit()
    return list(labels.values())
