"""The workflow file (``workflows/*.yaml``): where the videos come from, what to extract, what to train.

One typed model; ``avzsl run WORKFLOW --set key=value`` overrides any key (``train.models.daan.epochs=5``).
Relative paths in a workflow file are resolved against the current directory, like any CLI path.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from model.config import DataConfig, PresetName, TrainConfig
from pipeline.config import ConfigModel
from pipeline.synth.dataset import SynthConfig
from workflows.extract.config import ExtractOptions


class VideoSource(ConfigModel):
    """Videos with labels plus a class split (which classes are seen, unseen in validation, unseen at test)."""

    source: Literal["synth", "folder", "csv", "manifest"] = "synth"
    path: str | None = Field(None, description="folder (one sub-folder per class), CSV or manifest parquet")
    classes: str | None = Field(
        None,
        description="CSV with columns name, role (seen | val_unseen | test_unseen), optional description; "
        "not needed when the manifest already has a split column",
    )
    synth: SynthConfig = SynthConfig()
    split_seed: int = 0

    @model_validator(mode="after")
    def _needs_path(self) -> VideoSource:
        if self.source != "synth" and not self.path:
            raise ValueError(
                f"videos.path is required when videos.source is {self.source!r}: "
                "give it in the file or as --set videos.path=PATH"
            )
        return self


class ExtractorChoice(ConfigModel):
    name: str
    key: str | None = Field(
        None,
        description="stage and folder name; default the extractor name (set it to "
        "run one extractor twice with different options)",
    )
    weights: str = Field("random", description="local checkpoint path, or 'random' (explicit, labelled)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="builder options, e.g. {fps: 1, pooling: mean}"
    )


class ExtractStep(ExtractOptions):
    """Which extractors run and how; ``audio`` and ``visual`` are the ones training uses.

    Every option of ``avzsl extract`` (:class:`ExtractOptions`) can be set here under the same name.
    """

    visual: ExtractorChoice = ExtractorChoice(name="c3d")
    audio: ExtractorChoice = ExtractorChoice(name="vggish")
    extra: list[ExtractorChoice] = Field(
        default_factory=list, description="more stores, not used for training"
    )
    shard_size: int = Field(8, ge=1)

    def all(self) -> list[ExtractorChoice]:
        return [self.visual, self.audio, *self.extra]

    @model_validator(mode="after")
    def _unique_keys(self) -> ExtractStep:
        keys = [c.key or c.name for c in self.all()]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(
                f"extractor key(s) {duplicates} used twice; give each extra extractor its own key"
            )
        return self


class EmbedStep(ConfigModel):
    """Class-name embeddings for user and synthetic data (published benchmarks bring their own)."""

    encoder: Literal["minilm", "glove"] = "minilm"
    text: Literal["description", "name"] = Field("description", description="what is embedded per class")


class TrainStep(ConfigModel):
    models: dict[str, TrainConfig] = Field(default_factory=lambda: {"daan": TrainConfig(model="daan")})
    inputs: dict[str, Literal["averaged", "temporal"]] = Field(
        default_factory=dict,
        description="per model key: averaged or temporal (per-window) features from the stores; default "
        "the model's first kind (averaged for avca and daan, temporal for tcaf)",
    )

    @model_validator(mode="after")
    def _known_inputs(self) -> TrainStep:
        unknown = sorted(set(self.inputs) - set(self.models))
        if unknown:
            raise ValueError(f"inputs names {unknown}, which are not among the models {sorted(self.models)}")
        return self

    def temporal(self, name: str) -> bool:
        """Whether model ``name`` trains on per-window sequences."""
        from model.registry import get_spec

        return self.inputs.get(name, get_spec(self.models[name].model).inputs[0]) == "temporal"


class WorkflowConfig(ConfigModel):
    """A whole job: kind ``videos`` runs data/probe/extract/embed/train/report; ``published`` trains on the
    published AV-GZSL features described by ``published``.

    ``base`` names a bundled benchmark config (``model/configs``): its ``data`` section is the default of
    ``published`` and its ``train`` section the default of every model, so the published hyper-parameters
    live in one place and a workflow only states what differs (``model: daan``).
    """

    base: str | None = None
    name: str = "workflow"
    workdir: str = "runs/workflow"
    kind: Literal["videos", "published"] = "videos"
    stages: list[Literal["data", "probe", "extract", "embed", "train", "report"]] | None = Field(
        None, description="default: every stage of the kind"
    )
    videos: VideoSource = VideoSource()
    published: DataConfig = DataConfig()
    extract: ExtractStep = ExtractStep()
    embed: EmbedStep = EmbedStep()
    train: TrainStep = TrainStep()
    presets: list[PresetName] = Field(
        default_factory=list,
        description="train every model once per reproduction preset (published, corrected; docs/avca.md), "
        "as runs/<model>-<preset>; empty: each model as configured, as runs/<model>",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_base(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("base"):
            return data
        from model.api import resolve_config
        from model.config import RunConfig

        base = RunConfig.from_yaml(resolve_config(data["base"])).to_dict()
        merged = dict(data)
        merged["published"] = deep_merge(base["data"], data.get("published") or {})
        train = dict(data.get("train") or {})
        models = train.get("models") or {"daan": {"model": "daan"}}
        train["models"] = {
            name: deep_merge(base["train"], overrides or {}) for name, overrides in models.items()
        }
        merged["train"] = train
        return merged


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied recursively (overrides win)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = (
            deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out
