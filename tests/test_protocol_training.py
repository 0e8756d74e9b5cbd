"""The two-stage protocol end to end: AVCA, DAAN and TCaF learn a synthetic AV benchmark well above chance
on unseen classes, an interrupted run resumes to the same numbers, outputs and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from model.api import evaluate_run, train_and_evaluate
from model.config import TrainConfig
from model.data.synthetic import make_synthetic
from pipeline.config import ConfigError
from workflows.cli import main as cli_main

MODEL = {
    "token_dim": 48,
    "encoder_hidden": 64,
    "projector_hidden": 48,
    "dim_out": 16,
    "heads": 2,
    "dim_head": 16,
    "mlp_dim": 32,
    "embedding_dropout": 0.1,
    "decoder_dropout": 0.1,
    "additional_dropout": 0.1,
}


TCAF = {  # TCaF at the size of MODEL; synthetic features are neither uint8 audio nor 0.96 s / 0.64 s steps
    **{
        k: MODEL[k]
        for k in ("token_dim", "encoder_hidden", "projector_hidden", "dim_out", "heads", "dim_head")
    },
    "depth": 2,
    "mlp_dim": 32,
    "embed_dim": 16,
    "embedding_dropout": 0.1,
    "decoder_dropout": 0.1,
    "additional_dropout": 0.1,
    "transformer_dropout": 0.1,
    "embed_dropout": 0.1,
    "audio_divisor": 1.0,
    "audio_step_seconds": 1.0,
    "visual_step_seconds": 1.0,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(model: str, **kw) -> TrainConfig:
    base = {
        "model": model,
        "avca": MODEL,
        "tcaf": TCAF,
        "epochs": 4,
        "batches_per_epoch": 25,
        "batch_size": 64,
        "device": "cpu",
    }
    base.update(kw)
    return TrainConfig.from_dict(base)


@pytest.fixture(scope="module")
def synthetic():
    # 20 classes: 12 seen, 4 stage-1 unseen (stage-2 seen), 4 test-unseen
    return make_synthetic(seed=0)


@pytest.fixture(scope="module")
def synthetic_temporal():
    return make_synthetic(seed=0, temporal_steps=6)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["avca", "daan", "tcaf"])
def test_models_learn_unseen_classes_well_above_chance(synthetic, synthetic_temporal, tmp_path, model):
    data = synthetic_temporal if model == "tcaf" else synthetic
    metrics = train_and_evaluate(config(model), data, tmp_path)
    chance = metrics["chance"]
    assert chance["U"] == pytest.approx(100 / 20) and chance["ZSL"] == pytest.approx(100 / 4)
    test = metrics["test"]
    assert test["U"] > 5 * chance["U"], test  # GZSL on unseen: > 25 % vs 5 % chance
    assert test["HM"] > 5 * chance["U"], test
    assert test["ZSL"] > 2 * chance["ZSL"], test
    # outputs of the protocol
    for name in (
        "config.yaml",
        "versions.json",
        "epochs.jsonl",
        "metrics.json",
        "stage1/best.pt",
        "stage2/final.pt",
    ):
        assert (tmp_path / name).is_file(), name
    lines = [json.loads(x) for x in (tmp_path / "epochs.jsonl").read_text().splitlines()]
    best = metrics["stage1"]["best_epoch"]
    assert [r["stage"] for r in lines] == ["stage1"] * 4 + ["stage2"] * (best + 1)
    assert best == max(range(4), key=lambda e: (lines[e]["val_HM"], -e))  # first epoch with the best val HM
    # the offset is checked to 1e-12 relative: a mean of three equal betas can be off by one float ulp
    assert metrics["beta"]["beta_test"] == pytest.approx(
        metrics["beta"]["beta_val"] + 1e-10, rel=1e-12, abs=0
    )
    assert len(metrics["beta"]["val_curve"]) == 16
    assert set(metrics["per_class"]["gzsl"]) == set(metrics["per_class"]["seen"]) | set(
        metrics["per_class"]["unseen"]
    )
    if model == "daan":
        assert {"k_audio", "k_visual", "frac_visual_modulated"} <= set(lines[0])
    if model == "tcaf":
        assert {"l_ce", "l_reg", "l_rec"} <= set(lines[0])
    assert len(list((tmp_path / "stage1" / "checkpoints").glob("epoch_*.pt"))) == 2  # keep_checkpoints


class Interrupt(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("where", [("stage1", 1), ("stage2", 0)])
def test_interrupted_run_resumes_to_identical_metrics(synthetic, tmp_path, where):
    cfg = config("daan", epochs=3, batches_per_epoch=6, batch_size=32)
    full = train_and_evaluate(cfg, synthetic, tmp_path / "full")

    def stop(stage: str, epoch: int, record: dict) -> None:
        if (stage, epoch) == where:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_and_evaluate(cfg, synthetic, tmp_path / "cut", callback=stop)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = train_and_evaluate(cfg, synthetic, tmp_path / "cut")
    assert resumed["test"] == full["test"]
    assert resumed["beta"] == full["beta"]
    full_log = (tmp_path / "full" / "epochs.jsonl").read_text()
    assert (tmp_path / "cut" / "epochs.jsonl").read_text() == full_log
    with pytest.raises(ConfigError, match="different config"):
        train_and_evaluate(cfg.with_overrides(["lr=0.01"]), synthetic, tmp_path / "cut")


@pytest.mark.slow
def test_cli_train_and_evaluate_synthetic(tmp_path, capsys):
    out = tmp_path / "run"
    sets = [
        "data.source=synthetic",
        "train.model=daan",
        "train.epochs=2",
        "train.batches_per_epoch=5",
        "train.batch_size=32",
        "train.device=cpu",
        f"train.avca={json.dumps(MODEL)}",
    ]
    args = ["train", "--config", "ucf_main", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "daan" in printed and "HM" in printed and "ZSL" in printed
    run_cfg = yaml.safe_load((out / "run.yaml").read_text())
    assert run_cfg["data"]["source"] == "synthetic" and run_cfg["train"]["model"] == "daan"
    assert cli_main(["evaluate", "--run", str(out)]) == 0
    stored = capsys.readouterr().out
    assert (
        cli_main(
            ["evaluate", "--run", str(out), "--set", "data.synthetic.seed=0", "--out", str(tmp_path / "ev")]
        )
        == 0
    )
    again = capsys.readouterr().out
    assert again.splitlines()[1] == stored.splitlines()[1]  # same data, same model, same beta -> same row
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["test"] == evaluate_run(out)["test"]


def test_cli_reports_missing_data_root(tmp_path, capsys):
    assert cli_main(["train", "--config", "vggsound_cls", "--out", str(tmp_path / "x")]) == 2
    assert "data.root" in capsys.readouterr().err


BUNDLED = sorted(
    f"{d}_{s}{m}" for d in ("activitynet", "ucf", "vggsound") for s in ("cls", "main") for m in ("", "_tcaf")
)


def test_bundled_configs_hold_published_hyperparameters():
    from model.api import bundled_configs, resolve_config
    from model.config import RunConfig

    assert bundled_configs() == BUNDLED
    vgg_main = RunConfig.from_yaml(resolve_config("vggsound_main"))
    assert vgg_main.train.batch_size == 64 and vgg_main.train.avca.embedding_dropout == 0.0
    ucf_cls = RunConfig.from_yaml(resolve_config("ucf_cls"))
    assert ucf_cls.train.avca.bn_momentum == 0.99 and ucf_cls.train.avca.additional_dropout == 0.5
    assert ucf_cls.data.dataset == "UCF" and ucf_cls.data.setting == "cls"
    assert ucf_cls.train.epochs == 50 and ucf_cls.train.batches_per_epoch == 500 and ucf_cls.train.lr == 1e-3


def flat(cfg) -> dict:
    """Every leaf of a run config by dotted key."""

    def leaves(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(leaves(cfg.to_dict(), ""))


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_configs_are_the_published_preset_and_corrected_changes_only_its_switches(name):
    from model.api import load_run_config
    from model.config import preset_of

    bundled = load_run_config(name)
    assert load_run_config(name, "published") == bundled
    assert preset_of(bundled.train, bundled.data.indexing) == "published"
    corrected = load_run_config(name, "corrected")
    assert preset_of(corrected.train, corrected.data.indexing) == "corrected"
    # the published hyper-parameters stay; only the switches of the model's own sections change
    before, after = flat(bundled), flat(corrected)
    changed = {key for key in before if before[key] != after[key]}
    common = {"data.indexing", "train.stage2_lr_schedule"}
    if bundled.train.model == "tcaf":
        assert changed == common | {"train.tcaf.extra_embedding_pass", "train.tcaf.eval_positions"}
    else:
        avca = {"extra_embedding_pass", "rec_projection_pass", "pos_emb_trainable"}
        assert changed == common | {f"train.avca.{k}" for k in avca}
    with pytest.raises(ConfigError, match="preset 'fixed'"):
        bundled.with_preset("fixed")


def test_presets_apply_only_the_switches_a_model_has():
    """AVCA's BatchNorm switches are DAAN's too (its backbone) but not TCaF's, and TCaF's not AVCA's: a
    preset leaves a section its model does not have as it was, and labels a run by the switches it has."""
    from model.config import PRESETS, RunConfig, preset_of

    for model, own, foreign in (("avca", "avca", "tcaf"), ("daan", "avca", "tcaf"), ("tcaf", "tcaf", "avca")):
        base = RunConfig(train=TrainConfig(model=model))
        for preset in PRESETS:
            cfg = base.with_preset(preset)
            assert getattr(cfg.train, foreign) == getattr(base.train, foreign), (model, preset)
            switches = {k.rsplit(".", 1)[1]: v for k, v in PRESETS[preset].items() if f".{own}." in k}
            assert {k: getattr(getattr(cfg.train, own), k) for k in switches} == switches, (model, preset)
            assert preset_of(cfg.train, cfg.data.indexing) == preset
            # whatever the foreign section holds does not change the label
            flipped = cfg.train.with_overrides([f"{foreign}.extra_embedding_pass={preset != 'published'}"])
            assert preset_of(flipped, cfg.data.indexing) == preset
            # one of its own switches off the preset makes it custom
            odd = cfg.train.with_overrides([f"{own}.extra_embedding_pass={preset != 'published'}"])
            assert preset_of(odd, cfg.data.indexing) == "custom"


def test_a_preset_follows_the_overridden_model_and_an_override_wins_over_it():
    from model.api import load_run_config
    from model.config import preset_of

    tcaf = load_run_config("ucf_cls", "corrected", ["train.model=tcaf"])
    assert tcaf.train.tcaf.eval_positions == "seconds" and not tcaf.train.avca.pos_emb_trainable
    mixed = load_run_config("ucf_cls", "corrected", ["data.indexing=published"])
    assert mixed.data.indexing == "published" and mixed.train.avca.pos_emb_trainable
    assert preset_of(mixed.train, mixed.data.indexing) == "custom"


@pytest.mark.slow
def test_cli_preset_sets_the_switches_and_labels_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    sets = ["data.source=synthetic", "train.epochs=1", "train.batches_per_epoch=2", "train.batch_size=16"]
    sets += ["train.device=cpu", "train.stages=stage1"]
    sets += [f"train.avca.{k}={v}" for k, v in MODEL.items()]  # a whole section would replace the preset's
    args = ["train", "--config", "ucf_cls", "--preset", "corrected", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    assert cli_main(args) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert "preset" in header.split() and row.split()[:2] == ["avca", "corrected"]
    run_cfg = yaml.safe_load((out / "run.yaml").read_text())
    assert run_cfg["data"]["indexing"] == "corrected" and run_cfg["train"]["avca"]["pos_emb_trainable"]
    assert run_cfg["train"]["stage2_lr_schedule"] == "replay"
    assert json.loads((out / "metrics.json").read_text())["preset"] == "corrected"


@pytest.mark.slow
def test_benchmark_workflow_trains_and_reports_both_presets(avgzsl_root, tmp_path):
    from test_model_data import write_ucf_layout

    from workflows.runner import load_workflow, run_workflow

    feats = write_ucf_layout(avgzsl_root, tmp_path / "feats", temporal=False)
    workdir = tmp_path / "wf"
    avca = {"model": "avca", "epochs": 1, "batches_per_epoch": 2, "batch_size": 16, "device": "cpu"}
    avca["avca"] = MODEL
    overrides = [f"workdir={workdir}", f"published.root={avgzsl_root}", f"published.features_dir={feats}"]
    overrides.append(f"train.models={json.dumps({'avca': avca})}")
    with pytest.warns(UserWarning, match="published"):  # the published preset's class-embedding indexing
        summary = run_workflow(load_workflow("ucf_cls", overrides))
    assert summary.ran == ["train:avca-published", "train:avca-corrected", "report"]
    for preset in ("published", "corrected"):
        run = workdir / "runs" / f"avca-{preset}" / "latest"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["preset"] == preset and metrics["data"]["indexing"] == preset
        trained = yaml.safe_load((run / "run.yaml").read_text())
        assert trained["train"]["avca"]["extra_embedding_pass"] == (preset == "published")
        assert trained["train"]["avca"]["bn_momentum"] == 0.99  # ucf_cls's published hyper-parameter in both
    report = (workdir / "report" / "report.md").read_text()
    assert "| avca-published | published |" in report and "| avca-corrected | corrected |" in report


@pytest.mark.slow
def test_cli_on_published_layout(avgzsl_root, tmp_path, capsys):
    from test_model_data import write_ucf_layout

    feats = write_ucf_layout(avgzsl_root, tmp_path / "feats", temporal=False)
    out = tmp_path / "run"
    args = [
        "train",
        "--config",
        "ucf_cls",
        "--out",
        str(out),
        "--set",
        f"data.root={avgzsl_root}",
        "--set",
        f"data.features_dir={feats}",
        "--set",
        "data.indexing=published",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batches_per_epoch=3",
        "--set",
        "train.batch_size=16",
        "--set",
        "train.device=cpu",
        "--set",
        f"train.avca={json.dumps(MODEL)}",
    ]
    with pytest.warns(UserWarning, match="published"):
        assert cli_main(args) == 0
    assert "avca" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_class"]["unseen"]) == 6 and len(metrics["per_class"]["seen"]) == 42
    assert metrics["data"]["indexing"] == "published"
    assert Path(out / "versions.json").is_file()


@pytest.mark.slow
def test_cli_trains_tcaf_on_the_published_temporal_layout(avgzsl_root, tmp_path, capsys):
    from test_model_data import write_tcaf_tree

    root = write_tcaf_tree(avgzsl_root, tmp_path / "avgzsl_benchmark_non_averaged_datasets")
    out = tmp_path / "run"
    sets = [
        f"data.root={root}",
        "train.epochs=1",
        "train.batches_per_epoch=3",
        "train.batch_size=16",
        "train.device=cpu",
        f"train.tcaf={json.dumps({**TCAF, 'audio_step_seconds': 0.96, 'visual_step_seconds': 0.64})}",
    ]
    args = ["train", "--config", "ucf_cls_tcaf", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    assert cli_main(args) == 0
    assert "tcaf" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["temporal"] and metrics["data"]["source"] == "published:UCF/cls/temporal"
    assert len(metrics["per_class"]["unseen"]) == 6 and len(metrics["per_class"]["seen"]) == 42


def test_stage1_only_run_reports_validation_numbers(synthetic, tmp_path):
    from model.api import format_table

    cfg = config("avca", epochs=1, batches_per_epoch=3, batch_size=16, stages="stage1", cpu_threads=1)
    torch.set_num_threads(2)
    try:
        metrics = train_and_evaluate(cfg, synthetic, tmp_path)
        assert torch.get_num_threads() == 2  # the run's thread setting does not leak
    finally:
        torch.set_num_threads(1)
    assert "test" not in metrics and not (tmp_path / "stage2").exists()
    assert "val (stage 1 only)" in format_table(metrics)
    assert evaluate_run(tmp_path) == metrics
    with pytest.raises(ConfigError, match="stage-1-only"):
        evaluate_run(tmp_path, synthetic)


# TCaF's shipped hyper-parameters (TCAF-GZSL config/best/best_{main,cls}/best_{ucf,vggsound,anet}.yaml):
# lr, LR schedule, encoder hidden, embedding / decoder / additional dropout, depth, heads, dim_head,
# transformer dropout, embedding-layer dropout
TCAF_SHIPPED = {
    "ucf_main": (5e-5, False, 256, 0.4, 0.2, 0.1, 5, 8, 64, 0.3, 0.2),
    "vggsound_main": (7e-5, False, 128, 0.2, 0.2, 0.2, 8, 6, 128, 0.5, 0.2),
    "activitynet_main": (7e-5, True, 128, 0.2, 0.1, 0.1, 8, 3, 128, 0.3, 0.2),
    "ucf_cls": (7e-5, True, 512, 0.3, 0.1, 0.1, 6, 8, 64, 0.3, 0.2),
    "vggsound_cls": (6e-5, False, 512, 0.2, 0.2, 0.1, 8, 8, 64, 0.5, 0.1),
    "activitynet_cls": (7e-5, True, 512, 0.3, 0.1, 0.1, 6, 8, 64, 0.4, 0.2),
}


@pytest.mark.parametrize("name", list(TCAF_SHIPPED))
def test_bundled_tcaf_configs_hold_the_reference_values(name):
    from model.api import resolve_config
    from model.config import RunConfig

    cfg = RunConfig.from_yaml(resolve_config(f"{name}_tcaf"))
    t, m = cfg.train, cfg.train.tcaf
    got = (t.lr, t.lr_scheduler, m.encoder_hidden, m.embedding_dropout, m.decoder_dropout)
    got += (m.additional_dropout, m.depth, m.heads, m.dim_head, m.transformer_dropout, m.embed_dropout)
    assert got == TCAF_SHIPPED[name]
    assert (
        t.model == "tcaf" and cfg.data.temporal and f"{cfg.data.dataset}_{cfg.data.setting}".lower() == name
    )
    assert (t.batch_size, t.batches_per_epoch, t.epochs, t.weight_decay, t.eval_batch_size) == (
        64,
        300,
        50,
        1e-5,
        64,
    )
    assert (m.token_dim, m.projector_hidden, m.dim_out, m.mlp_dim, m.embed_dim) == (300, 512, 64, 128, 64)
    assert (m.cross_attention, m.self_attention, m.time_embedding, m.fourier_scale) == (
        True,
        False,
        "sinusoid",
        10.0,
    )
    selavi = cfg.data.setting == "main"
    assert (m.audio_step_seconds, m.visual_step_seconds) == ((1.0, 1.0) if selavi else (0.96, 0.64))
    assert m.lengths == ("fixed" if cfg.data.dataset == "ActivityNet" else "batch_max")


def test_lr_scheduler_switch_keeps_the_learning_rate(synthetic, tmp_path):
    from model.protocol import _run_stage

    rates = {}
    for on in (True, False):
        cfg = config("avca", epochs=4, batches_per_epoch=2, batch_size=16, lr_patience=0, lr_scheduler=on)
        history = {"stage1": [], "stage2": []}
        _run_stage("stage1", 1, cfg, synthetic, "train", 4, tmp_path / str(on), history, None)
        rates[on] = [r["lr"] for r in history["stage1"]]
    assert min(rates[True]) < 1e-3  # patience 0: the plateau schedule cuts the rate at least once
    assert rates[False] == [1e-3] * 4


def test_stage2_replays_stage1_learning_rates(synthetic, tmp_path):
    from model.protocol import _run_stage

    cfg = config("avca", epochs=3, batches_per_epoch=2, batch_size=16, stage2_lr_schedule="replay")
    history = {"stage1": [], "stage2": []}
    replay = [1e-3, 1e-4, 1e-5]
    _run_stage("stage2", 2, cfg, synthetic, "train_val", 3, tmp_path, history, None, replay)
    assert [r["lr"] for r in history["stage2"]] == replay
