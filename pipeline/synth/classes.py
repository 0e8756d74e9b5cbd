"""Compositional classes for the synthetic zero-shot dataset: each class is one value per attribute.

Zero-shot transfer is only possible when unseen classes are new *combinations* of attribute values that
training has shown, and when a class's description names those values. So stage-1 seen classes are
chosen first to cover every attribute value in use, and unseen classes are then drawn from the
remaining combinations of those same values. Each class gets a distinct visual triple and a distinct
audio triple where the attribute space allows, so either modality alone can identify it (with noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

VISUAL_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": ("red", "green", "blue", "yellow"),
    "shape": ("circle", "square", "triangle", "cross"),
    "motion": ("bouncing", "circling", "sliding", "pulsing"),
}
AUDIO_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "pitch": ("low", "mid", "high"),
    "timbre": ("flute", "reed", "bell", "buzz"),
    "rhythm": ("steady", "slow", "fast"),
}
ATTRIBUTES: dict[str, tuple[str, ...]] = {**VISUAL_ATTRIBUTES, **AUDIO_ATTRIBUTES}
ROLES = ("seen", "val_unseen", "test_unseen")
_RHYTHM_WORDS = {"steady": "held steadily", "slow": "beating slowly", "fast": "beating fast"}


@dataclass(frozen=True)
class SynthClass:
    """One class: its attribute values, a short unique name, a sentence for text embeddings and its role."""

    class_id: int
    attributes: dict[str, str]
    role: str

    @property
    def name(self) -> str:
        return "_".join(self.attributes[a] for a in ATTRIBUTES)

    @property
    def description(self) -> str:
        a = self.attributes
        return (
            f"a {a['colour']} {a['shape']} {a['motion']} with a {a['pitch']} {a['timbre']} tone "
            f"{_RHYTHM_WORDS[a['rhythm']]}"
        )

    @property
    def visual_key(self) -> tuple[str, ...]:
        return tuple(self.attributes[a] for a in VISUAL_ATTRIBUTES)

    @property
    def audio_key(self) -> tuple[str, ...]:
        return tuple(self.attributes[a] for a in AUDIO_ATTRIBUTES)


def role_counts(n_classes: int, unseen_fraction: float, val_unseen_fraction: float) -> dict[str, int]:
    """Classes per role: one or more unseen of each kind, as the two-stage protocol needs both, and two or more
    seen, since unseen classes must recombine attribute values that differ between seen classes."""
    n_test = max(1, round(n_classes * unseen_fraction))
    n_val = max(1, round(n_classes * val_unseen_fraction))
    n_seen = n_classes - n_test - n_val
    if n_seen < 2:
        raise ValueError(
            f"{n_classes} classes leave fewer than 2 seen classes with unseen_fraction={unseen_fraction} and "
            f"val_unseen_fraction={val_unseen_fraction}; use more classes or smaller fractions"
        )
    return {"seen": n_seen, "val_unseen": n_val, "test_unseen": n_test}


def design_classes(
    n_classes: int, unseen_fraction: float = 0.25, val_unseen_fraction: float = 0.25, seed: int = 0
) -> list[SynthClass]:
    """Choose ``n_classes`` attribute combinations and their roles, deterministically for ``seed``.

    Class ids follow the sorted class names (as ``label_code`` does in AV-GZSL, docs/benchmark.md).
    """
    counts = role_counts(n_classes, unseen_fraction, val_unseen_fraction)
    capacity = int(np.prod([len(v) for v in ATTRIBUTES.values()]))
    if n_classes > capacity:
        raise ValueError(f"at most {capacity} distinct synthetic classes exist; asked for {n_classes}")
    rng = np.random.default_rng(seed)
    # Values in use: a seen class must show each of them, so there can be no more than seen classes.
    active = [
        tuple(values[i] for i in sorted(rng.permutation(len(values))[: min(len(values), counts["seen"])]))
        for values in ATTRIBUTES.values()
    ]
    combos = list(product(*active))
    candidates = [combos[i] for i in rng.permutation(len(combos))]
    n_unseen = counts["val_unseen"] + counts["test_unseen"]
    if n_classes > len(candidates):
        raise ValueError(
            f"{n_classes} classes do not fit the attribute values covered by {counts['seen']} seen classes"
        )
    chosen = _pick(candidates, [], counts["seen"], cover=True)
    unseen = _pick(candidates, chosen, n_unseen, cover=False)
    roles = (
        ["seen"] * len(chosen)
        + ["val_unseen"] * counts["val_unseen"]
        + ["test_unseen"] * counts["test_unseen"]
    )
    drafts = [
        SynthClass(0, dict(zip(ATTRIBUTES, combo, strict=True)), role)
        for combo, role in zip(chosen + unseen, roles, strict=True)
    ]
    ordered = sorted(drafts, key=lambda c: c.name)
    return [SynthClass(i, c.attributes, c.role) for i, c in enumerate(ordered)]


_N_VISUAL = len(VISUAL_ATTRIBUTES)


def _pick(
    candidates: list[tuple[str, ...]], taken: list[tuple[str, ...]], n: int, cover: bool
) -> list[tuple[str, ...]]:
    """Pick ``n`` new combinations in candidate order, preferring ones whose visual and audio triples are unused.

    With ``cover`` each pick is the one showing the most attribute values not yet shown (greedy set cover),
    so seen classes cover every value in use; it is an error if they cannot. Without it, each pick is the
    first one differing most from those already picked (max-min attribute differences).
    """
    used = set(taken)
    used_visual = {c[:_N_VISUAL] for c in taken}
    used_audio = {c[_N_VISUAL:] for c in taken}
    uncovered = {(i, v) for c in candidates for i, v in enumerate(c)}
    picked: list[tuple[str, ...]] = []
    for _ in range(n):
        pool = [c for c in candidates if c not in used]
        strict = [
            c for c in pool if c[:_N_VISUAL] not in used_visual and c[_N_VISUAL:] not in used_audio
        ] or pool
        if cover:
            best = max(strict, key=lambda c: len(uncovered.intersection(enumerate(c))))
        else:  # unseen classes as unlike each other as possible, so each one is recognisable among them
            best = max(strict, key=lambda c: min((_differences(c, p) for p in picked), default=0))
        picked.append(best)
        used.add(best)
        used_visual.add(best[:_N_VISUAL])
        used_audio.add(best[_N_VISUAL:])
        uncovered.difference_update(enumerate(best))
    if cover and uncovered:
        names = list(ATTRIBUTES)
        missing = sorted(f"{names[i]}={v}" for i, v in uncovered)
        raise ValueError(f"seen classes cannot show attribute values {missing}; use more classes")
    return picked


def _differences(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))
