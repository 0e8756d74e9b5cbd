"""The protocol's training pairs (docs/benchmark.md), drawn for a whole epoch at once as index tensors.

Each item is a positive video plus a negative video whose class is drawn uniformly from the *other*
training classes. Batches are class-balanced with replacement (AVCA's ``WeightedRandomBatchSampler`` with
alpha = 1: every class equally likely, then a video uniformly within the class). Drawing all
``n_batches x batch_size`` indices in a few vectorised ops and gathering rows from pre-loaded tensors
replaces the per-sample Dataset + DataLoader workers of the reference code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EpochPairs:
    """Row indices into the split's tensors, shape (n_batches, batch_size) each."""

    positive: torch.Tensor
    negative: torch.Tensor


class PairSampler:
    """Class-balanced positive/negative index sampler over one split's labels."""

    def __init__(self, labels: torch.Tensor) -> None:
        labels = labels.cpu()
        classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        if len(classes) < 2:
            raise ValueError(
                "pair sampling needs at least two training classes (negatives come from other classes)"
            )
        self.classes = classes
        self.order = torch.argsort(inverse, stable=True)  # rows grouped by class
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts

    def epoch(self, n_batches: int, batch_size: int, generator: torch.Generator) -> EpochPairs:
        n = n_batches * batch_size
        k = len(self.classes)
        pos_class = torch.randint(k, (n,), generator=generator)
        neg_class = (pos_class + torch.randint(1, k, (n,), generator=generator)) % k
        pos = self._pick(pos_class, generator)
        neg = self._pick(neg_class, generator)
        return EpochPairs(pos.view(n_batches, batch_size), neg.view(n_batches, batch_size))

    def _pick(self, cls: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        offset = (torch.rand(len(cls), generator=generator) * self.counts[cls]).long()
        offset = torch.minimum(offset, self.counts[cls] - 1)
        return self.order[self.starts[cls] + offset]
