"""Loader for the published ``avgzsl_benchmark_datasets`` layout (docs/benchmark.md).

Averaged features: one ``<Class>.h5`` per class per split folder with ``data`` (N, D) and ``video_urls``
(S80 bytes or vlen str). Temporal features (TCaF, root ``avgzsl_benchmark_non_averaged_datasets``): one
``<Class>.pkl`` per class per split folder of ``<setting>_features_non_averaged/{audio,video}`` holding a
dict ``features`` (list of (T_i, D)), ``video_names`` (bytes) and ``fps``; its class-name embeddings sit
in that folder's ``text/``. Audio and video are joined on the
video name; a video missing in one modality or with empty features is dropped *and recorded*.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from model.data.embeddings import Indexing, class_embeddings, read_name_map
from model.data.gzsl import STAGE_FOLDERS, GZSLData, StageData, assemble, class_ids

log = logging.getLogger(__name__)

# dataset folder -> (w2v npy short name, w2v csv prefix)
DATASETS = {
    "UCF": ("ucf", "ucf"),
    "ActivityNet": ("activity", "activitynet"),
    "VGGSound": ("vggsound", "vggsound"),
}
EmbeddingKind = Literal["w2v", "minilm", "glove"]


def read_class_split(class_split_dir: Path, setting: str) -> tuple[list[str], dict[str, list[int]]]:
    """Global class list (case-sensitively sorted all_class.txt) and the class ids listed per split folder."""
    all_class = class_split_dir / "all_class.txt"
    if not all_class.is_file():
        raise FileNotFoundError(
            f"{all_class}: not found; expected <root>/<Dataset>/class-split/all_class.txt"
        )
    class_names = sorted(line.strip() for line in all_class.read_text().splitlines() if line.strip())
    split_dir = class_split_dir / f"{setting}_split"
    lists = {}
    for stage in STAGE_FOLDERS:
        txt = split_dir / f"{stage}.txt"
        if not txt.is_file():
            raise FileNotFoundError(f"{txt}: split class list not found")
        names = [line.strip() for line in txt.read_text().splitlines() if line.strip()]
        lists[stage] = class_ids(names, class_names, str(txt))
    return class_names, lists


def read_h5_class(path: Path) -> tuple[list[str], np.ndarray]:
    """(video names, (N, D) features) of one class file; names accepted as S80 bytes or vlen str."""
    try:
        with h5py.File(path, "r") as f:
            data = np.asarray(f["data"][()], dtype=np.float32)
            urls = [_text(u) for u in f["video_urls"][()]]
    except (OSError, KeyError) as err:
        raise ValueError(
            f"{path}: not a readable AV-GZSL class file with 'data' and 'video_urls' ({err})"
        ) from None
    if data.ndim != 2 or len(data) != len(urls):
        raise ValueError(f"{path}: data shape {data.shape} does not match {len(urls)} video_urls")
    return urls, data


def read_pkl_class(path: Path) -> tuple[list[str], list[np.ndarray]]:
    """(video names, list of (T_i, D)) of one TCaF class pickle (benchmark-produced file, trusted)."""
    with open(path, "rb") as f:
        obj = pickle.load(f)  # noqa: S301 - benchmark layout; only load files you produced or trust
    if not isinstance(obj, dict) or "features" not in obj or "video_names" not in obj:
        raise ValueError(f"{path}: expected a dict with 'features' and 'video_names'")
    names = [_text(n) for n in obj["video_names"]]
    feats = [
        np.asarray(x, dtype=np.float32).reshape(len(x), -1) if len(x) else np.zeros((0, 0))
        for x in obj["features"]
    ]
    if len(names) != len(feats):
        raise ValueError(f"{path}: {len(names)} video_names but {len(feats)} feature arrays")
    return names, feats


def load_published(
    root: str | Path,
    dataset: str,
    setting: Literal["main", "cls"] = "main",
    *,
    temporal: bool = False,
    features_dir: str | Path | None = None,
    class_split_root: str | Path | None = None,
    embeddings: EmbeddingKind = "w2v",
    embedding_path: str | Path | None = None,
    indexing: Indexing = "corrected",
) -> GZSLData:
    """Read one benchmark setting. ``features_dir`` holds ``audio/`` and ``video/`` split folders."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r}: expected one of {sorted(DATASETS)}")
    root = Path(root)
    split_root = Path(class_split_root) if class_split_root else root
    class_split_dir = split_root / dataset / "class-split"
    class_names, class_lists = read_class_split(class_split_dir, setting)
    features_dir = (
        Path(features_dir) if features_dir else default_features_dir(root, dataset, setting, temporal)
    )
    stages, dropped = {}, []
    for stage in STAGE_FOLDERS:
        stages[stage] = _read_stage(features_dir, stage, class_names, temporal, dropped)
    matrix = _class_embeddings(
        class_names,
        class_split_dir,
        features_dir,
        root,
        split_root,
        dataset,
        setting,
        embeddings,
        embedding_path,
        indexing,
    )
    source = f"published:{dataset}/{setting}{'/temporal' if temporal else ''}"
    return assemble(stages, class_lists, class_names, matrix, source, indexing, temporal, dropped)


