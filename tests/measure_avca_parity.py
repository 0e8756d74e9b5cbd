"""How far our AVCA's evaluation embeddings drift from the reference step's, from a trained state
(the numbers in docs/avca.md). Not a test: a measurement to re-run when the training step changes.

1. Train our AVCA with the published hyper-parameters of one UCF setting (dropout on) for ``--warmup``
   steps on a synthetic benchmark with the setting's feature sizes: the trained state.
2. Load that state into the reference step's re-implementation (tests/avca_reference.py) and into our
   model under each BatchNorm-switch variant; dropout off on both, fresh Adam on both, ``--steps``
   identical batches, in ``--dtype`` (float64 by default: see below).
3. Print, per variant, ||theta_ours - theta_ref|| / ||theta_ref|| over the test split for theta^v (what
   AVCA evaluates), theta^a and theta^w; last, the reference step with fused Adam (ours) against itself.

float32 hides the BatchNorm effect: the biases of the Linear layers in front of a BatchNorm have a zero
gradient in exact arithmetic, and Adam scales the float32 rounding noise that stands in for it to steps of
about lr, in a direction that depends on the order of float operations; two implementations that differ in
rounding only drift apart from the first step (the fused-Adam row measures that floor).

Run from the repository root: ``python -m tests.measure_avca_parity --setting cls [--state FILE]``; the
"old code" variants need the code before the fix first on the path (``PYTHONPATH=OLD_CHECKOUT:.``), and
``--state`` to start from the same trained state.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from model.config import TrainConfig
from model.data.synthetic import make_synthetic
from model.trainer import Batch, StageTrainer
from pipeline.config import ConfigError
from tests.avca_reference import ReferenceAVCA, copy_into_reference

SETTINGS = {  # UCF-GZSL's published AVCA settings: feature sizes, dropouts, BN momentum
    "main": {"dims": (512, 512), "avca": {"bn_momentum": 0.1}},
    "cls": {"dims": (128, 4096), "avca": {"bn_momentum": 0.99}},
}
VARIANTS = {  # our BatchNorm switches; the reference always runs both passes
    "loss forward only (corrected)": {"extra_embedding_pass": False, "rec_projection_pass": False},
    "post-step pass only": {"extra_embedding_pass": True, "rec_projection_pass": False},
    "both passes (published)": {"extra_embedding_pass": True, "rec_projection_pass": True},
    # the code before the fix (no rec_projection_pass switch yet, decoder called per side, reconstructors on
    # the negatives too, post-step pass without W_proj); its bundled configs had the post-step pass off
    "old code, post-step pass off": {"extra_embedding_pass": False},
    "old code, post-step pass on": {"extra_embedding_pass": True},
}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def no_dropout(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=SETTINGS, default="cls")
    parser.add_argument("--warmup", type=int, default=300, help="training steps to the trained state")
    parser.add_argument("--steps", type=int, default=50, help="side-by-side steps from the trained state")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--state", type=Path, help="keep the trained state here and reuse it if present")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--plain", action="store_true", help="our variants on the plain path (fast_paths off)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    setting = SETTINGS[args.setting]
    audio_dim, visual_dim = setting["dims"]
    data = make_synthetic(
        n_seen=30, n_val_unseen=12, n_test_unseen=9, videos_per_class=40,
        audio_dim=audio_dim, visual_dim=visual_dim, embedding_dim=300, seed=0,
    )  # fmt: skip
    base = {"model": "avca", "device": "cpu", "batches_per_epoch": args.warmup, "avca": setting["avca"]}

    warm = StageTrainer(TrainConfig.from_dict(base), data, "train", 1)
    if args.state and args.state.is_file():
        state = torch.load(args.state, weights_only=True)
    else:
        started = time.perf_counter()
        warm.train_epoch(0)
        state = warm.model.state_dict()
        print(f"trained state: {args.warmup} steps in {time.perf_counter() - started:.0f} s", flush=True)
        if args.state:
            torch.save(state, args.state)

    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        return t.to(dtype) if t is not None and t.is_floating_point() else t

    test = data.splits["test"]
    audio, visual, w_test = cast(test.audio), cast(test.visual), cast(data.class_embeddings[test.labels])
    pairs = warm.sampler.epoch(args.steps, warm.cfg.batch_size, torch.Generator().manual_seed(7))
    batches = [
        Batch(*map(cast, warm.gather(torch.cat([pairs.positive[s], pairs.negative[s]]))))
        for s in range(args.steps)
    ]
    size = warm.cfg.batch_size

    warm.model.load_state_dict(state)

    def reference_embeddings(fused_adam: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        reference = ReferenceAVCA(warm.cfg.avca, audio_dim, visual_dim, 300, warm.cfg.lr, side_passes=True)
        copy_into_reference(warm.model, reference)
        reference.to(dtype)
        no_dropout(reference)
        if fused_adam:
            trained = [p for name, p in reference.named_parameters() if name != "pos_emb1D"]
            reference.optimizer = torch.optim.Adam(trained, lr=warm.cfg.lr, weight_decay=1e-5, fused=True)
        for batch in batches:
            a, v, w = batch.audio, batch.visual, batch.w
            reference.train_step(a[:size], v[:size], w[:size], a[size:], v[size:], w[size:])
        reference.eval()
        with torch.no_grad():
            return reference.get_embeddings(audio, visual, w_test)

    ref_a, ref_v, ref_w = reference_embeddings(fused_adam=False)

    def report(name: str, got_a: torch.Tensor, got_v: torch.Tensor, got_w: torch.Tensor) -> None:
        diffs = [relative(got_v, ref_v), relative(got_a, ref_a), relative(got_w, ref_w)]
        print(f"{name:<32} " + " ".join(f"{100 * d:9.4f}%" for d in diffs), flush=True)

    print(
        f"UCF {args.setting}, {args.steps} steps from the trained state, dropout off, {args.dtype}",
        flush=True,
    )
    print(f"{'variant':<32} {'theta_v':>9} {'theta_a':>9} {'theta_w':>9}", flush=True)
    for name, switches in VARIANTS.items():
        try:
            avca = {**setting["avca"], **switches}
            cfg = TrainConfig.from_dict({**base, "avca": avca, "fast_paths": not args.plain})
        except ConfigError:
            continue  # a switch this version of the code does not have
        if name.startswith("old code") and "rec_projection_pass" in type(cfg.avca).model_fields:
            continue
        trainer = StageTrainer(cfg, data, "train", 1)
        trainer.model.load_state_dict(state)
        trainer.model.to(dtype)
        no_dropout(trainer.model)
        for batch in batches:
            trainer.step_on(batch, use_csgm=False)
        trainer.model.eval()
        with torch.no_grad():
            got_a, got_v = trainer.model.embed(audio, visual)
            report(name, got_a, got_v, trainer.model.embed_classes(w_test))
    fused_a, fused_v, fused_w = reference_embeddings(fused_adam=True)
    report("reference with fused Adam", fused_a, fused_v, fused_w)


if __name__ == "__main__":
    main()
