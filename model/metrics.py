"""GZSL metrics with calibrated stacking (docs/benchmark.md).

S and U are per-class mean recalls over seen and unseen test classes with all split classes as candidates;
HM = 2SU / (S + U + eps); ZSL restricts videos and candidates to unseen classes. Calibrated stacking adds
beta to the distance of every seen class; beta is swept on validation and the first maximiser of HM kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

HM_EPS = 1e-12


@dataclass
class GZSLScores:
    """Fractions in [0, 1]; ``per_class`` maps class id -> recall in the GZSL setting."""

    seen: float
    unseen: float
    hm: float
    zsl: float
    beta: float
    per_class: dict[int, float] = field(default_factory=dict)
    per_class_zsl: dict[int, float] = field(default_factory=dict)


def per_class_recall(pred: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> dict[int, float]:
    """Recall of each class in ``classes`` that has at least one video."""
    out = {}
    for c in classes:
        mask = labels == c
        if int(mask.sum()) > 0:
            out[c] = float((pred[mask] == c).float().mean())
    return out


def mean_of(recalls: dict[int, float], classes: list[int]) -> float:
    vals = [recalls[c] for c in classes if c in recalls]
    return sum(vals) / len(vals) if vals else 0.0


def harmonic_mean(seen: float, unseen: float) -> float:
    return 2 * seen * unseen / (seen + unseen + HM_EPS)


def predict(distances: torch.Tensor, classes: list[int], seen: list[int], beta: float) -> torch.Tensor:
    """argmin over split classes of distance + beta * [class is seen]; returns class ids."""
    cand = torch.tensor(classes, device=distances.device)
    penalty = torch.tensor([beta if c in set(seen) else 0.0 for c in classes], device=distances.device)
    return cand[torch.argmin(distances[:, cand] + penalty, dim=1)]


def gzsl_scores(
    distances: torch.Tensor, labels: torch.Tensor, seen: list[int], unseen: list[int], beta: float
) -> GZSLScores:
    """All metrics at one beta. ``distances`` is (N, n_all_classes), columns indexed by class id."""
    classes = sorted(set(seen) | set(unseen))
    pred = predict(distances, classes, seen, beta)
    recalls = per_class_recall(pred, labels, classes)
    s, u = mean_of(recalls, seen), mean_of(recalls, unseen)
    zsl_recalls: dict[int, float] = {}
    if unseen:
        mask = torch.isin(labels, torch.tensor(unseen, device=labels.device))
        if int(mask.sum()):
            zpred = predict(distances[mask], sorted(unseen), [], 0.0)
            zsl_recalls = per_class_recall(zpred, labels[mask], sorted(unseen))
    zsl = mean_of(zsl_recalls, unseen)
    return GZSLScores(s, u, harmonic_mean(s, u), zsl, beta, recalls, zsl_recalls)


def beta_grid(low: float, high: float, count: int) -> list[float]:
    """The published sweep is linspace(0, 3, 16)."""
    return torch.linspace(low, high, count, dtype=torch.float64).tolist()


def calibrate(
    distances: torch.Tensor, labels: torch.Tensor, seen: list[int], unseen: list[int], betas: list[float]
) -> tuple[GZSLScores, list[dict[str, float]]]:
    """Sweep beta; return the scores at the first beta with the highest HM and the whole curve."""
    if not betas:
        raise ValueError("calibrate: empty beta grid")
    best: GZSLScores | None = None
    curve = []
    for beta in betas:
        sc = gzsl_scores(distances, labels, seen, unseen, beta)
        curve.append({"beta": beta, "S": sc.seen, "U": sc.unseen, "HM": sc.hm})
        if best is None or sc.hm > best.hm:
            best = sc
    return best, curve  # type: ignore[return-value]
