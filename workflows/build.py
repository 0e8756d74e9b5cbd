"""Turn a :class:`WorkflowConfig` into the stages of :mod:`workflows.stages`.

Layout of a workflow directory::

    data/manifest.parquet, data/classes.csv, data/probe.parquet     the videos, their classes and probe records
    features/<extractor>/<extractor>-<fingerprint>/                 one feature store per extractor
    embeddings/classes.npz, embeddings/name_map.csv                  class-text embeddings and the text per class
    runs/<run>/<fingerprint>/run.yaml, metrics.json ...               one folder per training run of a model
    runs/<run>/latest                                                  -> the folder of the last run
                                                                       (<run>: <model>, or <model>-<preset>)
    report/report.html, report/report.md

Each extractor is its own stage, so adding one extracts only itself, and training depends only on the two
stores it reads. Decoding is shared within a stage; a visual and an audio stage read different streams.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import pandas as pd

from model.config import DataConfig, RunConfig
from pipeline.config import ConfigError, atomic_write_text
from pipeline.manifest import VideoManifest, assign_gzsl_splits
from workflows.config import ExtractorChoice, WorkflowConfig
from workflows.stages import LATEST, Stage, StageContext, files_fingerprint

log = logging.getLogger("avzsl.workflow")

MANIFEST = "data/manifest.parquet"
CLASSES = "data/classes.csv"
PROBE = "data/probe.parquet"
EMBEDDINGS = "embeddings/classes.npz"
NAME_MAP = "embeddings/name_map.csv"
REPORT = "report/report.html"
RUNS = "runs"
RUN_CONFIG = "run.yaml"


class SharedCluster:
    """One local Dask cluster for every extract stage of a workflow run, started only if one runs.

    Starting a cluster and loading torch in each worker costs tens of seconds; sharing it also keeps each
    worker's built extractors. Other cluster settings (an address, ``slurm``, ``none``) pass through.
    """

    def __init__(self, cfg: WorkflowConfig):
        self.cfg = cfg.extract
        self._stack = contextlib.ExitStack()
        self._address: str | None = None

    def spec(self) -> str:
        if self.cfg.cluster != "local":
            return self.cfg.cluster
        if self._address is None:
            from pipeline.cluster import connect

            client = self._stack.enter_context(
                connect("local", workers=self.cfg.workers, device=self.cfg.device)
            )
            self._address = client.scheduler.address
        return self._address

    def close(self) -> None:
        self._stack.close()


def build_stages(cfg: WorkflowConfig, cluster: SharedCluster | None = None) -> list[Stage]:
    cluster = cluster or SharedCluster(cfg)
    wanted = set(cfg.stages or ["data", "probe", "extract", "embed", "train", "report"])
    stages: list[Stage] = []
    if cfg.kind == "videos":
        stages += [_data_stage(cfg)] if "data" in wanted else []
        stages += [_probe_stage()] if "probe" in wanted else []
        if "extract" in wanted:
            stages += [_extract_stage(cfg, choice, cluster) for choice in cfg.extract.all()]
        stages += [_embed_stage(cfg)] if "embed" in wanted else []
    if "train" in wanted:
        presets = cfg.presets or [None]
        stages += [_train_stage(cfg, name, preset) for name in cfg.train.models for preset in presets]
    if "report" in wanted:
        stages.append(_report_stage(cfg, [s.name for s in stages if s.name.startswith("train:")]))
    present = {s.name for s in stages}
    return [
        Stage(
            s.name,
            s.run,
            s.params,
            tuple(d for d in s.depends_on if d in present),
            s.outputs,
            s.code,
            s.external_inputs,
        )
        for s in stages
    ]


# --------------------------------------------------------------------------------------------- data
def _data_stage(cfg: WorkflowConfig) -> Stage:
    source = cfg.videos
    trains = needs_class_roles(cfg)

    def run(ctx: StageContext) -> None:
        workdir = ctx.workdir
        if source.source == "synth":
            from pipeline.synth.dataset import generate_dataset

            dataset = generate_dataset(source.synth, workdir / "data")
            log.info(
                "synthetic dataset: %d videos of %d classes", len(dataset.manifest), len(dataset.classes)
            )
            return
        manifest = _user_manifest(source.source, Path(source.path))
        classes = _user_classes(manifest, source.classes, needs_roles=trains)
        if manifest.table["split"].isna().all() and trains:
            roles = dict(zip(classes["name"], classes["role"], strict=True))
            table = manifest.table.assign(
                split=assign_gzsl_splits(manifest.table["label"].tolist(), roles, seed=source.split_seed)
            )
            manifest = VideoManifest(table, manifest.problems, manifest.info)
        manifest.to_parquet(workdir / MANIFEST)
        atomic_write_text(workdir / CLASSES, classes.to_csv(index=False))

    external = None
    if source.source != "synth":

        def external() -> str:
            path = Path(source.path)
            files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            return files_fingerprint(files + ([Path(source.classes)] if source.classes else []))

    params = source.to_dict()
    if source.source != "synth":
        params.pop("synth")
    return Stage(
        "data", run, params, (), (MANIFEST, CLASSES), ("pipeline.synth", "pipeline.manifest"), external
    )


def _user_manifest(kind: str, path: Path) -> VideoManifest:
    if kind == "folder":
        return VideoManifest.from_folder(path)
    if kind == "csv":
        return VideoManifest.from_csv(path)
    return VideoManifest.read_parquet(path)


def needs_class_roles(cfg: WorkflowConfig) -> bool:
    """Whether the workflow trains (so every class needs a role); extraction alone does not."""
    return bool({"embed", "train"} & set(cfg.stages or ["embed", "train"]))


def _user_classes(manifest: VideoManifest, classes_csv: str | None, needs_roles: bool = True) -> pd.DataFrame:
    """Class table (name, role, description); roles come from the CSV or, failing that, the manifest's splits.

    Without either, a workflow that only extracts gets an empty role per class.
    """
    labels = sorted(set(manifest.table["label"].dropna()))
    if classes_csv:
        table = pd.read_csv(classes_csv)
        missing = {"name", "role"} - set(table.columns)
        if missing:
            raise ConfigError(
                f"{classes_csv}: missing column(s) {sorted(missing)}; need name, role[, description]"
            )
        unknown = sorted(set(labels) - set(table["name"]))
        if unknown:
            raise ConfigError(f"{classes_csv}: no role for class(es) {unknown[:5]}; add a row per class")
    elif manifest.table["split"].notna().any():
        splits = manifest.table.groupby("label")["split"].agg(set)
        roles = {
            c: "test_unseen" if s <= {"s2_test_unseen"} else "val_unseen" if "s1_val_unseen" in s else "seen"
            for c, s in splits.items()
        }
        table = pd.DataFrame({"name": list(roles), "role": list(roles.values())})
    elif not needs_roles:
        table = pd.DataFrame({"name": labels, "role": [""] * len(labels)})
    else:
        raise ConfigError(
            "the videos have no split column: give videos.classes (--set videos.classes=CSV), a CSV with "
            "name, role (seen | val_unseen | test_unseen) and an optional description per class"
        )
    if "description" not in table.columns:
        table["description"] = table["name"]
    return table[["name", "role", "description"]]


# --------------------------------------------------------------------------------------------- probe
def _probe_stage() -> Stage:
    def run(ctx: StageContext) -> None:
        from pipeline.decode import probe

        workdir = ctx.workdir
        manifest = VideoManifest.read_parquet(workdir / MANIFEST)
        records = []
        for video_id, path in zip(manifest.table["video_id"], manifest.table["path"], strict=True):
            record = probe(path).to_record()
            records.append(
                {
                    "video_id": video_id,
                    "path": path,
                    "status": record["status"],
                    "error": record["error"],
                    "duration_s": record["duration_s"],
                    "has_video": record["has_video"],
                    "has_audio": record["has_audio"],
                }
            )
        table = pd.DataFrame(records)
        _atomic_parquet(table, workdir / PROBE)
        bad = table[table["status"] != "ok"]
        log.info(
            "probe: %d videos, %d not ok (%s)",
            len(table),
            len(bad),
            ", ".join(f"{k} {v}" for k, v in bad["status"].value_counts().items()) or "none",
        )

    return Stage("probe", run, {}, ("data",), (PROBE,), ("pipeline.decode",))


# --------------------------------------------------------------------------------------------- extract
def _extract_stage(cfg: WorkflowConfig, choice: ExtractorChoice, cluster: SharedCluster) -> Stage:
    step = cfg.extract
    key = choice.key or choice.name
    out = f"features/{key}"

    def run(ctx: StageContext) -> None:
        from workflows.extract import ExtractConfig, format_summary, run_extract

        workdir = ctx.workdir
        job = step.to_dict()
        for key in ("visual", "audio", "extra"):
            job.pop(key)
        summary = run_extract(
            ExtractConfig.from_dict(
                {
                    **job,
                    "videos": [str(workdir / MANIFEST)],
                    "extractors": [choice.name],
                    "out": str(workdir / out),
                    "cluster": cluster.spec(),
                    "weights": {choice.name: choice.weights},
                    "options": {choice.name: choice.options},
                },
                source=f"workflow {cfg.name}: extract",
            )
        )
        log.info("extract %s:\n%s", choice.name, format_summary(summary))
        if summary.exit_code or not summary.usable:
            what = "did not finish" if summary.exit_code else "produced no usable features"
            raise RuntimeError(f"extraction with {choice.name} {what}:\n{format_summary(summary)}")

    params = {
        "extractor": choice.name,
        "weights": choice.weights,
        "options": choice.options,
        "mode": step.mode,
        "device": step.device,
    }
    external = None if choice.weights == "random" else (lambda: files_fingerprint([Path(choice.weights)]))
    return Stage(
        f"extract:{key}",
        run,
        params,
        ("data", "probe"),
        (f"{out}/stores.json",),
        ("extractors", "pipeline.decode", "pipeline.store", "workflows.extract"),
        external,
    )


def store_path(workdir: Path, choice: ExtractorChoice) -> Path:
    folder = workdir / "features" / (choice.key or choice.name)
    return folder / json.loads((folder / "stores.json").read_text())[choice.name]


# --------------------------------------------------------------------------------------------- embed
def _embed_stage(cfg: WorkflowConfig) -> Stage:
    step = cfg.embed

    def run(ctx: StageContext) -> None:
        from model.data.embeddings import glove_vectors, minilm_vectors, save_vector_dict

        workdir = ctx.workdir
        classes = pd.read_csv(workdir / CLASSES)
        texts = classes[step.text].astype(str).tolist()
        vectors = minilm_vectors(texts) if step.encoder == "minilm" else glove_vectors(texts)
        save_vector_dict(vectors, workdir / EMBEDDINGS)
        name_map = pd.DataFrame({"original": classes["name"], "manual": texts})
        atomic_write_text(workdir / NAME_MAP, name_map.to_csv(index=False))
        log.info("embedded %d class texts with %s", len(texts), step.encoder)

    return Stage("embed", run, step.to_dict(), ("data",), (EMBEDDINGS, NAME_MAP), ("model.data.embeddings",))


# --------------------------------------------------------------------------------------------- train
def _train_stage(cfg: WorkflowConfig, name: str, preset: str | None = None) -> Stage:
    """Model ``name``'s run, ``runs/<name>``; with a reproduction preset (``model.config.PRESETS``) its
    switches are set on the model and the data, and the run is ``runs/<name>-<preset>``."""
    train_cfg = cfg.train.models[name]
    run_name = f"{name}-{preset}" if preset else name
    out = f"{RUNS}/{run_name}"

    def run_config(workdir: Path) -> RunConfig:
        run_cfg = RunConfig(data=_train_data(cfg, workdir, name), train=train_cfg)
        return run_cfg.with_preset(preset) if preset else run_cfg

    def run(ctx: StageContext) -> None:
        from model.api import load_gzsl_data, train_and_evaluate

        run_dir = ctx.run_dir(out)
        run_cfg = run_config(ctx.workdir)
        run_cfg.to_yaml(
            run_dir / RUN_CONFIG
        )  # `avzsl train --config <run>/run.yaml` re-runs this model alone
        train_and_evaluate(run_cfg.train, load_gzsl_data(run_cfg.data), run_dir)

    if cfg.kind == "published":
        deps: tuple[str, ...] = ()
        run_cfg = run_config(Path())
        params = {"train": run_cfg.train.to_dict(), "data": run_cfg.data.to_dict()}
    else:
        audio, visual = (c.key or c.name for c in (cfg.extract.audio, cfg.extract.visual))
        deps = (f"extract:{audio}", f"extract:{visual}", "embed")
        train = RunConfig(train=train_cfg).with_preset(preset).train if preset else train_cfg
        params = {"train": train.to_dict(), "temporal": cfg.train.temporal(name)}
        params.update({"preset": preset} if preset else {})
    return Stage(f"train:{run_name}", run, params, deps, (f"{out}/{LATEST}/metrics.json",), ("model",))


def _train_data(cfg: WorkflowConfig, workdir: Path, model: str) -> DataConfig:
    """The data section of a model's run config; our stores by absolute path, so it runs from anywhere."""
    if cfg.kind == "published":
        return cfg.published
    workdir = workdir.resolve()
    return DataConfig(
        source="stores",
        temporal=cfg.train.temporal(model),
        audio_store=str(store_path(workdir, cfg.extract.audio)),
        visual_store=str(store_path(workdir, cfg.extract.visual)),
        manifest=str(workdir / MANIFEST),
        embeddings="w2v",
        embedding_path=str(workdir / EMBEDDINGS),
        name_map_csv=str(workdir / NAME_MAP),
    )


# --------------------------------------------------------------------------------------------- report
def _report_stage(cfg: WorkflowConfig, train_stages: list[str]) -> Stage:
    def run(ctx: StageContext) -> None:
        from workflows.report import load_run, write_report

        runs = [load_run(model_runs(ctx.workdir, stage.split(":", 1)[1])) for stage in train_stages]
        write_report(runs, ctx.workdir / "report", title=f"avzsl: {cfg.name}")

    return Stage("report", run, {}, tuple(train_stages), (REPORT, "report/report.md"), ("workflows.report",))


def model_runs(workdir: Path, run: str) -> Path:
    """The folder of one model's runs (``runs/<model>`` or ``runs/<model>-<preset>``); its ``latest`` link
    names the current one."""
    return workdir / RUNS / run


def _atomic_parquet(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(path)
