"""A synthetic audio-visual GZSL benchmark with known structure (tests, benchmarks, demos).

Each class has a latent attribute vector; its class embedding and both modalities are different random
non-linear maps of the attributes plus noise. A model can therefore transfer to unseen classes only by
learning the attribute link between features and class embeddings, which is what the protocol measures.
"""

from __future__ import annotations

import numpy as np
import torch

from model.data.gzsl import GZSLData, StageData, assemble


def make_synthetic(
    n_seen: int = 12,
    n_val_unseen: int = 4,
    n_test_unseen: int = 4,
    videos_per_class: int = 30,
    audio_dim: int = 32,
    visual_dim: int = 48,
    embedding_dim: int = 32,
    attributes: int = 12,
    noise: float = 0.3,
    temporal_steps: int = 0,
    seed: int = 0,
) -> GZSLData:
    """Build all five split folders the way the benchmark does (docs/benchmark.md structure).

    Seen classes split their videos 70/15/15 into stage_1_train / stage_1_val_seen / stage_2_test_seen;
    stage-1 unseen classes split 85/15 into stage_1_val_unseen / stage_2_test_seen (they are stage-2 seen);
    test-unseen classes go entirely to stage_2_test_unseen. ``temporal_steps > 0`` gives (T, D) sequences
    of varying length (T/2..T).
    """
    rng = np.random.default_rng(seed)
    n_classes = n_seen + n_val_unseen + n_test_unseen
    attr = rng.normal(size=(n_classes, attributes)).astype(np.float32)
    maps = {
        m: rng.normal(size=(attributes, d)).astype(np.float32) / np.sqrt(attributes)
        for m, d in (("w", embedding_dim), ("a", audio_dim), ("v", visual_dim))
    }
    emb = np.tanh(attr @ maps["w"])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    perm = rng.permutation(n_classes)
    seen, val_unseen, test_unseen = (
        perm[:n_seen],
        perm[n_seen : n_seen + n_val_unseen],
        perm[n_seen + n_val_unseen :],
    )
    names = [f"class{c:03d}" for c in range(n_classes)]
    folders: dict[str, list[tuple[str, int]]] = {
        s: []
        for s in (
            "stage_1_train",
            "stage_1_val_seen",
            "stage_1_val_unseen",
            "stage_2_test_seen",
            "stage_2_test_unseen",
        )
    }
    for c in range(n_classes):
        vids = [(f"v_{names[c]}_{k:03d}", c) for k in range(videos_per_class)]
        a, b = int(0.7 * videos_per_class), int(0.85 * videos_per_class)
        if c in seen:
            folders["stage_1_train"] += vids[:a]
            folders["stage_1_val_seen"] += vids[a:b]
            folders["stage_2_test_seen"] += vids[b:]
        elif c in val_unseen:
            folders["stage_1_val_unseen"] += vids[:b]
            folders["stage_2_test_seen"] += vids[b:]
        else:
            folders["stage_2_test_unseen"] += vids
    stages = {}
    for folder, items in folders.items():
        labels = np.array([c for _, c in items], dtype=np.int64)
        audio = _modality(attr[labels], maps["a"], noise, temporal_steps, rng)
        visual = _modality(attr[labels], maps["v"], noise, temporal_steps, rng)
        stages[folder] = StageData([v for v, _ in items], labels, audio, visual)
    class_lists = {
        "stage_1_train": sorted(seen.tolist()),
        "stage_1_val_seen": sorted(seen.tolist()),
        "stage_1_val_unseen": sorted(val_unseen.tolist()),
        "stage_2_test_seen": sorted(seen.tolist() + val_unseen.tolist()),
        "stage_2_test_unseen": sorted(test_unseen.tolist()),
    }
    return assemble(
        stages,
        class_lists,
        names,
        torch.from_numpy(emb.astype(np.float32)),
        f"synthetic(seed={seed})",
        temporal=temporal_steps > 0,
    )


def _modality(attr: np.ndarray, proj: np.ndarray, noise: float, steps: int, rng: np.random.Generator):
    clean = np.tanh(attr @ proj)
    if steps <= 0:
        return (clean + noise * rng.normal(size=clean.shape)).astype(np.float32)
    out = []
    for row in clean:
        t = int(rng.integers(max(steps // 2, 1), steps + 1))
        out.append((row[None, :] + noise * rng.normal(size=(t, len(row)))).astype(np.float32))
    return out