def default_features_dir(root: Path, dataset: str, setting: str, temporal: bool) -> Path:
    """``<root>/<Dataset>/features/<setting>_features`` (averaged) or ``..._features_non_averaged`` (TCaF).

    TCaF's splitting scripts write ``..._no_averaged`` while its configs read ``..._non_averaged``; a
    tree holding only the former is read from there.
    """
    base = root / dataset / "features" / f"{setting}_features"
    if not temporal:
        return base
    wanted, written = Path(f"{base}_non_averaged"), Path(f"{base}_no_averaged")
    if not wanted.is_dir() and written.is_dir():
        log.info("%s not found; reading %s (the name TCaF's splitting scripts write)", wanted, written)
        return written
    return wanted


def _read_stage(
    features_dir: Path, stage: str, class_names: list[str], temporal: bool, dropped: list[dict[str, str]]
) -> StageData:
    ext = "pkl" if temporal else "h5"
    audio_dir, video_dir = features_dir / "audio" / stage, features_dir / "video" / stage
    for d in (audio_dir, video_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: split folder not found (expected one .{ext} per class)")
    reader = read_pkl_class if temporal else read_h5_class
    ids, labels, audio, visual = [], [], [], []
    dropped_before = len(dropped)
    for a_path in sorted(audio_dir.glob(f"*.{ext}")):
        label = class_ids([a_path.stem], class_names, str(a_path))[0]
        v_path = video_dir / a_path.name
        if not v_path.is_file():
            raise FileNotFoundError(f"{v_path}: audio has {a_path.name} but video has no such class file")
        a_names, a_feats = reader(a_path)
        v_names, v_feats = reader(v_path)
        v_index = {n: i for i, n in enumerate(v_names)}
        for k, name in enumerate(a_names):
            reason = _problem(name, v_index, a_feats[k], v_feats, temporal)
            if reason:
                dropped.append({"video_id": name, "split": stage, "reason": reason})
                continue
            ids.append(name)
            labels.append(label)
            audio.append(a_feats[k])
            visual.append(v_feats[v_index[name]])
        for name in set(v_names) - set(a_names):
            dropped.append(
                {"video_id": name, "split": stage, "reason": "video features without audio features"}
            )
    if len(dropped) > dropped_before:
        log.warning(
            "%s: %d videos dropped (recorded in the run's metrics)", stage, len(dropped) - dropped_before
        )
    if not ids:
        raise FileNotFoundError(f"{audio_dir}: no .{ext} class files with usable videos")
    if not temporal:
        return StageData(ids, np.array(labels), np.stack(audio), np.stack(visual))
    return StageData(ids, np.array(labels), audio, visual)


def _problem(name: str, v_index: dict[str, int], a_feat: np.ndarray, v_feats: list, temporal: bool) -> str:
    if name not in v_index:
        return "audio features without video features"
    if temporal and (len(a_feat) == 0 or len(v_feats[v_index[name]]) == 0):
        return "empty feature sequence"
    return ""


def _class_embeddings(
    class_names: list[str],
    class_split_dir: Path,
    features_dir: Path,
    root: Path,
    split_root: Path,
    dataset: str,
    setting: str,
    kind: EmbeddingKind,
    path: str | Path | None,
    indexing: Indexing,
):
    short, csv_prefix = DATASETS[dataset]
    csv_path = class_split_dir / f"{csv_prefix}_w2v_class_names.csv"
    name_map = read_name_map(csv_path) if csv_path.is_file() else None
    if kind == "w2v" and path is None:
        fname = f"word_embeddings_{short}_normed.npy"
        candidates = [
            features_dir / "text" / fname,  # TCaF: <setting>_features_non_averaged/text
            root / dataset / "features" / f"{setting}_features" / "text" / fname,
            split_root / "w2v_features" / fname,
            root / "w2v_features" / fname,
        ]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise FileNotFoundError(
                f"class embeddings {fname} not found; looked in {[str(c) for c in candidates]}"
            )
    return class_embeddings(class_names, kind, path, name_map, indexing)


def _text(value: object) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).rstrip(b"\x00").decode("utf-8")
    return str(value)
