"""One training stage: model, optimiser, schedule, the pair-sampled epoch and GZSL evaluation.

The epoch is fast by construction: all pair indices of the epoch are drawn at once (``PairSampler``) and
each batch is a gather from tensors already on the device; no per-sample Python, no loader workers, and
no host sync inside the loop (losses are accumulated on the device; TCaF's collator reads each batch's
longest sequence, one sync per step).

Models come from the registry (``model/registry.py``). The AVCA family (objective ``pairs``) trains on
positive/negative pairs with AVCA's composite loss; ``classes`` models (TCaF) train on the positives only
with their own ``collate`` / ``loss`` / ``after_step``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from model import fast
from model.config import TrainConfig
from model.csgm import CSGM
from model.data.gzsl import GZSLData, SplitData
from model.data.sampling import PairSampler
from model.layers import Pairs
from model.metrics import GZSLScores, beta_grid, calibrate
from model.registry import build_model, get_spec


class Batch(NamedTuple):
    audio: torch.Tensor
    visual: torch.Tensor
    w: torch.Tensor
    audio_mask: torch.Tensor | None
    visual_mask: torch.Tensor | None
    labels: torch.Tensor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def derived_seed(seed: int, *parts: int) -> int:
    """A distinct, reproducible seed per (run seed, stage, epoch): resuming replays the same randomness."""
    value = seed
    for part in parts:
        value = (value * 1_000_003 + part + 1) % (2**62)
    return value


class StageTrainer:
    """Trains on one loader split; ``state_dict`` captures everything needed to resume."""

    def __init__(self, cfg: TrainConfig, data: GZSLData, split: str, stage_index: int):
        self.cfg, self.data, self.stage_index = cfg, data, stage_index
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)  # stage 2 re-initialises exactly like stage 1 (AVCA: same seed)
        self.spec = get_spec(cfg.model)
        model = build_model(cfg, data)
        self.paths = fast.select(cfg.fast_paths, model)
        self.model = self.paths.prepare(model).to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        # fused: one vectorised kernel per parameter instead of ~10 ops each (the same update, ~4x faster)
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", patience=cfg.lr_patience, factor=cfg.lr_factor
        )
        self.train = data.splits[split].to(self.device)
        self.class_emb = data.class_embeddings.to(self.device)
        self.sampler = PairSampler(self.train.labels)
        csgm_cfg = cfg.daan.csgm
        self.csgm = CSGM(csgm_cfg) if cfg.model == "daan" and csgm_cfg.mode != "off" else None
        self.train_classes = torch.tensor(self.train.seen, device=self.device)

    # ---- training -------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        torch.manual_seed(derived_seed(cfg.seed, self.stage_index, epoch, 1))  # dropout, gradient noise
        gen = torch.Generator().manual_seed(derived_seed(cfg.seed, self.stage_index, epoch, 0))
        pairs = self.sampler.epoch(cfg.batches_per_epoch, cfg.batch_size, gen)
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        use_csgm = self.csgm is not None and self.csgm.active(epoch)
        if self.spec.objective == "pairs":
            stacked = torch.cat([pairs.positive, pairs.negative], dim=1).to(self.device)  # (batches, 2B)
            steps = (self.step_on(self.gather(stacked[b]), use_csgm) for b in range(cfg.batches_per_epoch))
        else:
            crops = torch.Generator().manual_seed(derived_seed(cfg.seed, self.stage_index, epoch, 2))
            positives = pairs.positive.to(self.device)
            steps = (self.class_step(positives[b], crops) for b in range(cfg.batches_per_epoch))
        for logs in steps:
            for k, v in logs.items():
                sums[k] = sums.get(k, 0) + v
        out = {k: float(v) / cfg.batches_per_epoch for k, v in sums.items()}
        out["lr"] = self.optimizer.param_groups[0]["lr"]
        out["csgm_active"] = float(use_csgm)
        return out

    def gather(self, idx: torch.Tensor) -> Batch:
        """Rows of the training split by index: a gather, no copies per sample."""
        t = self.train
        am = None if t.audio_mask is None else t.audio_mask[idx]
        vm = None if t.visual_mask is None else t.visual_mask[idx]
        labels = t.labels[idx]
        return Batch(t.audio[idx], t.visual[idx], self.class_emb[labels], am, vm, labels)

    def step_on(self, batch: Batch, use_csgm: bool) -> dict[str, torch.Tensor]:
        """One optimiser step on ready pairs: B positives, then their B negatives, stacked on dim 0."""
        cfg, paths = self.cfg, self.paths
        a, v, w, am, vm, labels = batch
        size = len(a) // 2
        pairs = paths.forward_pairs(self.model, a, v, w, am, vm)
        p, n = pairs.positive, pairs.negative
        terms = paths.avca_loss(p, n, w[:size], cfg.avca.margin)
        loss = terms["total"]
        logs = {k: t.detach() for k, t in terms.items()}
        if cfg.model == "daan" and cfg.daan.align != "off":
            align = paths.alignment_loss(cfg.daan.align, p, n, cfg.daan.align_temperature)
            loss = loss + cfg.daan.align_weight * align
            logs["l_align"] = align.detach()
        if use_csgm:
            logs.update(self._modulate(pairs, labels[:size]))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if use_csgm and self.cfg.daan.csgm.gradient_noise:
            for name, enc in self.model.encoders().items():
                k = logs["k_audio" if name == "audio" else "k_visual"]
                if float(k) < 1:
                    CSGM.add_gradient_noise(enc)
        self.optimizer.step()
        if cfg.avca.extra_embedding_pass:
            with torch.no_grad():  # AVCA's get_embeddings in train mode: BN statistics only (docs/avca.md)
                self.model.embed(a[:size], v[:size], *(m if m is None else m[:size] for m in (am, vm)))
                self.model.embed_classes(w[:size])
        logs["loss"] = loss.detach()
        return logs

    def class_step(self, idx: torch.Tensor, crops: torch.Generator) -> dict[str, torch.Tensor]:
        """One optimiser step of a ``classes`` model on the batch's positives (TCaF): cross-entropy over
        the training split's classes, whose rows ``target`` indexes (the reference's sorted class list)."""
        t = self.train
        labels, w = t.labels[idx], self.class_emb[t.labels[idx]]
        seq = self.model.collate(
            t.audio[idx], t.visual[idx], t.audio_mask[idx], t.visual_mask[idx], train=True, generator=crops
        )
        target = torch.searchsorted(self.train_classes, labels)
        terms = self.model.loss(seq, w, self.class_emb[self.train_classes], target)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        self.model.after_step(seq, w)
        logs = {k: v.detach() for k, v in terms.items() if k != "total"}
        logs["loss"] = terms["total"].detach()
        return logs

    def _modulate(self, pairs: Pairs, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self.csgm is not None
        margin, p, n = self.cfg.avca.margin, pairs.positive, pairs.negative
        with torch.no_grad():
            la = float(self.paths.unimodal_triplet(p, n, "audio", margin))
            lv = float(self.paths.unimodal_triplet(p, n, "visual", margin))
        r_a, r_v = self.csgm.convergence(la, lv)
        class_theta = target = None
        if self.csgm.cfg.score == "all_classes":
            class_theta = self.class_thetas(self.train_classes)
            target = torch.searchsorted(self.train_classes, labels)
        s_a, s_v = self.csgm.scores(p, n, class_theta, target)
        mod = self.csgm.coefficients(s_a, s_v, r_a, r_v)
        CSGM.apply(pairs.computed, mod)
        return {
            "k_audio": mod.k_a.mean(),
            "k_visual": mod.k_v.mean(),
            "frac_audio_modulated": (mod.k_a < 1).float().mean(),
            "frac_visual_modulated": (mod.k_v < 1).float().mean(),
            "s_audio": s_a.mean(),
            "s_visual": s_v.mean(),
            "r_audio": torch.tensor(r_a),
            "r_visual": torch.tensor(r_v),
        }

    @torch.no_grad()
    def class_thetas(self, classes: torch.Tensor) -> torch.Tensor:
        """theta^w of some classes with BN in eval mode, without touching the training state."""
        was_training = self.model.training
        self.model.eval()
        out = self.model.embed_classes(self.class_emb[classes])
        self.model.train(was_training)
        return out

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, split: SplitData) -> tuple[GZSLScores, list[dict[str, float]]]:
        dist = distances(
            self.model,
            split.to(self.device),
            self.class_emb,
            self.cfg.decision_rule,
            self.cfg.eval_batch_size,
        )
        return calibrate(
            dist, split.labels.to(self.device), split.seen, split.unseen, beta_grid(*self.cfg.beta_grid)
        )

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "csgm": self.csgm.state_dict() if self.csgm else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.csgm and state.get("csgm"):
            self.csgm.load_state_dict(state["csgm"])


@torch.no_grad()
def distances(
    model: nn.Module, split: SplitData, class_emb: torch.Tensor, rule: str, batch: int
) -> torch.Tensor:
    """(N, n_classes) L2 distances of each video's test embedding to every class's theta^w (eval mode)."""
    was_training = model.training
    model.eval()
    theta_w = model.embed_classes(class_emb)
    rows = []
    for start in range(0, len(split), batch):
        sl = slice(start, start + batch)
        am = None if split.audio_mask is None else split.audio_mask[sl]
        vm = None if split.visual_mask is None else split.visual_mask[sl]
        ta, tv = model.embed(split.audio[sl], split.visual[sl], am, vm)
        if rule == "visual":
            rows.append(torch.cdist(tv, theta_w))
        elif rule == "mean":
            rows.append(torch.cdist((ta + tv) / 2, theta_w))
        else:
            rows.append(torch.cdist(ta, theta_w) + torch.cdist(tv, theta_w))
    model.train(was_training)
    return torch.cat(rows)
